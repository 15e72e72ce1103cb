"""Helpers for the course pipeline tests: an isolated Jupyter environment, a temporary course tree,
a small example lesson, and fake student submissions built from a source notebook."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nbformat

import course
from course.fakeclass import (  # noqa: F401 -- the tests' fake students
    answered_source,
    exercise_groups,
    grading_meta,
    make_submission,
    points,
    question_answers,
)
from course.questions import render_lesson

EXAMPLE = "00_example"


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


# --- the example lesson --------------------------------------------------------------------------------

def _cell(kind: str, source: str, grade_id: str | None = None, *, solution=False, grade=False, points=0,  # noqa: F811
          locked=False):
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    cell = make(source)
    if grade_id is not None:
        cell.metadata["nbgrader"] = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
                                     "solution": solution, "task": False}
        if grade:
            cell.metadata["nbgrader"]["points"] = points
    return cell


EXAMPLE_QUESTIONS = '''
[[question]]
id = "q1"
concept = "perplexity"
points = 1
text = "A model gives every next character probability 1/4. What is its perplexity?"
answer = "C"
explanation = "Perplexity is exp(mean negative log-likelihood) = exp(log 4) = 4."

[question.options]
A = "1/4"
B = "1"
C = "4"
D = "log 4"

[question.why_not]
A = "1/4 is the probability of each character, not its inverse."
B = "A perplexity of 1 means the model is certain of every character."
D = "log 4 is the cross-entropy in nats; perplexity is its exponential."

[[question]]
id = "q2"
concept = "cross-entropy"
points = 2
text = "Which quantity does training with teacher forcing minimise?"
answer = "A"
explanation = "The mean negative log-likelihood of each next token given the true prefix."

[question.options]
A = "The mean negative log-likelihood of the next token"
B = "The error rate of greedy decoding on the data"
C = "The squared error of the logits against one-hot targets"

[question.why_not]
B = "Greedy decoding is not part of training; its accuracy has no gradient."
C = "Squared error on logits is a regression loss; the language model's loss is the log-likelihood."
'''

# points of each graded part of the example, by grade_id
EXAMPLE_POINTS = {"test_square": 2, "test_mean": 3, "test_q1": 1, "test_q2": 2}


def write_example_lesson(root: Path, name: str = EXAMPLE) -> Path:
    """A small lesson with everything a real one has: grading mode, widgets, plots, two exercises with
    visible and hidden tests, two concept questions, and cells after the exercises that must still run."""
    cells = [
        _cell("markdown", "# Example lesson\nA lesson in miniature, for the pipeline tests."),
        _cell("code", "from lmlab.grading import grading_mode\n\nN = 20 if grading_mode() else 200\nprint(N)"),
        _cell("code", (
            "import ipywidgets as widgets\nfrom tqdm.auto import tqdm\n\n"
            "for _ in tqdm(range(N), desc='warm-up'):\n    pass\n\n"
            "def show(n=3):\n    print(n * n)\n\n"
            "widgets.interact(show, n=(1, 10))\n"
            "out = widgets.Output()\nwith out:\n    print('inside an Output widget')\nout"
        )),
        _cell("code", (
            "import matplotlib.pyplot as plt\n\nfig, ax = plt.subplots(figsize=(3, 2))\n"
            "ax.plot(range(N))\nplt.show()"
        )),
        _cell("markdown", "## Exercise 1\nWrite `square(x)`."),
        _cell("code", "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION",
              "square", solution=True),
        _cell("code", (
            "from lmlab.grading import expect_equal  # exact types: no object that equals everything\n\n"
            "expect_equal(square(3), 9)\n### BEGIN HIDDEN TESTS\nexpect_equal(square(-4), 16, 'square(-4)')\n"
            "### END HIDDEN TESTS"
        ), "test_square", grade=True, points=EXAMPLE_POINTS["test_square"], locked=True),
        _cell("markdown", "## Exercise 2\nWrite `mean(xs)`."),
        _cell("code", "def mean(xs):\n    ### BEGIN SOLUTION\n    return sum(xs) / len(xs)\n    ### END SOLUTION",
              "mean", solution=True),
        _cell("code", (
            "from lmlab.grading import expect_close  # a test imports what it calls: no student cell redefines it\n\n"
            "expect_close(mean([1, 2, 3]), 2.0)\n"
            "### BEGIN HIDDEN TESTS\nexpect_close(mean([0.5, 0.25]), 0.375, what='the mean of two halves')\n"
            "### END HIDDEN TESTS"
        ), "test_mean", grade=True, points=EXAMPLE_POINTS["test_mean"], locked=True),
        _cell("markdown", "## Check your understanding\n<!-- questions: q1 q2 -->"),
        _cell("code", "print('the end: every cell after the exercises runs')"),
    ]
    for index, cell in enumerate(cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell.id = grade_id.replace("_", "-") if grade_id else f"cell-{index}"
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    lesson = root / "assessments" / name
    lesson.mkdir(parents=True)
    nbformat.write(nb, lesson / f"{name}.ipynb")
    (lesson / "questions.toml").write_text(EXAMPLE_QUESTIONS, encoding="utf-8")
    render_lesson(lesson)
    return lesson


# --- fake students: course/fakeclass.py --------------------------------------------------------------

def submit(root: Path, student: str, lesson: str, notebooks: dict[str, nbformat.NotebookNode]) -> None:
    """Hand a submission in as files: course/grading/downloaded/<lesson>/archive/<student>/<notebook>.ipynb,
    where `python -m course collect <lesson>` (nbgrader zip_collect) picks it up."""
    folder = root / course.GRADING / "downloaded" / lesson / "archive" / student
    folder.mkdir(parents=True, exist_ok=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, folder / f"{name}.ipynb")
