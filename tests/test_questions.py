"""course.questions: questions.toml -> autograded multiple-choice cells, placed at marker cells."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import re
import textwrap

import nbformat
import pytest
import torch
from _course_support import EXAMPLE_QUESTIONS

import course
from course.__main__ import main, questions
from course.questions import (
    Question,
    cue_problems,
    cue_report,
    load_questions,
    permute,
    question_cells,
    render,
    render_lesson,
)
from lmlab.grading import VARIANT_VARIABLE, course_variant, variant_generator, variant_seed

LESSONS_WITH_QUESTIONS = [
    name for name in course.lessons() if (course.ROOT / "assessments" / name / "questions.toml").is_file()
]

ONE = """
[[question]]
id = "q1"
concept = "perplexity"
points = 1
text = "Which?"
answer = "B"
explanation = "Because."

[question.options]
A = "this"
B = "that"

[question.why_not]
A = "Not this."
"""


# EXAMPLE_QUESTIONS with q1's answer moved from C to D (and its why_not with it)
ANSWER_D = EXAMPLE_QUESTIONS.replace('answer = "C"', 'answer = "D"').replace('D = "log 4 is', 'C = "log 4 is')


def notebook(*sources: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(s) for s in sources])


def lesson(tmp_path, toml: str, *notebooks: tuple[str, nbformat.NotebookNode]):
    (tmp_path / "questions.toml").write_text(textwrap.dedent(toml))
    for name, nb in notebooks:
        nbformat.write(nb, tmp_path / name)
    return tmp_path


def test_load_questions_reads_every_field(tmp_path):
    path = tmp_path / "questions.toml"
    path.write_text(EXAMPLE_QUESTIONS)
    questions = load_questions(path)
    assert list(questions) == ["q1", "q2"]
    q1, q2 = questions.values()
    assert (q1.concept, q1.answer, q1.points, q1.variable) == ("perplexity", "C", 1, "answer_q1")
    assert list(q1.options) == ["A", "B", "C", "D"] and q1.options["C"] == "4"
    assert list(q2.options) == ["A", "B", "C"] and q2.points == 2
    assert q1.explanation.startswith("Perplexity is")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("answer = \"B\"", "answer = \"E\""), "not one of the options"),
        (("answer = \"B\"", "answer = \"b\""), "not one of the options"),
        (("B = \"that\"", "C = \"that\""), "keys A, B, C"),
        (("points = 1", "points = 0"), "positive number"),
        (("points = 1", "points = true"), "positive number"),
        (("id = \"q1\"", "id = \"Q 1\""), "lowercase letters"),
        (("id = \"q1\"", "id = \"1q\""), "lowercase letters"),
        (("explanation = \"Because.\"", "explanation = \"  \""), "explanation must be a non-empty string"),
        (("concept = \"perplexity\"\n", ""), "missing ['concept']"),
        (("text = \"Which?\"", "text = \"Which?\"\nhint = \"no\""), "unknown keys ['hint']"),
        (("[[question]]", "[[questions]]"), "unknown top-level keys"),
        (("[[question]]", "[[question"), "not valid TOML"),
    ],
)
def test_load_questions_rejects_bad_input_with_a_reason(tmp_path, change, message):
    path = tmp_path / "questions.toml"
    path.write_text(ONE.replace(*change))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_questions(path)


def test_load_questions_rejects_a_repeated_id(tmp_path):
    path = tmp_path / "questions.toml"
    path.write_text(ONE + ONE)
    with pytest.raises(ValueError, match="used twice"):
        load_questions(path)


def test_question_cells_are_nbgrader_cells_with_points_and_hidden_answer(tmp_path):
    path = tmp_path / "questions.toml"
    path.write_text(EXAMPLE_QUESTIONS)
    q2 = load_questions(path)["q2"]
    markdown, answer, test = question_cells(q2)
    assert markdown.cell_type == "markdown" and "**A.** The mean negative" in markdown.source
    assert markdown.metadata["nbgrader"]["locked"] and not markdown.metadata["nbgrader"]["grade"]
    assert answer.metadata["nbgrader"]["solution"] and not answer.metadata["nbgrader"]["grade"]
    assert answer.source == '### BEGIN SOLUTION\nanswer_q2 = "A"\n### END SOLUTION'
    assert answer.metadata["course"]["stub"] == 'answer_q2 = ""  # one of "A", "B", "C"'
    grading = test.metadata["nbgrader"]
    assert grading["grade"] and grading["locked"] and grading["points"] == 2
    visible, hidden = test.source.split("### BEGIN HIDDEN TESTS\nassert")
    assert "answer_q2 in (\"A\", \"B\", \"C\")" in visible
    assert "== \"A\"" in hidden and "== \"A\"" not in visible
    assert [c.id for c in (markdown, answer, test)] == ["question-q2", "answer-q2", "test-q2"]
    for cell in (markdown, answer, test):
        nbformat.validate(nbformat.v4.new_notebook(cells=[cell]))


def test_the_cells_grade_an_answer(tmp_path):
    """Run the answer and test cells as Python: right answer passes, wrong or malformed answers fail."""
    path = tmp_path / "questions.toml"
    path.write_text(ONE)
    _, answer, test = question_cells(load_questions(path)["q1"])
    exec(answer.source, scope := {})
    exec(test.source, scope)
    for wrong in ('"A"', '"b"', '""', "2", '"AB"'):
        with pytest.raises(AssertionError):
            exec(test.source, {"answer_q1": eval(wrong)})

    class Cheat(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    with pytest.raises(AssertionError):
        exec(test.source, {"answer_q1": Cheat("A")})


def test_render_places_questions_after_their_markers_and_is_idempotent(tmp_path):
    nb = notebook("# Lesson", "Check:\n<!-- questions: q2 -->", "middle", "<!-- questions: q1 -->", "end")
    folder = lesson(tmp_path, EXAMPLE_QUESTIONS, ("lesson.ipynb", nb))
    assert render_lesson(folder) == [folder / "lesson.ipynb"]
    rendered = nbformat.read(folder / "lesson.ipynb", 4)
    kinds = [(c.metadata.get("course", {}).get("question"), c.cell_type) for c in rendered.cells]
    assert kinds == [
        (None, "markdown"), (None, "markdown"), ("q2", "markdown"), ("q2", "code"), ("q2", "code"),
        (None, "markdown"), (None, "markdown"), ("q1", "markdown"), ("q1", "code"), ("q1", "code"), (None, "markdown"),
    ]
    before = (folder / "lesson.ipynb").read_bytes()
    assert render_lesson(folder) == []
    assert (folder / "lesson.ipynb").read_bytes() == before


def test_render_follows_edits_of_the_toml_and_moved_markers(tmp_path):
    nb = notebook("<!-- questions: q1 -->", "later")
    folder = lesson(tmp_path, EXAMPLE_QUESTIONS.replace("<!-- questions: q1 -->", ""), ("a.ipynb", nb))
    (folder / "b.ipynb").write_text(nbformat.writes(notebook("<!-- questions: q2 -->")))
    render_lesson(folder)
    (folder / "questions.toml").write_text(ANSWER_D)
    a = nbformat.read(folder / "a.ipynb", 4)
    a.cells[-1].source = "later\n<!-- questions: q1 -->"  # the author moves the marker
    a.cells[0].source = "first"
    nbformat.write(a, folder / "a.ipynb")
    assert render_lesson(folder, check=True) == [folder / "a.ipynb"]
    assert nbformat.read(folder / "a.ipynb", 4) == a, "check=True must not write"
    render_lesson(folder)
    cells = nbformat.read(folder / "a.ipynb", 4).cells
    assert [c.source.split("\n")[0] for c in cells[:2]] == ["first", "later"]
    assert 'answer_q1 = "D"' in cells[3].source and len(cells) == 5


def test_render_refuses_what_it_cannot_place(tmp_path):
    folder = lesson(tmp_path, EXAMPLE_QUESTIONS, ("a.ipynb", notebook("<!-- questions: q1 q3 -->")))
    with pytest.raises(ValueError, match=r"names \['q3'\]"):
        render_lesson(folder)
    (folder / "a.ipynb").write_text(nbformat.writes(notebook("<!-- questions: q1 -->")))
    with pytest.raises(ValueError, match=r"\['q2'\] are in questions.toml but no notebook has a marker"):
        render_lesson(folder)
    (folder / "b.ipynb").write_text(nbformat.writes(notebook("<!-- questions: q1 q2 -->")))
    with pytest.raises(ValueError, match="placed twice"):
        render_lesson(folder)
    with pytest.raises(FileNotFoundError, match="questions.toml"):
        render_lesson(tmp_path / "nowhere")


def test_render_refuses_a_grade_id_of_its_own(tmp_path):
    nb = notebook("<!-- questions: q1 q2 -->")
    nb.cells.append(nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {"grade_id": "answer_q1"}}))
    with pytest.raises(ValueError, match="grade_id 'answer_q1'"):
        render(nb, load_questions(lesson(tmp_path, EXAMPLE_QUESTIONS) / "questions.toml"))


def test_questions_command_checks_and_renders(tmp_path, capsys):
    folder = tmp_path / "assessments" / "01_x"
    folder.mkdir(parents=True)
    lesson(folder, EXAMPLE_QUESTIONS, ("01_x.ipynb", notebook("<!-- questions: q1 q2 -->")))
    assert questions("01_x", check=True, root=tmp_path) == 1
    assert "out of date: assessments/01_x/01_x.ipynb" in capsys.readouterr().out
    assert questions("01_x", check=False, root=tmp_path) == 0
    assert questions("01_x", check=True, root=tmp_path) == 0
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no lesson '02_y'"):
        main(["questions", "02_y"])
    (folder / "questions.toml").write_text(EXAMPLE_QUESTIONS.replace('answer = "C"', 'answer = "E"'))
    assert questions("01_x", check=False, root=tmp_path) == 1
    assert "answer 'E' is not one of the options" in capsys.readouterr().err


@pytest.mark.skipif(not LESSONS_WITH_QUESTIONS, reason="no lesson has a questions.toml yet")
@pytest.mark.parametrize("name", LESSONS_WITH_QUESTIONS)
def test_lesson_question_cells_are_up_to_date(name):
    changed = render_lesson(course.ROOT / "assessments" / name, check=True, variant=course_variant())
    assert changed == [], f"run `python -m course questions {name}` and then `python -m course release {name}`"


# --- why each option is wrong -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[question.why_not]\nA = \"Not this.\"\n", ""), "missing \\['why_not'\\]"),
        (("A = \"Not this.\"", "B = \"Not that.\""), "one entry for each wrong option, keys \\['A'\\]"),
        (("A = \"Not this.\"", "A = \"Not this.\"\nC = \"extra\""), "one entry for each wrong option"),
        (("A = \"Not this.\"", "A = \" \""), "every why_not entry must be a non-empty string"),
        (("A = \"Not this.\"", "A = \"Unlike option B, this ...\""), "names an option by its letter"),
        (("explanation = \"Because.\"", "explanation = \"(B) is right.\""), "names an option by its letter"),
    ],
)
def test_every_wrong_option_is_explained_without_naming_letters(tmp_path, change, message):
    path = tmp_path / "questions.toml"
    assert change[0] in ONE
    path.write_text(ONE.replace(*change))
    with pytest.raises(ValueError, match=message):
        load_questions(path)


def test_feedback_explains_the_answer_and_each_wrong_option(tmp_path):
    path = tmp_path / "questions.toml"
    path.write_text(EXAMPLE_QUESTIONS)
    test = question_cells(load_questions(path)["q1"])[2]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(test.source, {"answer_q1": "C"})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("The answer is C. Perplexity is")
    assert [line[:6] for line in lines[1:]] == ["Not A:", "Not B:", "Not D:"]
    assert "cross-entropy in nats" in lines[3]


# --- what a test-wise student could exploit ---------------------------------------------------------------


def make_question(qid: str, answer: str, options: dict[str, str]) -> Question:
    why = {k: f"why not {k}" for k in options if k != answer}
    return Question(qid, "c", "text", options, answer, 1, "because", why)


# B is the longest option; the others are within a few characters of it
FAIR = {"A": "the first of four options", "B": "the second of four, longest", "C": "the third of the four",
        "D": "and the fourth of them"}


def fair_lesson(n: int) -> dict[str, Question]:
    """n questions with answers cycling over A, C, D: none of them is the longest option."""
    return {f"q{i}": make_question(f"q{i}", "ACD"[i % 3], FAIR) for i in range(n)}


def test_a_fair_lesson_has_no_cue_problems():
    lesson_ = fair_lesson(9)
    assert not any(q.is_longest() for q in lesson_.values())
    assert cue_problems(lesson_) == []


def test_longest_option_as_the_answer_too_often_is_a_problem():
    lesson_ = fair_lesson(9)
    for qid in ("q0", "q1", "q2"):  # 3 of 9 is a third: allowed
        lesson_[qid] = make_question(qid, "B", FAIR)
    assert [q.is_longest() for q in lesson_.values()].count(True) == 3
    assert not [p for p in cue_problems(lesson_) if "longest" in p]
    lesson_["q5"] = make_question("q5", "B", FAIR)  # 4 of 9
    (problem,) = [p for p in cue_problems(lesson_) if "longest" in p]
    assert "longest in 4 of 9 questions (q0, q1, q2, q5); at most 3 allowed" in problem


def test_a_tie_for_the_longest_option_counts_as_longest():
    q = make_question("q", "A", {"A": "x" * 20, "B": "y" * 20, "C": "z" * 10})
    assert q.is_longest()


def test_one_letter_answering_too_many_questions_is_a_problem():
    lesson_ = {f"q{i}": make_question(f"q{i}", "A" if i < 4 else "CD"[i % 2], FAIR) for i in range(10)}
    assert not [p for p in cue_problems(lesson_) if "is the answer of" in p]  # 4 of 10 = 40%: allowed
    lesson_["q9"] = make_question("q9", "A", FAIR)
    (problem,) = [p for p in cue_problems(lesson_) if "is the answer of" in p]
    assert problem.startswith("A is the answer of 5 of 10 questions") and "at most 4 allowed" in problem


def test_small_lessons_allow_one_of_each():
    assert cue_problems({"q": make_question("q", "B", FAIR)}) == []
    two = {"q1": make_question("q1", "A", FAIR), "q2": make_question("q2", "A", FAIR)}
    assert any("A is the answer of 2 of 2" in p for p in cue_problems(two))


@pytest.mark.parametrize(
    ("answer_text", "bad"),
    [("x" * 30, False), ("x" * 45, False), ("x" * 46, True), ("x" * 20, False), ("x" * 19, True)],
)
def test_an_option_whose_length_gives_it_away_is_a_problem(answer_text, bad):
    q = make_question("q", "A", {"A": answer_text, "B": "y" * 30, "C": "z" * 30})
    assert bool(cue_problems({"q": q})) is bad


def test_short_options_are_exempt_from_the_length_rule():
    q = make_question("q", "A", {"A": "16 GiB of cache", "B": "4", "C": "1/4"})  # all <= 16 characters
    assert cue_problems({"q": q}) == []


def test_render_refuses_an_unfair_lesson_and_writes_nothing(tmp_path):
    unfair = EXAMPLE_QUESTIONS.replace('C = "4"', 'C = "4, the exponential of the mean negative log-likelihood"')
    folder = lesson(tmp_path, unfair, ("a.ipynb", notebook("<!-- questions: q1 q2 -->")))
    before = (folder / "a.ipynb").read_bytes()
    message = "could guess answers without the content:\n- q1: the correct option is 18.00 times"
    with pytest.raises(ValueError, match=message):
        render_lesson(folder)
    assert (folder / "a.ipynb").read_bytes() == before


# --- private variants -------------------------------------------------------------------------------------


def test_variant_zero_is_the_toml_order():
    lesson_ = fair_lesson(5)
    assert permute(lesson_, 0) == lesson_


def test_a_variant_permutes_options_consistently_and_spreads_the_answers():
    lesson_ = fair_lesson(12)
    for variant in (1, 2, 12345):
        permuted = permute(lesson_, variant)
        assert permuted == permute(lesson_, variant), "a variant is deterministic"
        assert list(permuted) == list(lesson_)
        for qid, q in lesson_.items():
            p = permuted[qid]
            assert sorted(p.options.values()) == sorted(q.options.values()) and list(p.options) == list(q.options)
            assert p.options[p.answer] == q.options[q.answer], "the answer follows its text"
            assert {p.options[k]: w for k, w in p.why_not.items()} == {q.options[k]: w for k, w in q.why_not.items()}
        counts = collections.Counter(q.answer for q in permuted.values())
        assert set(counts.values()) == {3}, counts  # 12 questions over 4 letters
        assert cue_problems(permuted) == []
    orders = {tuple(q.options["A"] for q in permute(lesson_, v).values()) for v in range(1, 6)}
    assert len(orders) > 1, "different variants give different orders"


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_a_variant_is_a_non_negative_integer(bad):
    with pytest.raises(ValueError, match="variant must be an integer >= 0"):
        permute(fair_lesson(2), bad)


def test_questions_command_renders_a_variant(tmp_path, monkeypatch):
    folder = tmp_path / "assessments" / "01_x"
    folder.mkdir(parents=True)
    lesson(folder, EXAMPLE_QUESTIONS, ("01_x.ipynb", notebook("<!-- questions: q1 q2 -->")))
    monkeypatch.delenv(VARIANT_VARIABLE, raising=False)

    def answers() -> dict[str, str]:
        nb = nbformat.read(folder / "01_x.ipynb", 4)
        found = {}
        for cell in nb.cells:
            m = re.search(r'(answer_q\d) = "([A-Z])"', cell.source)
            if m and cell.metadata["nbgrader"]["solution"]:
                found[m.group(1)] = m.group(2)
        return found

    assert questions("01_x", check=False, root=tmp_path) == 0
    public = answers()
    assert public == {"answer_q1": "C", "answer_q2": "A"}
    texts = {}
    for variant in range(1, 5):
        assert questions("01_x", check=False, root=tmp_path, variant=variant) == 0
        texts[variant] = answers()
        assert questions("01_x", check=True, root=tmp_path, variant=variant) == 0, "up to date for that variant"
    assert any(t != public for t in texts.values())
    monkeypatch.setenv(VARIANT_VARIABLE, "4")  # the course setting is the default
    assert questions("01_x", check=True, root=tmp_path) == 0
    monkeypatch.setenv(VARIANT_VARIABLE, "0")
    assert questions("01_x", check=True, root=tmp_path) == 1


def test_cue_report_counts_longest_answers_and_letters():
    lesson_ = fair_lesson(6)
    lesson_["q0"] = make_question("q0", "B", FAIR)
    assert cue_report(lesson_) == (
        "6 questions; the correct option is the longest in 1 (17%); answers: A 1, B 1, C 2, D 2"
    )


# --- lmlab.grading: the course variant and the hidden tests' random inputs ---------------------------------


def test_course_variant_reads_the_course_setting(monkeypatch):
    monkeypatch.delenv(VARIANT_VARIABLE, raising=False)
    assert course_variant() == 0
    monkeypatch.setenv(VARIANT_VARIABLE, " 42 ")
    assert course_variant() == 42
    for bad in ("-1", "x", "1.5"):
        monkeypatch.setenv(VARIANT_VARIABLE, bad)
        with pytest.raises(ValueError, match="LMLAB_COURSE_VARIANT must be an integer >= 0"):
            course_variant()


def test_variant_seeds_are_stable_and_independent(monkeypatch):
    monkeypatch.setenv(VARIANT_VARIABLE, "7")
    expected = int.from_bytes(hashlib.sha256(b"7:cross_entropy").digest()[:8], "big") >> 1
    assert variant_seed("cross_entropy") == expected == variant_seed("cross_entropy", 7)
    assert variant_seed("cross_entropy", 8) != expected and variant_seed("top_p", 7) != expected
    a = torch.randn(3, generator=variant_generator("cross_entropy"))
    assert torch.equal(a, torch.randn(3, generator=torch.Generator().manual_seed(expected)))
    monkeypatch.delenv(VARIANT_VARIABLE)
    assert not torch.equal(a, torch.randn(3, generator=variant_generator("cross_entropy")))
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        variant_seed("")
    with pytest.raises(ValueError, match="variant must be an integer >= 0"):
        variant_seed("x", -2)
