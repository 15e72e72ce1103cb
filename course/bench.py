"""`python -m course bench`: how long each lesson notebook takes top to bottom, and its peak memory.

Each notebook runs in a fresh process (`python -m course.bench NOTEBOOK [--grading]`) that starts the
kernel, executes every cell with nbclient, shuts the kernel down and reports the wall time and the
kernel's peak resident memory (`getrusage(RUSAGE_CHILDREN)`, Linux and macOS). Grading mode sets
`NBGRADER_EXECUTION=autograde`, as `nbgrader autograde` does.

Budgets (course/authoring.md): <= 120 s top to bottom, <= 45 s in grading mode, <= 1.5 GB peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from course import ROOT, lesson_notebooks

BUDGET_SECONDS = {"normal": 120.0, "grading": 45.0}
BUDGET_RSS_MB = 1536.0


def run_notebook(path: Path, timeout: int = 600) -> dict:
    """Execute a notebook in this process's child kernel; return seconds, the number of cells that raised."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    seconds = time.perf_counter() - start
    errors = sum(any(o.output_type == "error" for o in c.get("outputs", [])) for c in nb.cells)
    return {"seconds": seconds, "errors": errors}


def peak_rss_mb() -> float:
    """Peak resident memory of this process's largest finished child (the kernel), in MB."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def measure(path: Path, grading: bool) -> dict:
    env = dict(os.environ)
    env.pop("NBGRADER_EXECUTION", None)
    if grading:
        env["NBGRADER_EXECUTION"] = "autograde"
    out = subprocess.run([sys.executable, "-m", "course.bench", str(path)], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"running {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(lessons: list[str], student: bool = False, root: Path = ROOT) -> int:
    """Print a table (notebook, mode, seconds, peak RSS MB, errors, verdict); exit status 1 if over budget."""
    folder = "notebooks" if student else "assessments"
    paths = [p for lesson in lessons for p in lesson_notebooks(lesson, root, folder)]
    if not paths:
        print(f"no notebooks in {folder}/")
        return 0
    print(f"{'notebook':<48} {'mode':<8} {'seconds':>8} {'peak RSS MB':>12} {'errors':>7}  verdict")
    over = False
    for path in paths:
        for mode in ("normal", "grading"):
            r = measure(path, grading=mode == "grading")
            ok = r["seconds"] <= BUDGET_SECONDS[mode] and r["peak_rss_mb"] <= BUDGET_RSS_MB
            ok = ok and (student or r["errors"] == 0)
            over |= not ok
            name = str(path.relative_to(root))
            print(f"{name:<48} {mode:<8} {r['seconds']:>8.1f} {r['peak_rss_mb']:>12.0f} {r['errors']:>7}  "
                  f"{'ok' if ok else 'OVER BUDGET OR FAILED'}", flush=True)
    print(f"budgets: {BUDGET_SECONDS['normal']:.0f} s normal, {BUDGET_SECONDS['grading']:.0f} s grading mode, "
          f"{BUDGET_RSS_MB:.0f} MB peak; errors must be 0 in a source notebook")
    return 1 if over else 0


def _main() -> None:
    parser = argparse.ArgumentParser(description="run one notebook; print seconds and peak RSS as JSON")
    parser.add_argument("notebook", type=Path)
    args = parser.parse_args()
    result = run_notebook(args.notebook.resolve())
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
