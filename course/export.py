"""`python -m course export --by cell`: grades per exercise and per question, one row per student.

Read from the gradebook. Every student in it (the roster, and whoever was collected) has a row for every
lesson that was released; a student who submitted nothing scores 0 there, with ``submitted`` = no. Columns:

    student_id, first_name, last_name, email, lesson, submitted, late_seconds,
    <notebook>:<grade_id> /<points> ... (one per graded cell: an exercise's test or a question),
    total, max_score

The file is written atomically (a failed export leaves the last one as it was).
"""

from __future__ import annotations

import csv
from pathlib import Path

from course import GRADING, ROOT


def cell_grades(root: Path = ROOT, lessons: list[str] | None = None) -> tuple[list[str], list[dict]]:
    """(columns, rows) of the per-cell grades of ``lessons`` (default: every lesson in the gradebook)."""
    from nbgrader.api import MissingEntry

    from course.autograde import open_gradebook

    with open_gradebook(root) as gb:
        assignments = [a for a in gb.assignments if lessons is None or a.name in lessons]
        cells = {a.name: [(nb.name, c.name, c.max_score) for nb in a.notebooks for c in nb.grade_cells]
                 for a in assignments}
        label = {(a, nb, gid): f"{nb}:{gid} /{m:g}" for a, cs in cells.items() for nb, gid, m in cs}
        columns = ["student_id", "first_name", "last_name", "email", "lesson", "submitted", "late_seconds"]
        columns += [label[(a.name, nb, gid)] for a in assignments for nb, gid, _ in cells[a.name]]
        columns += ["total", "max_score"]
        rows = []
        for student in sorted(gb.students, key=lambda s: s.id):
            for a in assignments:
                row = {"student_id": student.id, "first_name": student.first_name or "",
                       "last_name": student.last_name or "", "email": student.email or "", "lesson": a.name}
                try:
                    sub = gb.find_submission(a.name, student.id)
                except MissingEntry:
                    sub = None
                row["submitted"] = "yes" if sub is not None else "no"
                row["late_seconds"] = round(sub.total_seconds_late) if sub is not None else 0
                total = 0.0
                for nb, gid, _ in cells[a.name]:
                    score = 0.0
                    if sub is not None:
                        try:
                            grade = gb.find_grade(gid, nb, a.name, student.id)
                            score = float(grade.score or 0.0)
                        except MissingEntry:
                            score = 0.0
                    row[label[(a.name, nb, gid)]] = score
                    total += score
                row["total"] = total
                row["max_score"] = sum(m for _, _, m in cells[a.name])
                rows.append(row)
    return columns, rows


def export_cells(path: Path | None = None, root: Path = ROOT, lessons: list[str] | None = None) -> Path:
    """Write the per-cell grades as CSV (default ``course/grading/grades-by-cell.csv``); returns the path."""
    columns, rows = cell_grades(root, lessons)
    path = Path(path) if path else Path(root) / GRADING / "grades-by-cell.csv"
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path
