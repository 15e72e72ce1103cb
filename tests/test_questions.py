"""course.questions: questions.toml -> autograded multiple-choice cells, placed at marker cells."""

from __future__ import annotations

import textwrap

import nbformat
import pytest
from _course_support import EXAMPLE_QUESTIONS

import course
from course.__main__ import main, questions
from course.questions import load_questions, question_cells, render, render_lesson

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
"""


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
    (folder / "questions.toml").write_text(EXAMPLE_QUESTIONS.replace('answer = "C"', 'answer = "D"'))
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
    changed = render_lesson(course.ROOT / "assessments" / name, check=True)
    assert changed == [], f"run `python -m course questions {name}` and then `python -m course release {name}`"
