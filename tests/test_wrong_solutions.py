"""course.wrong: every exercise has wrong solutions, and its tests catch each of them."""

from __future__ import annotations

import textwrap

import nbformat
import pytest
from _course_support import write_example_lesson

import course
from course.wrong import (
    FILE,
    Wrong,
    check_lesson,
    check_notebook,
    exercises,
    lesson_problems,
    load_wrong,
    report,
    visible_part,
)

REAL_LESSONS = course.lessons()

ENTRY = '''
[[wrong]]
exercise = "square"
name = "doubles"
mistake = "adds x to itself instead of multiplying"
code = """
def square(x):
    return x + x
"""
'''

EXAMPLE_WRONG = ENTRY + '''
[[wrong]]
exercise = "square"
name = "absolute value first"
mistake = "right for every input, so no test can catch it"
code = """
def square(x):
    return abs(x) * abs(x)
"""

[[wrong]]
exercise = "square"
name = "only positive"
mistake = "forgets that a negative number squared is positive"
code = """
def square(x):
    return x * x if x > 0 else -x * x
"""

[[wrong]]
exercise = "mean"
name = "integer division"
mistake = "uses // and loses the fraction"
code = """
def mean(xs):
    return sum(xs) // len(xs)
"""
'''


def write(tmp_path, text: str):
    path = tmp_path / FILE
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_load_wrong_reads_entries_in_order(tmp_path):
    wrongs = load_wrong(write(tmp_path, EXAMPLE_WRONG))
    assert [(w.exercise, w.name) for w in wrongs][:2] == [("square", "doubles"), ("square", "absolute value first")]
    assert wrongs[0].mistake == "adds x to itself instead of multiplying" and "return x + x" in wrongs[0].code


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('name = "doubles"\n', ""), "needs exactly the keys"),
        (('name = "doubles"', 'name = "doubles"\nhint = "x"'), "needs exactly the keys"),
        (('mistake = "adds x to itself instead of multiplying"', 'mistake = " "'), "non-empty string"),
        (("return x + x", "return x +"), "does not parse"),
        (("[[wrong]]", "[[wrongs]]"), "unknown top-level keys"),
    ],
)
def test_load_wrong_rejects_bad_entries(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_wrong(write(tmp_path, ENTRY.replace(*change)))
    with pytest.raises(ValueError, match="two wrong solutions named 'doubles'"):
        load_wrong(write(tmp_path, ENTRY + ENTRY))


def test_visible_part_cuts_the_hidden_tests():
    source = "assert f(1) == 1\n### BEGIN HIDDEN TESTS\nassert f(2) == 4\n### END HIDDEN TESTS\nassert f(0) == 0"
    assert visible_part(source) == "assert f(1) == 1\nassert f(0) == 0"


def test_lesson_problems_asks_for_three_per_exercise(tmp_path):
    lesson = write_example_lesson(tmp_path)
    nb = nbformat.read(lesson / f"{lesson.name}.ipynb", 4)
    assert set(exercises(nb)) == {"square", "mean"}, "question answer cells are not exercises"
    assert "is missing" in lesson_problems(lesson)[0]
    write(lesson, EXAMPLE_WRONG.replace('exercise = "mean"', 'exercise = "median"'))
    assert lesson_problems(lesson) == [
        "median (wrong solution 'integer division') is no exercise of this lesson; exercises: ['mean', 'square']",
        "mean has 0 wrong solutions; write at least 3",
    ]


@pytest.mark.slow
def test_check_notebook_tries_each_wrong_solution_and_goes_on_with_the_real_one(tmp_path):
    lesson = write_example_lesson(tmp_path)
    write(lesson, EXAMPLE_WRONG)
    outcomes = check_lesson(lesson)
    by_name = {o.wrong.name: o for o in outcomes}
    assert list(by_name) == ["doubles", "absolute value first", "only positive", "integer division"]
    assert list(by_name["doubles"].failed) == ["test_square"] and by_name["doubles"].failed_visible
    assert not by_name["absolute value first"].caught
    only_positive = by_name["only positive"]
    assert only_positive.caught and not only_positive.failed_visible, "caught by the hidden test only"
    assert "square(-4): expected 16" in only_positive.failed["test_square"]
    assert by_name["integer division"].failed["test_mean"].startswith("AssertionError")
    text = report(outcomes)
    assert "NOT CAUGHT" in text and text.endswith("3 of 4 wrong solutions caught (1 already by the visible tests)")
    broken = [Wrong("square", "no function", "defines nothing", "raise RuntimeError('boom')")]
    with pytest.raises(RuntimeError, match="wrong solution 'no function' of square fails to run"):
        check_notebook(lesson / f"{lesson.name}.ipynb", broken)


@pytest.mark.parametrize("lesson", REAL_LESSONS)
def test_every_exercise_has_at_least_three_wrong_solutions(lesson):
    assert lesson_problems(course.ROOT / "assessments" / lesson) == []


NOTEBOOKS = [(lesson, path.name) for lesson in REAL_LESSONS for path in course.lesson_notebooks(lesson)]


@pytest.mark.slow
@pytest.mark.parametrize(("lesson", "notebook"), NOTEBOOKS)
def test_the_tests_catch_every_wrong_solution(lesson, notebook):
    folder = course.ROOT / "assessments" / lesson
    path = folder / notebook
    wrongs = [w for w in load_wrong(folder / FILE) if w.exercise in exercises(nbformat.read(path, 4))]
    outcomes = check_notebook(path, wrongs)
    missed = [o for o in outcomes if not o.caught]
    assert not missed, "not caught by any test cell:\n" + report(missed)
