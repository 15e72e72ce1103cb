"""`python -m course collect LESSON FILES...`: submissions from what learning-management systems export.

Accepted, in any mix (folders are searched, zip files are opened, nested zips too):

- **Canvas** ("Download Submissions"): flat files named ``<login>_<canvas id>_<submission id>_<file>``,
  with ``LATE`` after the login for a late one (``doejane_LATE_4821_99120_01a_likelihood.ipynb``); Canvas
  adds ``-1``, ``-2`` to resubmitted file names.
- **Moodle** ("Download all submissions"): a folder per student,
  ``<Full Name>_<participant id>_assignsubmission_file_``,
  holding the files.
- **nbgrader's layout**: ``<student id>/<notebook>.ipynb``.

A file counts when its name, after those prefixes and suffixes, is one of the lesson's notebooks. Students
are found in the roster (``python -m course roster FILE``) by student id, Canvas id or Moodle participant
id; without a roster entry, the LMS login or participant id becomes the student id, and the report lists
them. Each submission is written to ``course/grading/submitted/<student>/<lesson>/`` with a
``timestamp.txt`` (the file's time in the export, which nbgrader reads to compute lateness); when the same
student sent a notebook twice, the later one is kept. A submission after the lesson's deadline
(``c.ClassGrading.deadlines`` in ``course/nbgrader_config.py``) or marked late by Canvas is flagged.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from course import GRADING, ROOT, lesson_notebooks

CANVAS = re.compile(r"^(?P<login>[A-Za-z0-9]+)(?P<late>_LATE)?_(?P<canvas_id>\d+)_(?P<submission>\d+)_(?P<file>.+)$")
MOODLE = re.compile(r"^(?P<name>.+)_(?P<participant>\d+)_assign(?:submission|feedback)_[a-z]+_?$")
RESUBMITTED = re.compile(r"^(?P<stem>.+?)(?:-\d+| \(\d+\))$")
ROSTER_COLUMNS = ("id", "first_name", "last_name", "email", "canvas_id", "moodle_id")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f UTC"  # what nbgrader reads in timestamp.txt


@dataclass
class Found:
    """One notebook found in an export."""

    student: str
    notebook: str
    data: bytes
    time: datetime
    origin: str
    late_mark: bool = False  # the LMS itself said late


@dataclass
class CollectReport:
    lesson: str
    collected: dict[str, list[str]] = field(default_factory=dict)  # student -> notebooks
    late: dict[str, str] = field(default_factory=dict)               # student -> why
    unmatched: list[str] = field(default_factory=list)               # files that are no notebook of the lesson
    not_in_roster: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)                 # roster students with nothing

    def summary(self) -> str:
        lines = [f"{self.lesson}: {len(self.collected)} students collected, {len(self.late)} late, "
                 f"{len(self.missing)} in the roster sent nothing, {len(self.unmatched)} files left out"]
        for student, why in sorted(self.late.items()):
            lines.append(f"  late: {student} ({why})")
        if self.missing:
            lines.append(f"  nothing from: {', '.join(self.missing)} (they will score 0)")
        if self.not_in_roster:
            lines.append(f"  not in the roster (ids taken from the export): {', '.join(self.not_in_roster)}")
        for name in self.unmatched[:20]:
            lines.append(f"  left out: {name}")
        return "\n".join(lines)


def load_roster(root: Path = ROOT) -> list[dict[str, str]]:
    path = Path(root) / GRADING / "roster.json"
    return json.loads(path.read_text()) if path.is_file() else []


def import_roster(csv_path: Path, root: Path = ROOT) -> list[dict[str, str]]:
    """Read a roster CSV (column ``id`` required; ``first_name``, ``last_name``, ``email``, ``canvas_id``,
    ``moodle_id`` optional), add every student to the gradebook and keep the LMS ids for ``collect``."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "id" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: a roster needs an 'id' column (student ids); it may also have "
                             f"{', '.join(ROSTER_COLUMNS[1:])}; found {reader.fieldnames}")
        rows = [{k: (row.get(k) or "").strip() for k in ROSTER_COLUMNS} for row in reader]
    ids = [r["id"] for r in rows]
    bad = [i for i in ids if not re.fullmatch(r"[A-Za-z0-9._@-]+", i)]
    if bad:
        raise ValueError(f"student ids may use letters, digits and . _ @ - only; these do not: {bad[:5]}")
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"student ids appear twice in the roster: {dupes[:5]}")
    from course.autograde import open_gradebook

    with open_gradebook(root) as gb:
        for r in rows:
            gb.update_or_create_student(r["id"], first_name=r["first_name"] or None,
                                        last_name=r["last_name"] or None, email=r["email"] or None)
    out = Path(root) / GRADING / "roster.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(out)
    return rows


