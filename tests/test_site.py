"""`python -m course site`: the rendered course, built for one lesson (in grading mode, for time)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from _course_support import grading_meta, isolated_env

import course
from course.site import build, syllabus_order, with_outputs

LESSON = "02_decoding"
pytestmark = pytest.mark.skipif(LESSON not in course.lessons(), reason=f"no lesson {LESSON}")


class Links(HTMLParser):
    """The href of every <a> and the src of every <img> of a page, and its <title>."""

    def __init__(self):
        super().__init__()
        self.links, self.images, self.title, self._in_title = [], [], "", False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text())
    return links


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    env = isolated_env(tmp_path_factory.mktemp("home"), grading=False)
    lines = []
    pages = build(out, [LESSON], grading=True, env=env, log=lines.append)
    return out, pages, lines


@pytest.mark.slow
def test_index_lists_the_lessons_notebooks_in_order_with_their_three_links(site):
    out, pages, lines = site
    students = course.lesson_notebooks(LESSON, course.ROOT, "notebooks")
    assert [p.name for p in pages] == [p.stem for p in students]
    assert lines[-1].startswith("site: ") and len(lines) == len(students) + 1
    index = parse(out / "index.html")
    assert "syllabus.html" in index.links and (out / "syllabus.html").is_file()
    links = [link for link in index.links if not link.startswith("#") and link != "syllabus.html"]
    for link in links:  # the syllabus's opening paragraph links Binder too: every Binder link is made in one place
        if "mybinder.org" in link:
            assert link == course.binder_url(link.split("urlpath=lab/tree/", 1)[1]), link
    expected = []
    for student in students:
        notebook = f"notebooks/{LESSON}/{student.name}"
        expected += [f"{LESSON}/{student.stem}.html", course.binder_url(notebook), f"{LESSON}/{student.name}"]
    assert links[-len(expected):] == expected, "each notebook: read, launch on Binder, download, in order"
    for student in students:
        download = (out / LESSON / student.name).read_bytes()
        assert download == student.read_bytes(), "the download is the student notebook"


@pytest.mark.slow
def test_each_page_shows_the_student_version_with_its_plots_and_no_solution(site):
    out, pages, _ = site
    for page in pages:
        source = nbformat.read(course.ROOT / "assessments" / LESSON / f"{page.name}.ipynb", 4)
        student = nbformat.read(course.ROOT / page.notebook, 4)
        html = (out / page.html).read_text()
        parsed = parse(out / page.html)
        assert parsed.title == page.title and page.title != page.name
        pictures = [src for src in parsed.images if src.startswith("data:image/png;base64,")]
        assert len(pictures) >= 1, f"{page.html} shows no plot"
        assert "Traceback" not in html and "Error displaying widget" not in html
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS"):
            assert marker not in html
        student_text = "\n".join(c.source for c in student.cells)
        for cell in source.cells:
            if grading_meta(cell).get("solution") or "HIDDEN TESTS" in cell.source:
                hidden = [line.strip() for line in cell.source.splitlines()
                          if len(line.strip()) > 20 and line.strip() not in student_text]
                for line in hidden:
                    assert _escaped(line) not in html, f"{page.html} shows a line of a solution: {line}"


def _escaped(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_outputs_come_only_to_cells_the_two_versions_share():
    out = lambda text: [nbformat.v4.new_output("stream", name="stdout", text=text)]  # noqa: E731
    executed = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 2\nprint(x)", id="shared", outputs=out("2\n"), execution_count=1),
        nbformat.v4.new_code_cell("def f():\n    return 42  # solution", id="exercise", outputs=out("SECRET\n")),
        nbformat.v4.new_code_cell("assert f() == 42\nprint('hidden')", id="test", outputs=out("hidden\n")),
    ], metadata={"widgets": {"state": {}}})
    student = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 2\nprint(x)", id="shared"),
        nbformat.v4.new_code_cell("def f():\n    raise NotImplementedError()", id="exercise"),
        nbformat.v4.new_code_cell("assert f() == 42", id="test"),
        nbformat.v4.new_markdown_cell("Done.", id="end"),
    ])
    page = with_outputs(student, executed)
    assert [c.get("outputs") for c in page.cells] == [out("2\n"), [], [], None]
    assert page.cells[0].execution_count == 1 and page.metadata["widgets"] == {"state": {}}
    assert student.cells[0].get("outputs") == [], "the student notebook itself is not changed"


def test_syllabus_order_and_unknown_lessons(tmp_path):
    assert syllabus_order(list(reversed(course.lessons()))) == course.lessons()
    (tmp_path / "course").mkdir()
    (tmp_path / "course" / "syllabus.md").write_text("# S\n\nSee `notebooks/b/`, then `notebooks/a/`.\n")
    assert syllabus_order(["a", "b"], tmp_path) == ["b", "a"]
    with pytest.raises(ValueError, match="does not mention notebooks/c/"):
        syllabus_order(["a", "c"], tmp_path)
    with pytest.raises(ValueError, match="no lesson 'nope'"):
        build(tmp_path / "site", ["nope"])


def test_a_failed_build_keeps_the_last_site(tmp_path):
    root = tmp_path / "course-root"
    for folder in ("assessments/x", "notebooks/x", "course"):
        (root / folder).mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n[project.urls]\n'
                                         'Repository = "https://github.com/lmlab-course/lmlab"\n')
    (root / "course" / "syllabus.md").write_text("# Course\n\nStart in `notebooks/x/`.\n")
    broken = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Broken"),
                                             nbformat.v4.new_code_cell("1 / 0")])
    nbformat.write(broken, root / "assessments" / "x" / "a.ipynb")
    nbformat.write(broken, root / "notebooks" / "x" / "a.ipynb")
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("the last good site")
    env = isolated_env(tmp_path / "home")
    with pytest.raises(RuntimeError, match=r"assessments/x/a\.ipynb: cell 1 raised"):
        build(out, ["x"], root=root, env=env, log=lambda line: None)
    assert (out / "index.html").read_text() == "the last good site"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["course-root", "home", "site"], "no staging folder left"


def test_site_command_reports_errors(capsys):
    from course.__main__ import main

    assert main(["site", "no_such_lesson", "--out", "/nonexistent/site"]) == 1
    assert re.search(r"error: no lesson 'no_such_lesson'", capsys.readouterr().err)
