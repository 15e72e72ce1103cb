"""The course pipeline, end to end: release, validate, autograde, feedback, export, nbval.

Every lesson folder in assessments/ is tested, and so is a small example lesson built here, which also
covers what a real lesson may not show: stderr in test cells, helpers redefined by a student, widgets.
nbgrader always works in a temporary copy of the course tree, with the user's Jupyter set-up ignored.
Kernels run in grading mode (nbgrader sets NBGRADER_EXECUTION), except in the slow nbval run, which
executes every notebook as a student would.

Each notebook runs in grading mode as often as the checks need and no more: grading the fake class runs
the source once (the reference run, which refuses to grade if the instructor's solution fails a test of
its own) and the released notebook once per student. The correct student's run shows that the solution
runs top to bottom with no cell raising; the blank student's run, that an untouched student notebook
raises only in its exercise cells and runs to the end. `python -m course validate` is tested on the
example lesson: on a real lesson it would run the same source, in the same mode, once more.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from _browser_support import BROWSER_SELECTED, browser_available
from _course_support import (
    EXAMPLE,
    EXAMPLE_POINTS,
    copy_course,
    exercise_groups,
    grading_meta,
    isolated_env,
    make_submission,
    points,
    question_answers,
    submit,
    write_example_lesson,
)

import course
from course.__main__ import release, validate
from course.autograde import grade_class
from course.fakeclass import ATTACKS
from course.sandbox import probe_bwrap
from lmlab.grading import grading_mode

REAL_LESSONS = course.lessons()
LESSONS = [EXAMPLE, *REAL_LESSONS]
STUDENTS = ("correct", "blank", "partial", "tamper")
UNSAFE = probe_bwrap() is not None


# --- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


class Tree:
    """A course tree in a temporary folder, released: notebooks/ freshly generated, gradebook filled."""

    def __init__(self, root: Path, lesson: str, env: dict[str, str]):
        self.root, self.lesson, self.env = root, lesson, env
        assert release([lesson], [], root=root, env=env) == 0, "nbgrader generate_assignment failed"
        self.sources = {p.stem: nbformat.read(p, 4) for p in course.lesson_notebooks(lesson, root)}
        self.released = {p.stem: nbformat.read(p, 4) for p in course.lesson_notebooks(lesson, root, "notebooks")}

    def path(self, *parts: str) -> Path:
        return self.root / course.GRADING / Path(*parts)


# each lesson's tests share its fixtures: under pytest-xdist (--dist loadgroup) they run in one process
# (tests/conftest.py marks them by lesson)
@pytest.fixture(scope="module", params=LESSONS)
def tree(request, tmp_path_factory, home) -> Tree:
    root = tmp_path_factory.mktemp(f"course-{request.param}")
    if request.param == EXAMPLE:
        (root / "course").mkdir()
        for path in [*(course.ROOT / "course").glob("*.py"), course.ROOT / "course" / "nbval_sanitize.cfg"]:
            (root / "course" / path.name).write_bytes(path.read_bytes())
        write_example_lesson(root)
    else:
        copy_course(root)
    return Tree(root, request.param, isolated_env(home))


class Graded:
    """The lesson's fake class after `nbgrader zip_collect`, `autograde`, `generate_feedback` and `export`."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self.points = {name: points(nb) for name, nb in tree.sources.items()}
        self.expected = {"correct": {}, "blank": {}, "partial": {}}
        submissions = {student: {} for student in STUDENTS}
        for name, source in tree.sources.items():
            released, pts, groups = tree.released[name], self.points[name], exercise_groups(source)
            answers = question_answers(source)
            questions = [g for g in groups if g[0] and all(gid in answers for gid in g[0])]
            exercises = [g for g in groups if g not in questions]
            # partly correct: the first exercise and every other question; the other questions wrong
            answered = exercises[:1] + questions[::2]
            wrong = [gid for g in questions[1::2] for gid in g[0]]
            if len(answered) == len(groups) > 1:  # one exercise and one question (a new lesson): that one wrong
                answered, wrong = exercises[:1], [gid for g in questions for gid in g[0]]
            submissions["correct"][name] = make_submission(source, released, [s for g in groups for s in g[0]])
            submissions["blank"][name] = released
            submissions["partial"][name] = make_submission(source, released, [s for g in answered for s in g[0]], wrong)
            submissions["tamper"][name] = tamper(kernel_tamper(submissions["partial"][name]), answered)
            self.expected["correct"][name] = sum(pts.values())
            self.expected["blank"][name] = 0.0
            self.expected["partial"][name] = sum(pts[t] for g in answered for t in g[1])
        self.expected["tamper"] = self.expected["partial"]
        if tree.lesson == EXAMPLE:
            # a wrong `mean` with the test's helper redefined to always agree
            for cell in submissions["tamper"][EXAMPLE].cells:
                if grading_meta(cell).get("grade_id") == "mean":
                    cell.source = "expect_close = lambda *args, **kwargs: None\n\ndef mean(xs):\n    return 0.0"
            submissions["noisy"] = {EXAMPLE: noisy(submissions["correct"][EXAMPLE])}
            self.expected["noisy"] = self.expected["correct"]
        self.students = sorted(submissions)
        for student, notebooks in submissions.items():
            submit(tree.root, student, tree.lesson, notebooks)
        run = dict(root=tree.root, env=tree.env, check=True)
        course.nbgrader(["zip_collect", tree.lesson, "--force"], **run)
        # sandboxed where bubblewrap works (CI installs it); without it, the same grading unsandboxed
        self.outcomes = grade_class(tree.lesson, root=tree.root, workers=2, env=tree.env, progress=False,
                                    unsafe=UNSAFE)
        course.nbgrader(["generate_feedback", tree.lesson], **run)
        course.nbgrader(["export"], **run)
        with open(tree.path("grades.csv"), newline="") as f:
            self.csv = {row["student_id"]: row for row in csv.DictReader(f)}
        if tree.lesson == EXAMPLE:
            # a correct submission whose `square` never returns, graded with a short cell time limit
            looper = nbformat.from_dict(submissions["correct"][EXAMPLE])
            for cell in looper.cells:
                if grading_meta(cell).get("grade_id") == "square":
                    cell.source = "def square(x):\n    while True:\n        pass"
            submit(tree.root, "looper", tree.lesson, {EXAMPLE: looper})
            course.nbgrader(["zip_collect", tree.lesson, "--force"], **run)
            grade_class(tree.lesson, root=tree.root, students=["looper"], env=tree.env, progress=False,
                        unsafe=UNSAFE, extra=["--Execute.timeout=10"])

    def autograded(self, student: str, name: str) -> nbformat.NotebookNode:
        return nbformat.read(self.tree.path("autograded", student, self.tree.lesson, f"{name}.ipynb"), 4)

    def scores(self, student: str, name: str) -> dict[str, float]:
        """Score of each test cell, read back from the autograded notebook's gradebook."""
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.tree.path('gradebook.db')}") as gb:
            nb = gb.find_submission_notebook(name, self.tree.lesson, student)
            return {g.name: g.score for g in nb.grades}


