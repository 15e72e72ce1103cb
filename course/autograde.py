"""`python -m course autograde LESSON`: grade a class, each submission sandboxed, several at once.

The unit of work is one submission: ``nbgrader autograde LESSON --student ID --force`` in its own process
group, with a wall-clock limit. Its kernel runs in the sandbox of ``course/sandbox.py`` with the guard of
``course/execute.py``; the gradebook (sqlite) is shared, and each process writes only its student's rows.
Before the first submission, the lesson's source runs once to make the reference results
(``course/reference.py``) that every test's results are compared with. Before a submission runs, the
preflight (``course/preflight.py``) reports what the student changed that grading overrides. The class
summary is printed and written to ``course/grading/autograde-LESSON.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from traitlets import Dict, Float, Unicode
from traitlets.config import Configurable

from course import GRADING, ROOT, lesson_notebooks
from course.preflight import preflight_submission
from course.reference import reference
from course.sandbox import UNSAFE_VARIABLE, probe_bwrap

SUBMISSION_SECONDS = 600  # a lesson grades in <= 45 s; a submission still running after this is stopped


class ClassGrading(Configurable):
    """Class-level settings, ``c.ClassGrading.<name>`` in course/nbgrader_config.py."""

    deadlines = Dict(value_trait=Unicode(), help="lesson -> deadline, 'YYYY-MM-DD HH:MM' (UTC) or ISO 8601 "
                                                 "with an offset; later submissions are flagged").tag(config=True)
    submission_timeout = Float(SUBMISSION_SECONDS, help="seconds one submission may take").tag(config=True)


def settings(root: Path = ROOT) -> ClassGrading:
    """The ClassGrading settings of the course in ``root`` (read from course/nbgrader_config.py)."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(Path(root) / "course")).load_config()
    return ClassGrading(config=config)


def gradebook_url(root: Path = ROOT) -> str:
    """The gradebook's database URL, as nbgrader_config.py sets it (parallel writers wait for the lock)."""
    return f"sqlite:///{Path(root) / GRADING / 'gradebook.db'}?timeout=60"


def open_gradebook(root: Path = ROOT):  # noqa: ANN201 -- nbgrader.api.Gradebook
    """nbgrader's Gradebook of the course in ``root``, created if need be.

    nbgrader creates and upgrades the database with the ``alembic`` command, found on PATH: this
    interpreter's scripts folder is put first, so it works from a virtual environment that is not activated.
    """
    from nbgrader.api import Gradebook

    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    (Path(root) / GRADING).mkdir(parents=True, exist_ok=True)
    return Gradebook(gradebook_url(root))


@dataclass
class Outcome:
    """How the grading of one submission ended."""

    student: str
    status: str  # "graded", "timed out" or "error"
    seconds: float
    preflight: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    detail: str = ""


