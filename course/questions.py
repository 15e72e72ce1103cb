"""Concept questions: `assessments/<lesson>/questions.toml` -> autograded multiple-choice cells.

An author writes the questions in TOML and marks where they go with a markdown cell in any source
notebook of the lesson folder that contains `<!-- questions: q1 q2 -->`. `render_lesson` puts three
cells after each marker, one group per listed question, replacing the ones a previous run put there:

1. a locked markdown cell with the question and its options;
2. the answer cell `answer_<id> = ...`: a solution cell; students see `answer_<id> = ""`;
3. a locked test cell worth the question's points: a visible check that the answer is one of the
   letters, and hidden tests that print the explanation (students read it in their feedback) and
   check the answer.

Rendering again with the same TOML changes nothing. The cells carry `metadata.course.question`, which
is how a later run finds them; `metadata.course.stub` is what `StudentVersion` in nbgrader_config.py
shows students instead of nbgrader's `raise NotImplementedError()`.
"""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

import nbformat

MARKER = re.compile(r"<!--\s*questions:([^>]*?)-->")
ID = re.compile(r"[a-z][a-z0-9_]{0,30}")
FIELDS = {"id", "concept", "text", "options", "answer", "points", "explanation"}


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; `options` maps "A", "B", ... to their text, in order."""

    id: str
    concept: str
    text: str
    options: dict[str, str]
    answer: str
    points: float
    explanation: str

    @property
    def variable(self) -> str:
        return f"answer_{self.id}"


def load_questions(path: str | Path) -> dict[str, Question]:
    """Read and check a questions.toml file; returns the questions by id, in file order."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    unknown = set(data) - {"question"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; write each question as [[question]]")
    questions: dict[str, Question] = {}
    for number, entry in enumerate(data.get("question", []), start=1):
        q = _parse(entry, f"{path}: question {number}")
        if q.id in questions:
            raise ValueError(f"{path}: question id {q.id!r} is used twice")
        questions[q.id] = q
    return questions


