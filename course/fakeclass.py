"""A generated class for the grading benchmark and tests: correct, partial, blank and attacking
submissions of a lesson, made from its source and released notebooks."""

from __future__ import annotations

import random
import re

import nbformat


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
