"""`python -m course new`: the lesson it starts follows the course's rules, and it refuses bad names.

The full pipeline (release, sandboxed autograde of a fake class, feedback, nbval in both modes) runs on
every lesson in assessments/ (tests/test_course_pipeline.py), and 05_multitoken was started with `new`.
Here a lesson is created in a copy of the course and the library, and checked without nbgrader's
gradebook: its notebook runs, its tests pass on the source and fail on every wrong solution, a blank
student copy raises only in exercise cells, its question is fair and its package keeps the import rules.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from _course_support import copy_course, isolated_env

import course
from course.new import create, parse_name, planned_paths
from course.questions import cue_problems, load_questions
from course.wrong import check_lesson, lesson_problems


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A copy of the course and of the lmlab package, with lesson 07_scratch_topic created by `new`."""
    root = copy_course(tmp_path_factory.mktemp("new"))
    shutil.copytree(course.ROOT / "lmlab", root / "lmlab", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tests").mkdir()
    home = root / "home"
    env = isolated_env(home)
    env["PYTHONPATH"] = str(root)  # kernels import this copy of lmlab, with the new lesson's package
    written = create("07_scratch_topic", "A scratch topic", root=root, env=env)
    assert [p.relative_to(root).as_posix() for p in written] == [
        "assessments/07_scratch_topic", "lmlab/lessons/scratch_topic", "tests/test_lesson_scratch_topic.py",
        "course/syllabus.md", "notebooks/07_scratch_topic"]
    return root


def _env(root: Path, grading: bool) -> dict[str, str]:
    env = isolated_env(root / "home", grading=grading)
    env["PYTHONPATH"] = str(root)
    return env


def _execute(path: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(path, 4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel(env=env):
        client.execute(cleanup_kc=False)
    return nb


def _raised(nb) -> list[str]:
    return [c.metadata.get("nbgrader", {}).get("grade_id", c.source[:40]) for c in nb.cells
            if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]


@pytest.mark.slow
@pytest.mark.parametrize("grading", [False, True], ids=["normal", "grading"])
def test_the_new_source_notebook_runs_and_passes_its_tests(scratch, grading):
    nb = _execute(scratch / "assessments" / "07_scratch_topic" / "07a_scratch_topic.ipynb", _env(scratch, grading))
    assert _raised(nb) == []
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= (1 if grading else 2)  # the measured picture, and the widget's first picture
    widgets = sum("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for c in nb.cells
                  if c.cell_type == "code" for o in c.outputs)
    assert widgets == (0 if grading else 1)


@pytest.mark.slow
def test_a_blank_student_copy_raises_in_its_exercise_cells_only(scratch):
    nb = _execute(scratch / "notebooks" / "07_scratch_topic" / "07a_scratch_topic.ipynb", _env(scratch, False))
    assert _raised(nb) == ["test_perplexity_from_nlls", "test_perplexity_from_nlls_edge", "test_q1"]
    released = (scratch / "notebooks" / "07_scratch_topic" / "07a_scratch_topic.ipynb").read_text()
    assert "BEGIN SOLUTION" not in released and "HIDDEN" not in released and "math.exp(sum" not in released


@pytest.mark.slow
def test_every_wrong_solution_is_caught(scratch, monkeypatch):
    lesson = scratch / "assessments" / "07_scratch_topic"
    for key, value in _env(scratch, True).items():
        monkeypatch.setenv(key, value)
    assert lesson_problems(lesson) == []
    outcomes = check_lesson(lesson)
    assert len(outcomes) == 4 and all(o.caught for o in outcomes), [(o.wrong.name, o.failed) for o in outcomes]


def test_its_question_is_fair_and_its_package_follows_the_import_rules(scratch):
    questions = load_questions(scratch / "assessments" / "07_scratch_topic" / "questions.toml")
    assert list(questions) == ["q1"] and cue_problems(questions) == []
    package = scratch / "lmlab" / "lessons" / "scratch_topic"
    for file in package.glob("*.py"):
        text = file.read_text()
        assert "lmlab.lessons." not in text.replace("lmlab.lessons.scratch_topic", ""), file.name
    syllabus = (scratch / "course" / "syllabus.md").read_text()
    assert "| 07 scratch topic | A scratch topic | about 30 minutes | draft |" in syllabus
    assert syllabus.index("notebooks/07_scratch_topic/") > syllabus.index("notebooks/04_scaling/")


@pytest.mark.slow
def test_its_library_tests_pass(scratch):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(scratch / "tests" / "test_lesson_scratch_topic.py")],
                            cwd=scratch, env=_env(scratch, False), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 passed" in result.stdout


@pytest.mark.parametrize("name, message", [
    ("5_topic", "two digits"), ("05-topic", "two digits"), ("05_Topic", "lowercase"), ("05_", "two digits"),
    ("05_top ic", "two digits"), ("../05_x", "two digits"), ("05_a__b", "two digits"),
    ("00_example", "reserved"), ("06_lessons", "reserved")])
def test_bad_names_are_refused_with_what_is_allowed(name, message):
    with pytest.raises(ValueError, match=message):
        parse_name(name)


def test_an_existing_lesson_or_topic_is_refused_and_nothing_is_written(tmp_path):
    root = copy_course(tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    syllabus = (root / "course" / "syllabus.md").read_text()
    for name, what in [("01_objective", "assessments/01_objective"), ("09_objective", "the same topic")]:
        with pytest.raises(ValueError, match=what):
            create(name, root=root)
    (root / "lmlab" / "lessons" / "fresh").mkdir(parents=True)
    with pytest.raises(ValueError, match="lmlab/lessons/fresh"):
        create("08_fresh", root=root)
    made = [Path("lmlab"), Path("lmlab/lessons"), Path("lmlab/lessons/fresh")]  # by this test, not by new
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == sorted([*before, *made])
    assert (root / "course" / "syllabus.md").read_text() == syllabus
    with pytest.raises(TypeError, match="string"):
        parse_name(5)


def test_planned_paths_follow_the_layout():
    lesson = parse_name("05_multi_token", "Predicting several tokens at once")
    paths = {k: p.relative_to(course.ROOT).as_posix() for k, p in planned_paths(lesson).items()}
    assert paths == {"assessment": "assessments/05_multi_token", "student": "notebooks/05_multi_token",
                     "package": "lmlab/lessons/multi_token", "test": "tests/test_lesson_multi_token.py"}
    assert lesson.notebook == "05a_multi_token.ipynb" and lesson.alias == "mtl"