def submitted_students(lesson: str, root: Path = ROOT) -> list[str]:
    folder = Path(root) / GRADING / "submitted"
    if not folder.is_dir():
        return []
    return sorted(d.name for d in folder.iterdir() if (d / lesson).is_dir())


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def grade_one(lesson: str, student: str, root: Path, env: dict[str, str], timeout: float,
              extra: list[str] = ()) -> tuple[str, float, str]:
    """Run nbgrader autograde for one student; (status, seconds, last lines of its log)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "nbgrader", "autograde", lesson, f"--student={student}", "--force", *extra]
    proc = subprocess.Popen(cmd, cwd=Path(root) / "course", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
        status = "graded" if proc.returncode == 0 else "error"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        status = "timed out"
    tail = "\n".join(line for line in (log or "").splitlines() if "ERROR" in line or "Error" in line)[-2000:]
    if status == "graded":
        graded = Path(root) / GRADING / "autograded" / student / lesson
        if not any(graded.glob("*.ipynb")):
            status, tail = "error", tail or "no graded notebook was written"
    return status, time.perf_counter() - start, tail


def grade_class(lesson: str, *, root: Path = ROOT, workers: int | None = None, students: list[str] | None = None,
                unsafe: bool = False, timeout: float = SUBMISSION_SECONDS, env: dict[str, str] | None = None,
                progress: bool = True, extra: list[str] = ()) -> list[Outcome]:
    """Preflight and autograde the lesson's submissions (default: every collected one), ``workers`` at once."""
    root = Path(root)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    workers = workers or default_workers()
    env = dict(os.environ if env is None else env)
    if unsafe:
        env[UNSAFE_VARIABLE] = "1"
    elif env.get(UNSAFE_VARIABLE, "") in ("", "0"):
        why = probe_bwrap()
        if why:
            raise SystemExit(f"refusing to grade: {why}.\nStudent code would run with your rights, read the "
                             "hidden tests and write anywhere. Install bubblewrap, or pass --unsafe to grade "
                             "submissions you trust without a sandbox.")
    everyone = submitted_students(lesson, root)
    if students:
        missing = sorted(set(students) - set(everyone))
        if missing:
            raise SystemExit(f"no submission of {lesson} from {', '.join(missing)} in {GRADING}/submitted/")
        everyone = [s for s in everyone if s in students]
    if not everyone:
        raise SystemExit(f"no submissions of {lesson} in {GRADING}/submitted/: run `python -m course collect {lesson}`")
    # each kernel's torch uses its share of the cores, so that workers do not fight over them
    env.setdefault("OMP_NUM_THREADS", str(max(1, default_workers() // workers)))
    try:  # the instructor's results, which every submission's are compared with (made once, then read)
        reference(lesson, root, env)
    except RuntimeError as err:
        raise SystemExit(f"refusing to grade: {err}") from None
    sources = {p.stem: p for p in lesson_notebooks(lesson, root)}
    released = {p.stem: p for p in lesson_notebooks(lesson, root, "notebooks")}
    checks = {s: preflight_submission(root / GRADING / "submitted" / s / lesson, s, sources, released,
                                      keep=root / GRADING / "originals" / s / lesson)
              for s in everyone}

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(everyone), desc=f"grading {lesson}", unit="submission", file=sys.stderr)
    outcomes = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(grade_one, lesson, s, root, env, timeout, list(extra)): s for s in everyone}
        for future in as_completed(futures):
            student = futures[future]
            status, seconds, detail = future.result()
            check = checks[student]
            outcomes.append(Outcome(student, status, round(seconds, 2), [str(f) for f in check.findings],
                                    check.repaired, detail))
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"last: {student} {status}")
    if bar is not None:
        bar.close()
    outcomes.sort(key=lambda o: o.student)
    record = {"lesson": lesson, "workers": workers, "sandbox": "none (unsafe)" if env.get(UNSAFE_VARIABLE) else "bwrap",
              "outcomes": [asdict(o) for o in outcomes]}
    out = root / GRADING / f"autograde-{lesson}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(out)
    return outcomes


def summary(outcomes: list[Outcome], lesson: str) -> str:
    """The end-of-run report: counts, then one line per submission that needs a look."""
    counts = {k: sum(o.status == k for o in outcomes) for k in ("graded", "timed out", "error")}
    flagged = sum(bool(o.preflight) for o in outcomes)
    lines = [f"{lesson}: {len(outcomes)} submissions: {counts['graded']} graded, {flagged} failed preflight "
             f"(graded from the instructor's cells), {counts['timed out']} timed out, {counts['error']} errors"]
    for o in outcomes:
        if o.status != "graded" or o.preflight:
            flags = f"; preflight: {'; '.join(o.preflight)}" if o.preflight else ""
            lines.append(f"  {o.student}: {o.status}{flags}")
            if o.detail and o.status != "graded":
                lines.append("    " + o.detail.splitlines()[-1][:300])
    lines.append(f"details: {GRADING}/autograde-{lesson}.json")
    return "\n".join(lines)