def _parse(entry: dict, where: str) -> Question:
    missing = FIELDS - set(entry)
    if missing:
        raise ValueError(f"{where}: missing {sorted(missing)}; each question needs {sorted(FIELDS)}")
    extra = set(entry) - FIELDS
    if extra:
        raise ValueError(f"{where}: unknown keys {sorted(extra)}; allowed are {sorted(FIELDS)}")
    qid = entry["id"]
    if not isinstance(qid, str) or not ID.fullmatch(qid):
        raise ValueError(f"{where}: id {qid!r} must be lowercase letters, digits and _, starting with a letter")
    where = f"{where} ({qid})"
    for key in ("concept", "text", "explanation", "answer"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise ValueError(f"{where}: {key} must be a non-empty string")
    options = entry["options"]
    letters = list(string.ascii_uppercase[: len(options)]) if isinstance(options, dict) else []
    if not isinstance(options, dict) or len(options) < 2 or list(options) != letters:
        raise ValueError(f"{where}: options must be a table with keys A, B, C, ... in order (at least A and B)")
    if not all(isinstance(v, str) and v.strip() for v in options.values()):
        raise ValueError(f"{where}: every option must be a non-empty string")
    if entry["answer"] not in options:
        raise ValueError(f"{where}: answer {entry['answer']!r} is not one of the options {letters}")
    points = entry["points"]
    if isinstance(points, bool) or not isinstance(points, int | float) or points <= 0:
        raise ValueError(f"{where}: points must be a positive number, got {points!r}")
    return Question(
        id=qid,
        concept=entry["concept"].strip(),
        text=entry["text"].strip(),
        options={k: v.strip() for k, v in options.items()},
        answer=entry["answer"],
        points=points,
        explanation=entry["explanation"].strip(),
    )


def markers(nb: nbformat.NotebookNode) -> list[tuple[int, list[str]]]:
    """(cell index, question ids) of every marker cell of a notebook."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and _course(cell).get("question") is None:
            for match in MARKER.finditer(cell.source):
                found.append((index, match.group(1).split()))
    return found


def question_cells(q: Question, with_ids: bool = True) -> list[nbformat.NotebookNode]:
    """The three cells of a question (see the module docstring)."""
    letters = ", ".join(f'"{k}"' for k in q.options)
    plural = "" if q.points == 1 else "s"
    options = "\n".join(f"- **{k}.** {v}" for k, v in q.options.items())
    text = (
        f"**Question {q.id}** · {q.concept} · {q.points:g} point{plural}\n\n{q.text}\n\n{options}\n\n"
        f'Answer in the next cell: set `{q.variable}` to one letter, for example `{q.variable} = "A"`.'
    )
    answer = f'### BEGIN SOLUTION\n{q.variable} = "{q.answer}"\n### END SOLUTION'
    test = (
        f"# Checks that {q.variable} is one of the letters; whether it is right is checked when graded.\n"
        "### BEGIN HIDDEN TESTS\n"
        f"print({f'The answer is {q.answer}. {q.explanation}'!r})\n"
        "### END HIDDEN TESTS\n"
        f"assert {q.variable} in ({letters}), 'set {q.variable} to one of {letters}'\n"
        "### BEGIN HIDDEN TESTS\n"
        f'assert type({q.variable}) is str and {q.variable} == "{q.answer}", "not the right answer"\n'
        "### END HIDDEN TESTS"
    )

    def grading(kind: str, grade: bool, solution: bool, locked: bool) -> dict:
        meta = {"grade": grade, "grade_id": f"{kind}_{q.id}", "locked": locked, "schema_version": 3,
                "solution": solution, "task": False}
        if grade:
            meta["points"] = q.points
        return meta

    cells = [
        nbformat.NotebookNode(cell_type="markdown", source=text, metadata={
            "course": {"question": q.id}, "nbgrader": grading("question", False, False, True)}),
        nbformat.NotebookNode(cell_type="code", source=answer, execution_count=None, outputs=[], metadata={
            "course": {"question": q.id, "stub": f'{q.variable} = ""  # one of {letters}'},
            "nbgrader": grading("answer", False, True, False)}),
        nbformat.NotebookNode(cell_type="code", source=test, execution_count=None, outputs=[], metadata={
            "course": {"question": q.id}, "nbgrader": grading("test", True, False, True)}),
    ]
    if with_ids:
        for cell, kind in zip(cells, ("question", "answer", "test"), strict=True):
            cell["id"] = f"{kind}-{q.id}".replace("_", "-")
    return cells


def render(nb: nbformat.NotebookNode, questions: dict[str, Question]) -> list[str]:
    """Replace the question cells of `nb` (in place) by fresh ones after each marker; returns the ids placed."""
    nb.cells = [cell for cell in nb.cells if _course(cell).get("question") is None]
    placed: list[str] = []
    own_ids = {f"{kind}_{qid}" for qid in questions for kind in ("question", "answer", "test")}
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in own_ids:
            raise ValueError(f"grade_id {grade_id!r} belongs to the question cells; rename that cell's grade_id")
    with_ids = (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    for index, ids in reversed(markers(nb)):
        unknown = [qid for qid in ids if qid not in questions]
        if unknown:
            raise ValueError(f"marker in cell {index} names {unknown}, which questions.toml does not define")
        new = [cell for qid in ids for cell in question_cells(questions[qid], with_ids)]
        nb.cells[index + 1 : index + 1] = new
        placed = ids + placed
    return placed


def render_lesson(lesson_dir: str | Path, check: bool = False) -> list[Path]:
    """Render `questions.toml` into the notebooks of a lesson folder; returns the notebooks that changed.

    Every question must be placed by exactly one marker. With `check=True` nothing is written.
    """
    lesson_dir = Path(lesson_dir)
    toml = lesson_dir / "questions.toml"
    if not toml.is_file():
        raise FileNotFoundError(f"{toml} does not exist; write the lesson's questions there first")
    questions = load_questions(toml)
    placed: dict[str, Path] = {}
    changed = []
    for path in sorted(lesson_dir.glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        nb = nbformat.reads(text, as_version=4)
        for qid in render(nb, questions):
            if qid in placed:
                raise ValueError(f"question {qid!r} is placed twice: in {placed[qid].name} and {path.name}")
            placed[qid] = path
        new_text = nbformat.writes(nb) + "\n"
        if new_text != text:
            changed.append(path)
            if not check:
                path.write_text(new_text, encoding="utf-8")
    unplaced = [qid for qid in questions if qid not in placed]
    if unplaced:
        raise ValueError(
            f"questions {unplaced} are in {toml.name} but no notebook has a marker for them; "
            f"add a markdown cell with <!-- questions: {' '.join(unplaced)} -->"
        )
    return changed


def _course(cell: nbformat.NotebookNode) -> dict:
    return cell.get("metadata", {}).get("course", {})