def _walk(path: Path, origin: str = ""):
    """(name parts, bytes, modification time, origin) of every file under path, zips opened."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and not p.is_symlink():
                rel = p.relative_to(path)
                yield from _entry(PurePosixPath(*rel.parts), p.read_bytes(),
                                  datetime.fromtimestamp(p.stat().st_mtime, UTC), f"{origin}{p}")
    elif path.is_file():
        yield from _entry(PurePosixPath(path.name), path.read_bytes(),
                          datetime.fromtimestamp(path.stat().st_mtime, UTC), f"{origin}{path}")
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")


def _entry(rel: PurePosixPath, data: bytes, time: datetime, origin: str):
    if rel.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            yield rel, data, time, origin
            return
        for info in archive.infolist():
            if info.is_dir() or info.file_size > 200 << 20:
                continue
            when = datetime(*info.date_time, tzinfo=UTC)
            inner = PurePosixPath(info.filename)
            if ".." in inner.parts or inner.is_absolute():
                continue
            yield from _entry(PurePosixPath(*rel.parent.parts, *inner.parts), archive.read(info), when,
                              f"{origin}:{info.filename}")
    else:
        yield rel, data, time, origin


def _notebook(name: str, notebooks: set[str]) -> str | None:
    if not name.lower().endswith(".ipynb"):
        return None
    stem = name[: -len(".ipynb")]
    for _ in range(3):
        if stem in notebooks:
            return stem
        m = RESUBMITTED.match(stem)
        if not m:
            return None
        stem = m.group("stem")
    return None


def identify(rel: PurePosixPath, notebooks: set[str], roster: list[dict[str, str]]) -> tuple[str, str, bool] | None:
    """(student, notebook, marked late) for a file of an export, or None when it is no lesson notebook."""
    by = {key: {r[key]: r["id"] for r in roster if r.get(key)} for key in ("id", "canvas_id", "moodle_id")}
    m = CANVAS.match(rel.name)
    if m:
        nb = _notebook(m.group("file"), notebooks)
        if nb:
            student = by["canvas_id"].get(m.group("canvas_id")) or by["id"].get(m.group("login")) or m.group("login")
            return student, nb, bool(m.group("late"))
    for folder in reversed(rel.parts[:-1]):
        m = MOODLE.match(folder)
        if m:
            nb = _notebook(rel.name, notebooks)
            if nb:
                pid = m.group("participant")
                return by["moodle_id"].get(pid) or pid, nb, False
    nb = _notebook(rel.name, notebooks)
    if nb and len(rel.parts) >= 2:
        student = rel.parts[-2]
        if re.fullmatch(r"[A-Za-z0-9._@-]+", student):
            return student, nb, False
    return None


def collect(lesson: str, paths: list[Path], root: Path = ROOT, deadline: datetime | None = None) -> CollectReport:
    """Collect the lesson's submissions from LMS exports in ``paths`` into course/grading/submitted/."""
    root = Path(root)
    notebooks = {p.stem for p in lesson_notebooks(lesson, root)}
    if not notebooks:
        raise ValueError(f"no notebooks in assessments/{lesson}/")
    roster = load_roster(root)
    known = {r["id"] for r in roster}
    report = CollectReport(lesson)
    best: dict[tuple[str, str], Found] = {}
    for path in paths:
        for rel, data, time, origin in _walk(Path(path)):
            who = identify(rel, notebooks, roster)
            if who is None:
                if rel.suffix.lower() == ".ipynb" or rel.name.lower().endswith(".zip"):
                    report.unmatched.append(origin)
                continue
            student, nb, late = who
            found = Found(student, nb, data, time, origin, late)
            key = (student, nb)
            if key not in best or found.time > best[key].time:
                best[key] = found
    for (student, nb), found in sorted(best.items()):
        folder = root / GRADING / "submitted" / student / lesson
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{nb}.ipynb.tmp"
        tmp.write_bytes(found.data)
        tmp.replace(folder / f"{nb}.ipynb")
        stamp = folder / "timestamp.txt"
        times = [found.time] + ([_read_time(stamp)] if stamp.exists() and student in report.collected else [])
        stamp.write_text(max(t for t in times if t).strftime(TIME_FORMAT))
        report.collected.setdefault(student, []).append(nb)
        if found.late_mark:
            report.late[student] = "marked late by the LMS"
        elif deadline is not None and found.time > deadline:
            report.late[student] = f"{nb} at {found.time:%Y-%m-%d %H:%M} UTC, after the deadline"
        if roster and student not in known and student not in report.not_in_roster:
            report.not_in_roster.append(student)
    report.missing = sorted(known - set(report.collected))
    if deadline is not None:
        from course.autograde import open_gradebook

        with open_gradebook(root) as gb:  # nbgrader computes each submission's lateness from it
            gb.update_or_create_assignment(lesson, duedate=deadline.astimezone(UTC).replace(tzinfo=None))
    return report


def parse_deadline(text: str) -> datetime:
    """A deadline written ``YYYY-MM-DD HH:MM`` (UTC) or ISO 8601 with an offset."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"deadline {text!r}: write it as 'YYYY-MM-DD HH:MM' (UTC) or ISO 8601 with an offset, "
                         "e.g. '2026-10-09 23:59' or '2026-10-09T23:59+02:00'") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _read_time(path: Path) -> datetime | None:
    try:
        return datetime.strptime(path.read_text().strip(), TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
