"""The reference results of a lesson: what the instructor's solution sends to the grader from each test.

A test cell sends its results to the grader as plain data (``lmlab.grading.reported``, ``expect_equal``,
``expect_close``). Before a class is graded, the lesson's source notebooks (``assessments/LESSON/``,
solutions and hidden tests included) run once here, in grading mode, in a kernel no student code has
touched; every test cell's results are kept in ``course/grading/reference/LESSON.json``. When a submission
is graded (``course/execute.py``), a test cell scores only if the results its run sent agree with these,
compared in the grader's process: a student's code can rebind or patch anything in its own kernel, but not
this comparison.

The file is remade when it is stale: its fingerprint covers the source notebooks, the other files of the
lesson folder, the lmlab package the tests import and the course variant.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import nbformat

from course import GRADING, ROOT, lesson_notebooks
from course.feedback import is_test_cell
from lmlab.results import RESULT_MIME, VARIANT_VARIABLE

REFERENCE_SECONDS = 120  # a cell of a lesson in grading mode takes seconds; this is a ceiling, not a budget


def reference_path(lesson: str, root: Path = ROOT) -> Path:
    return Path(root) / GRADING / "reference" / f"{lesson}.json"


def fingerprint(lesson: str, root: Path = ROOT, env: dict[str, str] | None = None) -> str:
    """SHA-256 over the lesson folder's files, the lmlab package's files and the course variant."""
    import lmlab

    env = os.environ if env is None else env
    digest = hashlib.sha256(f"variant={env.get(VARIANT_VARIABLE, '').strip() or '0'}\n".encode())
    for top in (Path(root) / "assessments" / lesson, Path(lmlab.__file__).parent):
        for path in sorted(p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                           and ".ipynb_checkpoints" not in p.parts):
            digest.update(f"{path.relative_to(top)}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def results_of(nb: nbformat.NotebookNode) -> dict[str, list[dict]]:
    """grade_id -> the results each test cell of an executed notebook sent, in order."""
    out: dict[str, list[dict]] = {}
    for cell in nb.cells:
        if is_test_cell(cell):
            out[cell.metadata["nbgrader"]["grade_id"]] = [
                o["data"][RESULT_MIME] for o in cell.get("outputs", [])
                if o.get("output_type") == "display_data" and RESULT_MIME in o.get("data", {})]
    return out


def run_source(lesson: str, root: Path = ROOT, env: dict[str, str] | None = None) -> dict[str, dict[str, list[dict]]]:
    """Run the lesson's source notebooks in grading mode; notebook name -> grade_id -> results.

    Each notebook runs in a scratch copy of the lesson folder. A test cell of the instructor's own
    solution that fails is an error: its results could not be a reference.
    """
    from nbclient import NotebookClient

    env = dict(os.environ if env is None else env)
    env["NBGRADER_EXECUTION"] = "autograde"
    source = Path(root) / "assessments" / lesson
    notebooks = lesson_notebooks(lesson, root)
    if not notebooks:
        raise ValueError(f"no notebooks in {source}: is {lesson!r} a lesson of this course?")
    results = {}
    for path in notebooks:
        with tempfile.TemporaryDirectory(prefix="lmlab-reference-") as tmp:
            work = Path(tmp) / lesson
            shutil.copytree(source, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
            nb = nbformat.read(work / path.name, as_version=4)
            client = NotebookClient(nb, timeout=REFERENCE_SECONDS, kernel_name="python3", allow_errors=True,
                                    resources={"metadata": {"path": str(work)}})
            client.execute(env=env, cwd=str(work))
        failed = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
                  if is_test_cell(c) and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        if failed:
            raise RuntimeError(f"{lesson}/{path.name}: the instructor's solution fails its own tests "
                               f"{', '.join(failed)}; fix the source notebook before grading")
        results[path.stem] = results_of(nb)
    return results


def reference(lesson: str, root: Path = ROOT, env: dict[str, str] | None = None) -> dict[str, dict[str, list[dict]]]:
    """The lesson's reference results, from ``course/grading/reference/LESSON.json``, remade when stale.

    Several graders may ask at once (one process per submission): one makes the file under a lock, the
    others wait and read it. The file is written atomically.
    """
    path = reference_path(lesson, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    want = fingerprint(lesson, root, env)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError):  # not made yet, or cut short
                stored = {}
            if isinstance(stored, dict) and stored.get("fingerprint") == want:
                return stored["notebooks"]
            notebooks = run_source(lesson, root, env)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps({"lesson": lesson, "fingerprint": want, "notebooks": notebooks}))
            tmp.replace(path)
            return notebooks
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
