"""Wrong solutions: plausible mistakes that an exercise's tests must catch.

`assessments/<lesson>/wrong_solutions.toml` (instructor-only, never released) holds, for every exercise
of the lesson, at least `MIN_PER_EXERCISE` wrong answers, one `[[wrong]]` table each::

    [[wrong]]
    exercise = "ex_cross_entropy"        # grade_id of the answer cell it replaces
    name = "one global maximum"
    mistake = "subtracts the largest logit of the whole batch, so a row far below it underflows"
    code = '''
    def cross_entropy(logits, targets):
        ...
    '''

:func:`check_notebook` runs a source notebook in grading mode in one kernel. At each exercise's answer
cell it runs every wrong answer of that exercise, then the exercise's test cells (visible and hidden
tests, then the visible part alone), and records which cells fail; then it runs the real answer and goes
on. A wrong answer is *caught* when at least one test cell fails on it. `python -m course wrong LESSON`
prints the table.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

MIN_PER_EXERCISE = 3
FILE = "wrong_solutions.toml"
FIELDS = {"exercise", "name", "mistake", "code"}
HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[ \t]*\n?", re.M | re.S)


@dataclass(frozen=True)
class Wrong:
    """One wrong answer to the exercise whose answer cell has grade_id `exercise`."""

    exercise: str
    name: str
    mistake: str
    code: str


@dataclass
class Outcome:
    """What the tests of an exercise said about one wrong answer."""

    wrong: Wrong
    failed: dict[str, str] = field(default_factory=dict)  # test cell grade_id -> error (visible + hidden)
    failed_visible: dict[str, str] = field(default_factory=dict)  # the same, visible tests alone

    @property
    def caught(self) -> bool:
        return bool(self.failed)


def load_wrong(path: str | Path) -> list[Wrong]:
    """Read and check a wrong_solutions.toml; returns its entries in file order."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    if set(data) - {"wrong"}:
        raise ValueError(f"{path}: unknown top-level keys {sorted(set(data) - {'wrong'})}; write [[wrong]] tables")
    out: list[Wrong] = []
    seen: set[tuple[str, str]] = set()
    for number, entry in enumerate(data.get("wrong", []), start=1):
        where = f"{path}: wrong solution {number}"
        if set(entry) != FIELDS:
            raise ValueError(f"{where}: needs exactly the keys {sorted(FIELDS)}, got {sorted(entry)}")
        if not all(isinstance(entry[k], str) and entry[k].strip() for k in FIELDS):
            raise ValueError(f"{where}: every field must be a non-empty string")
        key = (entry["exercise"], entry["name"])
        if key in seen:
            raise ValueError(f"{where}: {entry['exercise']} has two wrong solutions named {entry['name']!r}")
        seen.add(key)
        try:
            compile(entry["code"], f"{where} ({entry['name']})", "exec")
        except SyntaxError as err:
            raise ValueError(f"{where} ({entry['name']}): the code does not parse: {err}") from None
        out.append(Wrong(entry["exercise"], entry["name"].strip(), entry["mistake"].strip(), entry["code"]))
    return out


def _grading(cell: nbformat.NotebookNode) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def exercises(nb: nbformat.NotebookNode) -> dict[str, tuple[int, list[int]]]:
    """grade_id of each exercise's answer cell -> (its index, indices of the test cells right after it).

    Concept questions are not exercises (their wrong answers are the other letters).
    """
    found: dict[str, tuple[int, list[int]]] = {}
    for index, cell in enumerate(nb.cells):
        meta = _grading(cell)
        if not meta.get("solution") or cell.cell_type != "code" or cell.metadata.get("course", {}).get("question"):
            continue
        tests = []
        for later in range(index + 1, len(nb.cells)):
            if not _grading(nb.cells[later]).get("grade"):
                break
            tests.append(later)
        found[meta["grade_id"]] = (index, tests)
    return found


def visible_part(source: str) -> str:
    """A test cell as students see it: the hidden tests cut out."""
    return HIDDEN.sub("", source)