def tamper(nb: nbformat.NotebookNode, answered) -> nbformat.NotebookNode:
    """A partly correct submission that also tries to win the other points: every test cell edited to
    `pass` and worth 100 points, and one test cell of an unanswered exercise deleted."""
    nb = nbformat.from_dict(nb)
    answered_tests = {t for g in answered for t in g[1]}
    for cell in nb.cells:
        meta = grading_meta(cell)
        if meta.get("grade"):
            cell.source = "pass"
            meta["points"] = 100
    unanswered = [i for i, c in enumerate(nb.cells) if grading_meta(c).get("grade")
                  and grading_meta(c)["grade_id"] not in answered_tests]
    if unanswered:
        del nb.cells[unanswered[-1]]
    return nb


def kernel_tamper(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The partly correct submission with the fake class's in-kernel attacks (patched comparisons,
    swallowed errors, shadowed builtins) put before its first answer: it must not score more."""
    nb = nbformat.from_dict(nb)
    attack = "".join(ATTACKS[k] for k in ("patch_comparisons", "swallow_errors", "shadow_type"))
    first = next(c for c in nb.cells if grading_meta(c).get("solution"))
    first.source = attack + first.source
    return nb


def noisy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The example's correct submission, with a `mean` that warns, prints to stderr and shows a progress bar."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if grading_meta(cell).get("grade_id") == "mean":
            cell.source = (
                "import sys\nimport warnings\nfrom tqdm import tqdm\n\n"
                "def mean(xs):\n"
                "    warnings.warn('mean of a list: numpy is faster', UserWarning)\n"
                "    print('computing a mean', file=sys.stderr)\n"
                "    return sum(tqdm(xs, file=sys.stderr)) / len(xs)\n"
            )
    return nb


@pytest.fixture(scope="module")
def graded(tree) -> Graded:
    return Graded(tree)


class _Text(HTMLParser):
    """The visible text of an HTML page (no scripts or styles)."""

    def __init__(self):
        super().__init__()
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_text(path: Path) -> str:
    parser = _Text()
    parser.feed(path.read_text(encoding="utf-8"))
    return " ".join("".join(parser.parts).split())


def region_lines(nb: nbformat.NotebookNode, begin: str, end: str) -> set[str]:
    """Lines inside `### BEGIN ...`/`### END ...` regions that appear nowhere else in the notebook."""
    inside, outside = set(), set()
    for cell in nb.cells:
        in_region = False
        for line in cell.source.split("\n"):
            if begin in line:
                in_region = True
            elif end in line:
                in_region = False
            elif line.strip():
                (inside if in_region else outside).add(" ".join(line.split()))
    return inside - outside


# --- grading mode --------------------------------------------------------------------------------------

def test_grading_mode_follows_nbgrader_execution(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert grading_mode() is False
    for value in ("autograde", "validate"):
        monkeypatch.setenv("NBGRADER_EXECUTION", value)
        assert grading_mode() is True
    monkeypatch.setenv("NBGRADER_EXECUTION", "")
    assert grading_mode() is False


def test_lessons_are_discovered(tmp_path):
    (tmp_path / "assessments" / "02_b").mkdir(parents=True)
    (tmp_path / "assessments" / "02_b" / "02_b.ipynb").write_text("{}")
    (tmp_path / "assessments" / "01_a").mkdir()
    (tmp_path / "assessments" / "01_a" / "01a_x.ipynb").write_text("{}")
    (tmp_path / "assessments" / "empty").mkdir()
    (tmp_path / "assessments" / ".ipynb_checkpoints").mkdir()
    assert course.lessons(tmp_path) == ["01_a", "02_b"]
    assert course.lessons(tmp_path / "nowhere") == []


# --- release -------------------------------------------------------------------------------------------

def test_committed_student_notebooks_equal_a_fresh_release(tree):
    """notebooks/LESSON as committed is what `python -m course release` makes now (the tree fixture is a
    copy of the course, released afresh)."""
    if tree.lesson == EXAMPLE:
        pytest.skip("the example lesson is built by the tests and has no committed student notebooks")
    committed = {p.name: p.read_bytes() for p in (course.ROOT / "notebooks" / tree.lesson).glob("*")}
    fresh = {p.name: p.read_bytes() for p in (tree.root / "notebooks" / tree.lesson).glob("*")}
    hint = "notebooks/ is out of date: run `python -m course release` and commit notebooks/"
    assert sorted(committed) == sorted(fresh), hint
    for name, data in fresh.items():
        if name.endswith(".ipynb"):
            assert nbformat.reads(committed[name], 4) == nbformat.reads(data, 4), f"{name}: {hint}"
        else:
            assert committed[name] == data, f"{name}: {hint}"


def test_no_student_notebooks_without_a_source():
    released = sorted(p.name for p in (course.ROOT / "notebooks").glob("*") if p.is_dir())
    assert [name for name in released if name not in REAL_LESSONS] == [], "delete the folder or restore its source"


def test_released_notebooks_hold_no_solutions_or_hidden_tests(tree):
    assert not (tree.root / "notebooks" / tree.lesson / "questions.toml").exists()
    assert sorted(tree.released) == sorted(tree.sources)
    for name, source in tree.sources.items():
        released = tree.released[name]
        text = "\n".join(" ".join(line.split()) for c in released.cells for line in c.source.split("\n"))
        secret = region_lines(source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
        secret |= region_lines(source, "BEGIN SOLUTION", "END SOLUTION")
        assert secret, "the lesson has no solutions or hidden tests to hide"
        assert [line for line in secret if line in text.split("\n")] == []
        for cell in released.cells:
            assert not cell.get("outputs") and cell.get("execution_count") is None
            assert set(cell.metadata) <= {"nbgrader", "tags", "editable", "deletable", "jupyter", "slideshow"}
            meta = grading_meta(cell)
            if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade")):
                assert "raises-exception" in cell.metadata.get("tags", []), cell.source
        assert set(released.metadata) <= {"kernelspec", "language_info"}


# --- the sources pass their own tests ------------------------------------------------------------------

def test_validate_passes_the_examples_source_and_fails_a_broken_one(tree, capsys):
    """The instructor's `validate` command (a real lesson's sources are checked by the reference run of its
    graded class, in the same mode: see the module docstring)."""
    if tree.lesson != EXAMPLE:
        pytest.skip("example lesson only: a real lesson's sources pass their tests in its reference run")
    assert validate([tree.lesson], [], root=tree.root, env=tree.env) == 0, capsys.readouterr().out
    capsys.readouterr()
    broken_root = tree.root / "broken"
    path = course.lesson_notebooks(tree.lesson, tree.root)[0]
    nb = nbformat.read(path, 4)
    for cell in nb.cells:
        if grading_meta(cell).get("grade_id") == "mean":
            cell.source = "def mean(xs):\n    return 0.0"
    (broken_root / "assessments" / tree.lesson).mkdir(parents=True)
    shutil.copytree(tree.root / "course", broken_root / "course", ignore=shutil.ignore_patterns("grading"))
    nbformat.write(nb, broken_root / "assessments" / tree.lesson / path.name)
    assert validate([tree.lesson], [], root=broken_root, env=tree.env) == 1
    out = capsys.readouterr().out
    assert "VALIDATION FAILED ON 1 CELL(S)" in out and "expected 2.0, got 0.0" in out, out


# --- autograding round trip ----------------------------------------------------------------------------

def test_untouched_release_scores_zero_and_only_exercise_cells_raise(graded):
    assert float(graded.csv["blank"]["score"]) == 0.0
    for name in graded.tree.sources:
        assert set(graded.scores("blank", name).values()) == {0.0}
        nb = graded.autograded("blank", name)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code_cells), "the grader stopped early"
        raised = [c for c in code_cells if any(o.output_type == "error" for o in c.outputs)]
        exercise = [grading_meta(c).get("solution") or grading_meta(c).get("grade") for c in raised]
        assert [c.source for c, ok in zip(raised, exercise, strict=True) if not ok] == [], (
            "cells that are not exercises raised: a student who skips an exercise must be able to go on"
        )
        tests = [c for c in code_cells if grading_meta(c).get("grade")]
        assert tests and all(c in raised for c in tests), "a test cell passed on an unanswered exercise"


def test_the_solution_runs_top_to_bottom_in_grading_mode_without_an_error(graded):
    for name in graded.tree.sources:
        nb = graded.autograded("correct", name)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code_cells), f"{name}: the grader stopped early"
        raised = [c.source[:300] for c in code_cells if any(o.output_type == "error" for o in c.outputs)]
        assert raised == [], f"{name}: cells of the instructor's solution raised in grading mode"


def test_round_trip_scores_and_export(graded):
    assert {o.student: o.status for o in graded.outcomes} == dict.fromkeys(graded.students, "graded")
    assert [o.student for o in graded.outcomes if o.preflight] == ["tamper"], "only the tamperer changed cells"
    for student, expected in graded.expected.items():
        for name, total in expected.items():
            assert sum(graded.scores(student, name).values()) == pytest.approx(total), (student, name)
        row = graded.csv[student]
        assert float(row["score"]) == pytest.approx(sum(expected.values())), student
        assert float(row["max_score"]) == pytest.approx(sum(sum(p.values()) for p in graded.points.values()))
    partial, correct = (sum(graded.expected[s].values()) for s in ("partial", "correct"))
    groups = sum(len(exercise_groups(nb)) for nb in graded.tree.sources.values())
    assert 0 < partial < correct or groups == 1, "the partly correct student should score in between"


def test_export_by_cell_has_every_roster_student_and_every_graded_cell(graded, tmp_path):
    from course.collect import import_roster
    from course.export import cell_grades

    roster = tmp_path / "roster.csv"
    roster.write_text("id,first_name,last_name\n" + "".join(f"{s},{s.title()},X\n" for s in graded.expected)
                      + "absent,Absent,Student\n")
    import_roster(roster, graded.tree.root)
    columns, rows = cell_grades(graded.tree.root, [graded.tree.lesson])
    by_student = {r["student_id"]: r for r in rows}
    assert "absent" in by_student and by_student["absent"]["submitted"] == "no"
    assert by_student["absent"]["total"] == 0.0
    assert by_student["correct"]["first_name"] == "Correct"
    for student, expected in graded.expected.items():
        row = by_student[student]
        for name in graded.tree.sources:
            for gid, score in graded.scores(student, name).items():
                label = next(c for c in columns if c.startswith(f"{name}:{gid} /"))
                assert row[label] == score, (student, name, gid)
        assert row["total"] == pytest.approx(sum(expected.values()))
        assert row["max_score"] == pytest.approx(sum(sum(p.values()) for p in graded.points.values()))


def test_tampering_gains_no_points(graded):
    for name in graded.tree.sources:
        tampered, partial = graded.scores("tamper", name), graded.scores("partial", name)
        assert all(tampered[t] <= partial[t] for t in partial), (tampered, partial)
        assert graded.scores("tamper", name) == graded.scores("partial", name)
        nb = graded.autograded("tamper", name)
        tests = {grading_meta(c)["grade_id"]: c for c in nb.cells if grading_meta(c).get("grade")}
        assert sorted(tests) == sorted(graded.points[name]), "a deleted test cell was not restored"
        assert all(c.source != "pass" for c in tests.values()), "an edited test cell was not restored"


def test_feedback_has_scores_and_no_hidden_tests(graded):
    tree = graded.tree
    for student in graded.expected:
        for name, source in tree.sources.items():
            page = tree.path("feedback", student, tree.lesson, f"{name}.html")
            text = html_text(page)
            hidden = [x for x in region_lines(source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS") if len(x) >= 10]
            assert [line for line in hidden if line in text] == [], f"{page} shows hidden tests"
            autograded = "\n".join(" ".join(x.split()) for c in graded.autograded(student, name).cells
                                   for x in c.source.split("\n"))
            assert all(line in autograded for line in hidden), "autograde must run the hidden tests"
            visible = [" ".join(x.split()) for c in tree.released[name].cells if grading_meta(c).get("grade")
                       for x in c.source.split("\n") if x.strip()]
            assert visible and all(line in text for line in visible), "the feedback text could not be read"
            assert f"Score: {sum(graded.scores(student, name).values()):.1f}" in text


def test_example_details(graded):
    """What only the example lesson is built to show."""
    if graded.tree.lesson != EXAMPLE:
        pytest.skip("example lesson only")
    assert graded.scores("correct", EXAMPLE) == {k: float(v) for k, v in EXAMPLE_POINTS.items()}
    assert graded.scores("partial", EXAMPLE) == {"test_square": 2.0, "test_mean": 0.0, "test_q1": 1.0, "test_q2": 0.0}
    # a cell that runs too long is interrupted, scores 0, and grading goes on
    looper = graded.scores("looper", EXAMPLE)
    assert looper == {**graded.scores("correct", EXAMPLE), "test_square": 0.0}
    cells = {grading_meta(c).get("grade_id"): c for c in graded.autograded("looper", EXAMPLE).cells}
    assert "CellTimeoutError" in [o.ename for o in cells["test_square"].outputs if o.output_type == "error"]
    # warnings, stderr and progress bars of correct code cost nothing
    assert graded.scores("noisy", EXAMPLE) == graded.scores("correct", EXAMPLE)
    nb = graded.autograded("correct", EXAMPLE)
    outputs = [c.outputs for c in nb.cells if c.cell_type == "code"]
    assert outputs[0][0].text.strip() == "20", "the kernel was not in grading mode"
    widget_views = [o for o in outputs[1] if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widget_views) >= 2 and not any(o.output_type == "error" for o in outputs[1])
    # the explanation of each question reaches the feedback, the right letter only after grading
    text = html_text(graded.tree.path("feedback", "partial", EXAMPLE, f"{EXAMPLE}.html"))
    assert "The answer is C. Perplexity is exp(mean negative log-likelihood)" in text
    assert "AssertionError: not the right answer" in text


# --- every notebook runs top to bottom under nbval -----------------------------------------------------

NBVAL_PLUGIN_DIR = Path(__file__).parent / "nbval_plugin"  # nbval_output_timeout: see its docstring


def run_nbval(tree: Tree, grading: bool, students: bool = True) -> subprocess.CompletedProcess:
    """nbval over the lesson's source notebooks, and its student notebooks when `students`."""
    paths = [*course.lesson_notebooks(tree.lesson, tree.root),
             *(course.lesson_notebooks(tree.lesson, tree.root, "notebooks") if students else [])]
    env = isolated_env(Path(tree.env["HOME"]), grading=grading)
    env["PYTHONPATH"] = str(NBVAL_PLUGIN_DIR)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "nbval_output_timeout",
         "--nbval-lax", "--nbval-current-env",
         "--nbval-cell-timeout=300", f"--nbval-sanitize-with={tree.root / 'course' / 'nbval_sanitize.cfg'}",
         f"--rootdir={tree.root}", *map(str, paths)],
        cwd=tree.root, env=env, capture_output=True, text=True,
    )


