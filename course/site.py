"""`python -m course site`: the course as a static website for reading, one HTML page per notebook.

What a page shows. Each page is the *student* notebook (``notebooks/LESSON/NAME.ipynb``): no solutions and
no hidden tests. Its outputs (plots, tables, widget snapshots) come from running the *instructor* version
(``assessments/LESSON/NAME.ipynb``) top to bottom in a scratch copy of the lesson folder: the student
version alone cannot run past its first exercise, whose cell raises ``NotImplementedError``, so its
later plots would be missing. A student cell gets the outputs of the instructor cell with the same cell
id only when the two cells' sources are identical; exercise, answer and test cells differ between the
versions, so they are shown empty, as a student receives them, and nothing printed by a solution or a
hidden test reaches the page.

The pages are made by nbconvert's HTML exporter (its ``lab`` template); the index is a notebook of
Markdown cells made here and exported the same way. Every notebook appears in the index in syllabus order
(the order in which ``course/syllabus.md`` first names ``notebooks/LESSON/``) with a link to read it, to
launch it on Binder (``course.binder_url``) and to download the student notebook.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course import ROOT, binder_url, lesson_notebooks, lessons

RUN_SECONDS = 600  # per cell; a lesson cell takes seconds (the budgets are per notebook, course/authoring.md)


@dataclass(frozen=True)
class Page:
    """One notebook of the site: where its page and its download are, relative to the site's folder."""

    lesson: str
    name: str  # the notebook's file stem, e.g. 01a_likelihood
    title: str  # the notebook's first Markdown heading
    seconds: float  # how long the instructor version took to run

    @property
    def html(self) -> str:
        return f"{self.lesson}/{self.name}.html"

    @property
    def download(self) -> str:
        return f"{self.lesson}/{self.name}.ipynb"

    @property
    def notebook(self) -> str:  # the student notebook, relative to the repository root
        return f"notebooks/{self.lesson}/{self.name}.ipynb"


def syllabus_order(names: list[str], root: Path = ROOT) -> list[str]:
    """`names` (lesson folders) in the order course/syllabus.md first mentions `notebooks/LESSON/`."""
    text = (Path(root) / "course" / "syllabus.md").read_text()
    missing = [n for n in names if f"notebooks/{n}/" not in text]
    if missing:
        raise ValueError(f"course/syllabus.md does not mention notebooks/{missing[0]}/: add the lesson to the "
                         f"syllabus before building the site")
    return sorted(names, key=lambda n: text.index(f"notebooks/{n}/"))


def title_of(nb: nbformat.NotebookNode, default: str) -> str:
    """The text of the notebook's first Markdown heading (`# ...`), else `default`."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return default


def run_instructor_version(lesson: str, name: str, root: Path, grading: bool,
                           env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Execute assessments/LESSON/NAME.ipynb in a scratch copy of its folder; the executed notebook.

    `grading` runs it as `nbgrader autograde` does (NBGRADER_EXECUTION=autograde: the lessons' smaller
    workloads), for a quick build; the site proper runs in normal mode. A cell that raises, other than
    one tagged `raises-exception`, is an error: the page would show a traceback. `env` is the kernel's
    environment (default: this process's).
    """
    from nbclient import NotebookClient

    env = dict(os.environ if env is None else env)
    env.pop("NBGRADER_EXECUTION", None)
    if grading:
        env["NBGRADER_EXECUTION"] = "autograde"
    source = Path(root) / "assessments" / lesson
    with tempfile.TemporaryDirectory(prefix="lmlab-site-") as tmp:
        work = Path(tmp) / lesson
        shutil.copytree(source, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        nb = nbformat.read(work / f"{name}.ipynb", as_version=4)
        client = NotebookClient(nb, timeout=RUN_SECONDS, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(work)}})
        client.execute(env=env, cwd=str(work))
    failed = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and "raises-exception" not in c.metadata.get("tags", [])
              and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    if failed:
        raise RuntimeError(f"assessments/{lesson}/{name}.ipynb: cell {failed[0]} raised while building the site; "
                           f"run the notebook and fix it first")
    return nb


