"""Concept questions: `assessments/<lesson>/questions.toml` -> autograded multiple-choice cells.

An author writes the questions in TOML and marks where they go with a markdown cell in any source
notebook of the lesson folder that contains `<!-- questions: q1 q2 -->`. `render_lesson` puts three
cells after each marker, one group per listed question, replacing the ones a previous run put there:

1. a locked markdown cell with the question and its options;
2. the answer cell `answer_<id> = ...`: a solution cell; students see `answer_<id> = ""`;
3. a locked test cell worth the question's points: a visible check that the answer is one of the
   letters, and hidden tests that print the explanation and why each other option is wrong (students
   read it in their feedback) and check the answer.

Rendering again with the same TOML changes nothing. Before writing anything, the renderer refuses a
lesson whose answers a test-wise student could guess without the content (:func:`cue_problems`: the
correct option is the longest too often, one letter is the answer too often, or an option's length
gives its question away). ``variant`` (a seed) renders a private variant: each question's options are
permuted (:func:`permute`), answer letters spread evenly; variant 0 is the order of the TOML.

The cells carry `metadata.course.question`, which is how a later run finds them; `metadata.course.stub` is
what `StudentVersion` in nbgrader_config.py shows students instead of nbgrader's `raise NotImplementedError()`.
"""

from __future__ import annotations

import math
import random
import re
import string
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat

MARKER = re.compile(r"<!--\s*questions:([^>]*?)-->")
ID = re.compile(r"[a-z][a-z0-9_]{0,30}")
FIELDS = {"id", "concept", "text", "options", "answer", "points", "explanation", "why_not"}
# A letter named in an explanation would be wrong in a variant, whose options are permuted.
LETTER_REFERENCE = re.compile(r"\b(?:[Oo]ptions?|[Aa]nswers?|[Cc]hoices?|[Ll]etters?)\s+\(?[A-Z]\b|\([A-Z]\)")

# The rules of cue_problems (course/authoring.md, "Concept questions"):
LONGEST_SHARE = 1 / 3  # the correct option is the longest (ties included) in at most this share of questions
LETTER_SHARE = 0.4  # one letter is the answer of at most this share of questions
# The correct option's length, over the mean length of the question's other options, lies in this range
LENGTH_RATIO = (2 / 3, 3 / 2)
SHORT_OPTIONS = 16  # ... unless every option of the question is at most this many characters (numbers, names)


@dataclass(frozen=True)
class Question:
    """One multiple-choice question; `options` maps "A", "B", ... to their text, in order."""

    id: str
    concept: str
    text: str
    options: dict[str, str]
    answer: str
    points: float
    explanation: str  # why the answer is right
    why_not: dict[str, str]  # each other letter -> the misconception it holds and why it fails

    @property
    def variable(self) -> str:
        return f"answer_{self.id}"

    def length_ratio(self) -> float:
        """Length of the correct option over the mean length of the others (characters)."""
        others = [len(v) for k, v in self.options.items() if k != self.answer]
        return len(self.options[self.answer]) / (sum(others) / len(others))

    def is_longest(self) -> bool:
        """Whether the correct option is at least as long as every other option."""
        return len(self.options[self.answer]) >= max(len(v) for v in self.options.values())


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
    why_not = entry["why_not"]
    wrong = [k for k in letters if k != entry["answer"]]
    if not isinstance(why_not, dict) or sorted(why_not) != wrong:
        raise ValueError(
            f"{where}: why_not must be a table with one entry for each wrong option, keys {wrong}: "
            "the misconception each one holds and why it fails"
        )
    if not all(isinstance(v, str) and v.strip() for v in why_not.values()):
        raise ValueError(f"{where}: every why_not entry must be a non-empty string")
    for key, value in [("explanation", entry["explanation"]), *((f"why_not.{k}", v) for k, v in why_not.items())]:
        found = LETTER_REFERENCE.search(value)
        if found:
            raise ValueError(
                f"{where}: {key} names an option by its letter ({found.group(0)!r}); variants permute the "
                "letters, so refer to an option by what it says"
            )
    return Question(
        id=qid,
        concept=entry["concept"].strip(),
        text=entry["text"].strip(),
        options={k: v.strip() for k, v in options.items()},
        answer=entry["answer"],
        points=points,
        explanation=entry["explanation"].strip(),
        why_not={k: why_not[k].strip() for k in wrong},
    )