def browser_runs_student_notebooks(config) -> bool:
    """Whether this run's browser tests (tests/test_browser.py) run every student notebook in normal mode,
    in JupyterLab from Binder's environment: selected, and able to run here (under CI they must)."""
    return config.stash.get(BROWSER_SELECTED, False) and (browser_available() or bool(os.environ.get("CI")))


@pytest.mark.slow
def test_notebooks_run_top_to_bottom_with_nbval(tree, request):
    # the student notebooks in normal mode: here, or in the browser when the browser tests run (the same
    # notebooks, top to bottom, as students run them; running them twice would cost the suite minutes)
    students = tree.lesson == EXAMPLE or not browser_runs_student_notebooks(request.config)
    result = run_nbval(tree, grading=False, students=students)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def test_nbval_sanitize_file_parses():
    text = (course.ROOT / "course" / "nbval_sanitize.cfg").read_text()
    sections = re.findall(r"^\[(\w+)\]\nregex: (.+)\nreplace: (.+)$", text, flags=re.M)
    assert sections and len(sections) == len(re.findall(r"^\[", text, flags=re.M))
    for _, regex, _ in sections:
        re.compile(regex)


def test_nbgrader_config_finds_the_root_from_its_own_location(tmp_path):
    from traitlets.config.loader import PyFileConfigLoader

    (tmp_path / "course").mkdir()
    config = (course.ROOT / "course" / "nbgrader_config.py").read_bytes()
    (tmp_path / "course" / "nbgrader_config.py").write_bytes(config)
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(tmp_path / "course")).load_config()
    assert cfg.CourseDirectory.root == str(tmp_path)
    assert cfg.CourseDirectory.db_url == f"sqlite:///{tmp_path / 'course' / 'grading' / 'gradebook.db'}?timeout=60"
    assert (cfg.CourseDirectory.source_directory, cfg.CourseDirectory.release_directory) == ("assessments", "notebooks")
    assert cfg.CourseDirectory.autograded_directory.startswith("course/grading/")
    assert "questions.toml" in cfg.CourseDirectory.ignore
    assert "/course/grading/" in (course.ROOT / ".gitignore").read_text().split()