def with_outputs(student: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `student` whose cells take the outputs of the `executed` cell with the same id and source."""
    by_id = {c.get("id"): c for c in executed.cells if c.cell_type == "code"}
    page = nbformat.from_dict(student)
    for cell in page.cells:
        if cell.cell_type != "code":
            continue
        ran = by_id.get(cell.get("id"))
        if ran is not None and ran.source == cell.source:
            cell.outputs = ran.outputs
            cell.execution_count = ran.execution_count
        else:  # an exercise, answer or test cell: empty, as the student gets it
            cell.outputs, cell.execution_count = [], None
    if "widgets" in executed.metadata:  # the saved widget state draws the widget snapshots
        page.metadata["widgets"] = executed.metadata["widgets"]
    return page


def export_html(nb: nbformat.NotebookNode, title: str) -> str:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


def index_notebook(pages: list[Page], root: Path = ROOT) -> nbformat.NotebookNode:
    """The index: the syllabus's opening paragraph, then each lesson's notebooks with their three links."""
    syllabus = (Path(root) / "course" / "syllabus.md").read_text()
    heading, _, rest = syllabus.partition("\n")
    intro = rest.strip().split("\n\n")[0]
    cells = [nbformat.v4.new_markdown_cell(f"{heading}\n\n{intro}\n\n[The whole syllabus](syllabus.html)")]
    for lesson in dict.fromkeys(p.lesson for p in pages):
        lines = [f"## {lesson.replace('_', ' ')}", ""]
        for p in (p for p in pages if p.lesson == lesson):
            lines.append(f"- **{p.title}**: [read]({p.html}) · [launch on Binder]({binder_url(p.notebook, root)}) · "
                         f"[download the notebook]({p.download})")
        cells.append(nbformat.v4.new_markdown_cell("\n".join(lines)))
    return nbformat.v4.new_notebook(cells=cells)


def build(out: Path, names: list[str] | None = None, root: Path = ROOT, grading: bool = False,
          env: dict[str, str] | None = None, log=print) -> list[Page]:  # noqa: ANN001
    """Write the site for `names` (lesson folders; default: all) to `out`; its pages, in syllabus order.

    `grading` and `env` are passed to `run_instructor_version`; `log` gets one line per page.

    `out` is replaced only when every page was made: the site is built in a folder beside it first.
    """
    root, out = Path(root), Path(out)
    known = lessons(root)
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise ValueError(f"no lesson {unknown[0]!r}; the lessons are {', '.join(known)}")
    order = syllabus_order(list(names or known), root)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        pages = []
        for lesson in order:
            students = lesson_notebooks(lesson, root, "notebooks")
            if not students:
                raise ValueError(f"notebooks/{lesson}/ has no student notebooks: run `python -m course release`")
            (staging / lesson).mkdir()
            for path in students:
                start = time.perf_counter()
                student = nbformat.read(path, as_version=4)
                executed = run_instructor_version(lesson, path.stem, root, grading, env)
                page = Page(lesson, path.stem, title_of(student, path.stem), time.perf_counter() - start)
                (staging / page.html).write_text(export_html(with_outputs(student, executed), page.title))
                shutil.copyfile(path, staging / page.download)
                pages.append(page)
                log(f"{page.html}: {page.seconds:.0f} s")
        syllabus = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_markdown_cell((root / "course" / "syllabus.md").read_text())])
        (staging / "syllabus.html").write_text(export_html(syllabus, "Syllabus"))
        (staging / "index.html").write_text(export_html(index_notebook(pages, root), "lmlab course"))
        staging.chmod(0o755)  # mkdtemp makes it private; a web server must read the site
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"site: {out / 'index.html'} ({len(pages)} notebooks)")
    return pages
