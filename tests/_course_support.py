"""Helpers for the course pipeline tests: an isolated Jupyter environment, a temporary course tree,
a small example lesson, and fake student submissions built from a source notebook."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nbformat

import course
from course.fakeclass import (  # noqa: F401 -- the tests' example lesson and fake students
    EXAMPLE,
    EXAMPLE_POINTS,
    EXAMPLE_QUESTIONS,
    answered_source,
    exercise_groups,
    grading_meta,
    make_submission,
    points,
    question_answers,
    write_example_lesson,
)


def isolated_env(home: Path, grading: bool = False) -> dict[str, str]:
    """Environment for nbgrader and kernels that ignores the user's Jupyter, IPython and matplotlib set-up.

    Kernels still resolve `python3` to this interpreter: its kernelspec lives in `sys.prefix`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON", "NBGRADER", "MPL"))}
    for key in ("PYTHONSTARTUP", "PYTHONPATH"):
        env.pop(key, None)
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
        JUPYTER_DATA_DIR=str(home / ".local/share/jupyter"),
        JUPYTER_RUNTIME_DIR=str(home / ".local/share/jupyter/runtime"),
        IPYTHONDIR=str(home / ".ipython"),
        MPLCONFIGDIR=str(home / ".config/matplotlib"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYDEVD_DISABLE_FILE_VALIDATION="1",  # quiets debugpy's frozen-modules warning at kernel start
    )
    if grading:
        env["NBGRADER_EXECUTION"] = "autograde"
    return env


def copy_course(dest: Path, source_root: Path = course.ROOT) -> Path:
    """A copy of the course tree (assessments/, notebooks/, course/ without grading state) under `dest`."""
    ignore = shutil.ignore_patterns("grading", "__pycache__", ".ipynb_checkpoints")
    for name in ("assessments", "notebooks", "course"):
        if (source_root / name).is_dir():
            shutil.copytree(source_root / name, dest / name, ignore=ignore)
    return dest


# --- fake students: course/fakeclass.py --------------------------------------------------------------

def submit(root: Path, student: str, lesson: str, notebooks: dict[str, nbformat.NotebookNode]) -> None:
    """Hand a submission in as files: course/grading/downloaded/<lesson>/archive/<student>/<notebook>.ipynb,
    where `python -m course collect <lesson>` (nbgrader zip_collect) picks it up."""
    folder = root / course.GRADING / "downloaded" / lesson / "archive" / student
    folder.mkdir(parents=True, exist_ok=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, folder / f"{name}.ipynb")
