"""Course tooling: thin wrappers around nbgrader, the concept-question renderer and the lesson benchmark.

Run `python -m course --help` from the repository root. nbgrader itself is configured in
`course/nbgrader_config.py`; every nbgrader command runs in this folder so that nbgrader finds it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRADING = Path("course") / "grading"  # relative to the root: gradebook, submissions, feedback (git-ignored)


def lessons(root: Path = ROOT) -> list[str]:
    """Names of the lesson folders in `root/assessments` (each holds at least one notebook), sorted."""
    source = Path(root) / "assessments"
    if not source.is_dir():
        return []
    return sorted(
        d.name for d in source.iterdir() if d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.ipynb"))
    )


def lesson_notebooks(lesson: str, root: Path = ROOT, folder: str = "assessments") -> list[Path]:
    """The notebooks of a lesson, in `assessments/` (sources) or `notebooks/` (student versions)."""
    return sorted((Path(root) / folder / lesson).glob("*.ipynb"))


def nbgrader(args: list[str], root: Path = ROOT, **run_kwargs) -> subprocess.CompletedProcess:
    """Run `nbgrader ARGS` with this interpreter in `root/course`, where nbgrader reads nbgrader_config.py.

    `run_kwargs` go to `subprocess.run` (e.g. `env`, `capture_output=True`, `check=True`).
    """
    root = Path(root)
    (root / GRADING).mkdir(parents=True, exist_ok=True)  # sqlite does not create the gradebook's folder
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root / "course", **run_kwargs)
