"""A generated class for the grading benchmark and tests: correct, partial, blank and attacking
submissions of a lesson, made from its source and released notebooks; and the example lesson, a lesson
in miniature (two exercises, two questions, 8 points) that grades in seconds."""

from __future__ import annotations

import random
import re
from pathlib import Path

import nbformat

EXAMPLE = "00_example"


def _cell(kind: str, source: str, grade_id: str | None = None, *, solution=False, grade=False, points=0,
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
    from course.questions import render_lesson

    render_lesson(lesson)
    return lesson



def grading_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def exercise_groups(nb) -> list[tuple[list[str], list[str]]]:
    """(solution grade_ids, test grade_ids) of each exercise, in notebook order: the solution cells before
    a run of test cells, and those test cells. A test depends on nothing after it, so the first exercise's
    tests pass with only its own solutions filled in; a question's test depends on its answer alone."""
    groups: list[tuple[list[str], list[str]]] = []
    pending: list[str] = []
    for cell in nb.cells:
        meta = grading_meta(cell)
        if meta.get("grade"):
            if pending or not groups:
                groups.append((pending, []))
                pending = []
            groups[-1][1].append(meta["grade_id"])
        elif meta.get("solution"):
            pending.append(meta["grade_id"])
    return groups


def points(nb) -> dict[str, float]:
    """Points of each test cell, by grade_id."""
    tests = [grading_meta(c) for c in nb.cells if grading_meta(c).get("grade")]
    return {meta["grade_id"]: float(meta["points"]) for meta in tests}


def question_answers(nb) -> dict[str, tuple[str, str]]:
    """grade_id of each question's answer cell -> (variable, correct letter), from a source notebook."""
    answers = {}
    for cell in nb.cells:
        if cell.metadata.get("course", {}).get("question") and grading_meta(cell).get("solution"):
            variable, letter = re.search(r'(answer_\w+) = "(\w)"', cell.source).groups()
            answers[grading_meta(cell)["grade_id"]] = (variable, letter)
    return answers


def answered_source(cell) -> str:
    """What a student who solved the exercise would have written: the source without the solution markers."""
    lines = cell.source.split("\n")
    return "\n".join(line for line in lines if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line)


def make_submission(source, released, answered=(), wrong=()) -> nbformat.NotebookNode:
    """The released notebook with the solution cells in `answered` filled in from the source, and the
    questions in `wrong` answered with a wrong letter."""
    solutions = {grading_meta(c)["grade_id"]: c for c in source.cells if grading_meta(c).get("solution")}
    correct = question_answers(source)
    nb = nbformat.from_dict(released)
    for cell in nb.cells:
        gid = grading_meta(cell).get("grade_id")
        if gid in answered:
            cell.source = answered_source(solutions[gid])
        elif gid in wrong:
            variable, letter = correct[gid]
            cell.source = f'{variable} = "{"B" if letter == "A" else "A"}"'
    return nb



# code a submission puts before its first answer; each tries to win points it did not earn
ATTACKS = {
    "patch_comparisons": "import math, lmlab.grading as _g\nmath.isclose = lambda *a, **k: True\n"
                         "_g._isclose = lambda *a, **k: True\n_g.expect_close = lambda *a, **k: None\n",
    "swallow_errors": "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n",
    "blank_later_cells": "get_ipython().input_transformers_post.append(lambda lines: [])\n",
    "shadow_type": "type = lambda x: str\nisinstance = lambda *a: True\n",
    "huge_output": "print('x' * 50_000_000)\n",
}


def generate_class(sources: dict[str, nbformat.NotebookNode], released: dict[str, nbformat.NotebookNode],
                   size: int, seed: int = 0) -> dict[str, dict[str, nbformat.NotebookNode]]:
    """``size`` submissions of a lesson (notebook name -> notebook each), by student id: in turn a correct
    one, a partly correct one (a random half of the exercises and questions), a blank one and, on top of
    that same partly correct one, each attack of ATTACKS. Ids are ``s<index>-<kind>-c<cycle>``: an attack
    should score no more than the partial submission of its cycle."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    kinds = ["correct", "partial", "blank", *ATTACKS]
    students: dict[str, dict[str, nbformat.NotebookNode]] = {}
    for i in range(size):
        kind = kinds[i % len(kinds)]
        notebooks = {}
        for name, source in sources.items():
            groups = exercise_groups(source)
            every = [s for g in groups for s in g[0]]
            if kind == "correct":
                nb = make_submission(source, released[name], every)
            elif kind == "blank":
                nb = nbformat.from_dict(released[name])
            else:
                rng = random.Random(f"{seed}:{i // len(kinds)}:{name}")  # the same half for a whole cycle
                half = [g for g in groups if rng.random() < 0.5]
                nb = make_submission(source, released[name], [s for g in half for s in g[0]])
                if kind in ATTACKS:
                    first = next(c for c in nb.cells if grading_meta(c).get("solution"))
                    first.source = ATTACKS[kind] + first.source
            notebooks[name] = nb
        students[f"s{i:03d}-{kind}-c{i // len(kinds)}"] = notebooks
    return students