def check_notebook(path: str | Path, wrongs: list[Wrong], timeout: int = 120) -> list[Outcome]:
    """Run the source notebook `path` in grading mode, trying `wrongs` at their exercises (module docstring).

    Raises RuntimeError if a wrong answer's own code fails to run (a fixture must define its function) or
    if the notebook itself fails.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    by_exercise: dict[str, list[Wrong]] = {}
    for w in wrongs:
        by_exercise.setdefault(w.exercise, []).append(w)
    found = exercises(nb)
    # the client writes each executed cell into its notebook's cell list: give it a copy to scribble on
    client = NotebookClient(copy.deepcopy(nb), timeout=timeout, kernel_name="python3", interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(path.parent)}})  # fmt: skip
    env = {**os.environ, "NBGRADER_EXECUTION": "autograde", "MPLBACKEND": "agg"}
    outcomes: list[Outcome] = []

    def run(source: str, index: int) -> str | None:
        """Run `source` in the kernel; returns None, or the error it raised."""
        cell = nbformat.v4.new_code_cell(source)
        try:
            client.execute_cell(cell, index)
        except CellExecutionError as err:
            return f"{err.ename}: {err.evalue}".strip()
        return None

    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            meta = _grading(cell)
            if cell.cell_type == "code" and meta.get("grade_id") in by_exercise:
                _, tests = found[meta["grade_id"]]
                for w in by_exercise[meta["grade_id"]]:
                    error = run(w.code, index)
                    if error is not None:
                        what = f"{path.name}: wrong solution {w.name!r} of {w.exercise}"
                        raise RuntimeError(f"{what} fails to run: {error}")
                    outcome = Outcome(w)
                    for t in tests:
                        test = nb.cells[t]
                        tid = _grading(test)["grade_id"]
                        if (error := run(test.source, t)) is not None:
                            outcome.failed[tid] = error
                        if (error := run(visible_part(test.source), t)) is not None:
                            outcome.failed_visible[tid] = error
                    outcomes.append(outcome)
            if cell.cell_type == "code":
                error = run(cell.source, index)
                if error is not None:
                    raise RuntimeError(f"{path.name}: cell {index} fails with the real solutions: {error}")
    return outcomes


def lesson_problems(lesson_dir: str | Path) -> list[str]:
    """What is missing from a lesson's wrong solutions, without running anything (empty when complete)."""
    lesson_dir = Path(lesson_dir)
    ids = {gid for p in sorted(lesson_dir.glob("*.ipynb")) for gid in exercises(nbformat.read(p, as_version=4))}
    toml = lesson_dir / FILE
    if not ids:
        return []
    if not toml.is_file():
        return [f"{toml} is missing: write at least {MIN_PER_EXERCISE} wrong solutions for each of {sorted(ids)}"]
    wrongs = load_wrong(toml)
    problems = [f"{w.exercise} (wrong solution {w.name!r}) is no exercise of this lesson; exercises: {sorted(ids)}"
                for w in wrongs if w.exercise not in ids]  # fmt: skip
    for gid in sorted(ids):
        n = sum(w.exercise == gid for w in wrongs)
        if n < MIN_PER_EXERCISE:
            problems.append(f"{gid} has {n} wrong solutions; write at least {MIN_PER_EXERCISE}")
    return problems


def check_lesson(lesson_dir: str | Path) -> list[Outcome]:
    """Every wrong solution of a lesson, tried in its notebook (see :func:`check_notebook`)."""
    lesson_dir = Path(lesson_dir)
    wrongs = load_wrong(lesson_dir / FILE)
    outcomes = []
    for path in sorted(lesson_dir.glob("*.ipynb")):
        ids = exercises(nbformat.read(path, as_version=4))
        mine = [w for w in wrongs if w.exercise in ids]
        if mine:
            outcomes += check_notebook(path, mine)
    return outcomes


def report(outcomes: list[Outcome]) -> str:
    """A table: each wrong solution, whether it is caught, and by which test cells."""
    lines = []
    for o in outcomes:
        verdict = "caught" if o.caught else "NOT CAUGHT"
        by = ", ".join(o.failed) or "-"
        visible = ("visible tests too" if o.failed_visible else "hidden tests only") if o.caught else "-"
        lines.append(f"  {verdict:10}  {o.wrong.exercise:24} {o.wrong.name:40} by {by} ({visible})")
    caught = sum(o.caught for o in outcomes)
    visible = sum(bool(o.failed_visible) for o in outcomes)
    lines.append(f"{caught} of {len(outcomes)} wrong solutions caught ({visible} already by the visible tests)")
    return "\n".join(lines)
