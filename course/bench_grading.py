"""`python -m course bench grading --class 30`: how fast a class is graded, and what the sandbox costs.

In a temporary copy of the course, the lesson is released (default: the example lesson of
course/fakeclass.py, which runs in about a second, so that the figures are those of grading itself: kernel
start, sandbox, guard; ``--lesson 01_objective`` gives a real lesson's) and a class of ``--class``
submissions is generated (course/fakeclass.py: correct, partly correct, blank and attacking ones in turn).
The reference results (``course/reference.py``) are made first, once, and timed apart. The class is
graded three times with `grade_class`, as `python -m course autograde` grades it:

1. serially (one worker), sandboxed;
2. with ``--workers`` at once (default: one per core), sandboxed: the named peer of (1);
3. a sample of ``--sample`` submissions serially without the sandbox (``--unsafe``), against the same
   submissions' sandboxed times in (1): the sandbox's overhead per submission.

Printed: submissions per minute of (1) and (2) and their ratio, the mean seconds per submission with and
without the sandbox, the machine, and the mean score of each kind of submission (attacks should not beat
the partly correct ones they are built on).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from course import GRADING, ROOT, lesson_notebooks, lessons


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON", "NBGRADER", "MPL"))}
    env.update(HOME=str(home), JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
               JUPYTER_DATA_DIR=str(home / ".local/share/jupyter"),
               JUPYTER_RUNTIME_DIR=str(home / ".local/share/jupyter/runtime"), IPYTHONDIR=str(home / ".ipython"),
               MPLCONFIGDIR=str(home / ".config/matplotlib"), MPLBACKEND="module://matplotlib_inline.backend_inline",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return env


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_grading(size: int = 30, lesson: str | None = None, workers: int | None = None, sample: int = 5,
                  seed: int = 0, root: Path = ROOT) -> dict:
    import nbformat

    from course import nbgrader
    from course.autograde import default_workers, grade_class, open_gradebook
    from course.fakeclass import EXAMPLE, generate_class, write_example_lesson
    from course.reference import reference

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"--class must be a positive number of submissions, got {size!r}")
    lesson = lesson or EXAMPLE
    if lesson != EXAMPLE and lesson not in lessons(root):
        raise ValueError(f"no lesson {lesson!r}; lessons are {', '.join(lessons(root))} (or {EXAMPLE})")
    workers = workers or default_workers()
    tmp = Path(tempfile.mkdtemp(prefix="lmlab-bench-grading-"))
    try:
        if lesson == EXAMPLE:
            write_example_lesson(tmp)
        else:
            for name in ("assessments", "notebooks"):
                shutil.copytree(Path(root) / name / lesson, tmp / name / lesson)
        (tmp / "course").mkdir()
        for path in (Path(root) / "course").glob("*.py"):
            shutil.copy(path, tmp / "course" / path.name)
        env = _env(tmp / "home")
        nbgrader(["generate_assignment", lesson, "--force"], root=tmp, env=env, check=True, capture_output=True)
        sources = {p.stem: nbformat.read(p, 4) for p in lesson_notebooks(lesson, tmp)}
        released = {p.stem: nbformat.read(p, 4) for p in lesson_notebooks(lesson, tmp, "notebooks")}
        students = generate_class(sources, released, size, seed)
        for student, notebooks in students.items():
            folder = tmp / GRADING / "submitted" / student / lesson
            folder.mkdir(parents=True)
            for name, nb in notebooks.items():
                nbformat.write(nb, folder / f"{name}.ipynb")
        start = time.perf_counter()
        reference(lesson, tmp, env)  # once per lesson, before any submission: kept out of the rates below
        reference_seconds = time.perf_counter() - start
        runs = {}
        for label, kwargs in (("serial", {"workers": 1}), ("parallel", {"workers": workers})):
            start = time.perf_counter()
            outcomes = grade_class(lesson, root=tmp, env=env, progress=True, **kwargs)
            runs[label] = {"seconds": time.perf_counter() - start, "outcomes": {o.student: o for o in outcomes}}
        picked = sorted(students)[: max(0, min(sample, size))]
        unsafe = {}
        if picked:
            start = time.perf_counter()
            outcomes = grade_class(lesson, root=tmp, env=env, progress=False, workers=1, students=picked, unsafe=True)
            unsafe = {o.student: o.seconds for o in outcomes}
        with open_gradebook(tmp) as gb:
            scores = {s: gb.find_submission(lesson, s).score for s in students}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    kinds: dict[str, list[float]] = {}
    for student, score in scores.items():
        kinds.setdefault(student.split("-")[1], []).append(score)
    sandboxed = [runs["serial"]["outcomes"][s].seconds for s in picked]
    result = {
        "lesson": lesson, "size": size, "workers": workers, "cpu": _cpu(), "cores": default_workers(),
        "serial_per_min": 60 * size / runs["serial"]["seconds"],
        "parallel_per_min": 60 * size / runs["parallel"]["seconds"],
        "reference_seconds": reference_seconds,
        "serial_seconds": runs["serial"]["seconds"], "parallel_seconds": runs["parallel"]["seconds"],
        "sandboxed_mean": statistics.fmean(sandboxed) if sandboxed else None,
        "unsafe_mean": statistics.fmean(unsafe.values()) if unsafe else None,
        "statuses": {k: sum(o.status == k for o in runs["parallel"]["outcomes"].values())
                     for k in ("graded", "timed out", "error")},
        "scores": {k: (statistics.fmean(v), max(v)) for k, v in sorted(kinds.items())},
        "per_student": scores,
    }
    return result


def report(r: dict) -> str:
    lines = [
        f"grading bench: lesson {r['lesson']}, a class of {r['size']}, on {r['cores']} cores ({r['cpu']})",
        f"  serial (1 worker, sandboxed):   {r['serial_seconds']:7.1f} s  {r['serial_per_min']:6.2f} submissions/min",
        f"  {r['workers']} workers (sandboxed):         {r['parallel_seconds']:7.1f} s  "
        f"{r['parallel_per_min']:6.2f} submissions/min  = {r['parallel_per_min'] / r['serial_per_min']:.2f}x serial",
        f"  reference results (once per lesson, before grading, not in the rates): {r['reference_seconds']:.1f} s",
    ]
    if r["unsafe_mean"] is not None:
        over = r["sandboxed_mean"] - r["unsafe_mean"]
        lines.append(f"  sandbox overhead: {r['sandboxed_mean']:.2f} s per submission sandboxed, "
                     f"{r['unsafe_mean']:.2f} s without: {over:+.2f} s ({100 * over / r['unsafe_mean']:+.0f}%)")
    lines.append(f"  outcomes ({r['workers']} workers): " + ", ".join(f"{v} {k}" for k, v in r["statuses"].items()))
    lines.append("  mean (max) score by kind: " + ", ".join(f"{k} {m:.1f} ({x:.1f})" for k, (m, x) in
                                                       r["scores"].items()))
    return "\n".join(lines)