def cue_problems(questions: dict[str, Question]) -> list[str]:
    """What would let a student score without the content; empty when the lesson is fair.

    - the correct option is the longest (ties included) in more than a third of the questions (at least
      one allowed): "pick the longest" must not pay;
    - one letter is the answer of more than 40% of the questions (at least one allowed);
    - in a question, the correct option is more than 3/2 or less than 2/3 of the mean length of the other
      options, unless every option has at most 16 characters (numbers, names, short formulas).
    """
    qs = list(questions.values())
    if not qs:
        return []
    problems = []
    longest = [q.id for q in qs if q.is_longest()]
    allowed = max(1, math.floor(LONGEST_SHARE * len(qs)))
    if len(longest) > allowed:
        problems.append(
            f"the correct option is the longest in {len(longest)} of {len(qs)} questions ({', '.join(longest)}); "
            f"at most {allowed} allowed (a third): shorten those answers or lengthen their distractors"
        )
    counts: dict[str, list[str]] = {}
    for q in qs:
        counts.setdefault(q.answer, []).append(q.id)
    allowed = max(1, math.floor(LETTER_SHARE * len(qs)))
    for letter, ids in sorted(counts.items()):
        if len(ids) > allowed:
            problems.append(
                f"{letter} is the answer of {len(ids)} of {len(qs)} questions ({', '.join(ids)}); at most "
                f"{allowed} allowed (40%): move some answers to other letters"
            )
    lo, hi = LENGTH_RATIO
    for q in qs:
        if max(len(v) for v in q.options.values()) <= SHORT_OPTIONS:
            continue
        ratio = q.length_ratio()
        if not lo <= ratio <= hi:
            problems.append(
                f"{q.id}: the correct option is {ratio:.2f} times the mean length of the others (allowed "
                f"{lo:.2f} to {hi:.2f}): its length gives it away"
            )
    return problems


def cue_report(questions: dict[str, Question]) -> str:
    """One line: how often the correct option is the longest, and how often each letter is the answer."""
    qs = list(questions.values())
    longest = sum(q.is_longest() for q in qs)
    letters = sorted({k for q in qs for k in q.options})
    counts = ", ".join(f"{k} {sum(q.answer == k for q in qs)}" for k in letters)
    share = f" ({longest / len(qs):.0%})" if qs else ""
    return f"{len(qs)} questions; the correct option is the longest in {longest}{share}; answers: {counts}"


def check_cues(questions: dict[str, Question], where: str) -> None:
    """Raise a ValueError listing every problem of :func:`cue_problems`."""
    problems = cue_problems(questions)
    if problems:
        raise ValueError(f"{where}: a student could guess answers without the content:\n- " + "\n- ".join(problems))


def permute(questions: dict[str, Question], variant: int) -> dict[str, Question]:
    """A private variant: each question's options in a new order, seeded by ``variant`` (0: unchanged).

    Answer letters are spread evenly: each question's answer goes to one of the letters that has been the
    answer least often so far (chosen at random among them), and the other options fill the other
    letters in random order. The explanations name no letters, so they stay true.
    """
    if isinstance(variant, bool) or not isinstance(variant, int) or variant < 0:
        raise ValueError(f"variant must be an integer >= 0 (0 is the order of questions.toml), got {variant!r}")
    if variant == 0:
        return dict(questions)
    rng = random.Random(f"lmlab-course-variant-{variant}")
    used: dict[str, int] = {}
    out = {}
    for qid, q in questions.items():
        letters = list(q.options)
        fewest = min(used.get(k, 0) for k in letters)
        target = rng.choice([k for k in letters if used.get(k, 0) == fewest])
        used[target] = used.get(target, 0) + 1
        others = [k for k in letters if k != q.answer]
        rng.shuffle(others)
        old_for = dict(zip([k for k in letters if k != target], others, strict=True))
        old_for[target] = q.answer  # new letter -> old letter
        options = {new: q.options[old_for[new]] for new in letters}
        why_not = {new: q.why_not[old_for[new]] for new in letters if new != target}
        out[qid] = replace(q, options=options, answer=target, why_not=why_not)
    return out


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
    feedback = f"The answer is {q.answer}. {q.explanation}" + "".join(
        f"\nNot {k}: {why}" for k, why in q.why_not.items()
    )
    test = (
        f"# Checks that {q.variable} is one of the letters; whether it is right is checked when graded.\n"
        "### BEGIN HIDDEN TESTS\n"
        f"print({feedback!r})\n"
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


def render_lesson(lesson_dir: str | Path, check: bool = False, variant: int = 0) -> list[Path]:
    """Render `questions.toml` into the notebooks of a lesson folder; returns the notebooks that changed.

    Every question must be placed by exactly one marker, and the lesson must pass :func:`cue_problems`
    (nothing is written otherwise). ``variant`` permutes the options (:func:`permute`). With `check=True`
    nothing is written.
    """
    lesson_dir = Path(lesson_dir)
    toml = lesson_dir / "questions.toml"
    if not toml.is_file():
        raise FileNotFoundError(f"{toml} does not exist; write the lesson's questions there first")
    questions = load_questions(toml)
    check_cues(questions, str(toml))
    questions = permute(questions, variant)
    check_cues(questions, f"{toml} (variant {variant})")
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
            changed.append((path, new_text))
    unplaced = [qid for qid in questions if qid not in placed]
    if unplaced:
        raise ValueError(
            f"questions {unplaced} are in {toml.name} but no notebook has a marker for them; "
            f"add a markdown cell with <!-- questions: {' '.join(unplaced)} -->"
        )
    if not check:  # only once every question has found its place
        for path, new_text in changed:
            path.write_text(new_text, encoding="utf-8")
    return [path for path, _ in changed]


def _course(cell: nbformat.NotebookNode) -> dict:
    return cell.get("metadata", {}).get("course", {})