# --- the instructor's commands -------------------------------------------------------------------------

def test_course_command_lists_the_instructor_commands():
    result = subprocess.run([sys.executable, "-m", "course", "--help"], cwd=course.ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in ("release", "questions", "validate", "collect", "autograde", "feedback", "export", "bench"):
        assert command in result.stdout


def test_bench_reports_seconds_and_the_kernels_peak_memory(tmp_path, home, monkeypatch, capsys):
    from course.bench import bench

    for key, value in isolated_env(home).items():
        monkeypatch.setenv(key, value)
    folder = tmp_path / "assessments" / "01_t"
    folder.mkdir(parents=True)
    big = "import os\nimport numpy as np\nx = np.ones(4 * 10**7 if os.environ.get('NBGRADER_EXECUTION') else 8 * 10**7)"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(big)]), folder / "01_t.ipynb")
    assert bench(["01_t"], root=tmp_path) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("assessments/")]
    assert [(r[0], r[1], r[4], r[5]) for r in rows] == [
        ("assessments/01_t/01_t.ipynb", "normal", "0", "ok"), ("assessments/01_t/01_t.ipynb", "grading", "0", "ok")]
    (normal_s, normal_mb), (grading_s, grading_mb) = ((float(r[2]), float(r[3])) for r in rows)
    assert 0 < normal_s < 60 and 0 < grading_s < 60
    assert normal_mb > 600 and 300 < grading_mb < normal_mb - 250  # 640 MB and 320 MB arrays in the kernel
