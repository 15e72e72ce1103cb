"""A look at each submitted notebook before it runs: what a student changed that grading must not trust.

Nothing here decides a score. nbgrader's sanitising steps already grade a submission from the
instructor's cells (``OverwriteCells`` puts back locked and test cells, their type and points;
``add_missing_cells`` puts back deleted test cells; ``DeduplicateIds`` and ``OverwriteKernelspec`` do
what their names say). The preflight reports each of those changes so the instructor sees them, and
repairs the one thing nbgrader cannot read: a notebook that is not valid JSON or is too large is replaced
by the released one (the student's answers are lost, so it scores 0, and the report says why).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

MAX_NOTEBOOK_BYTES = 20 << 20  # a lesson notebook with all its outputs is a few MB
MAX_FOLDER_BYTES = 100 << 20


@dataclass
class Finding:
    notebook: str
    problem: str

    def __str__(self) -> str:
        return f"{self.notebook}: {self.problem}"


@dataclass
class Preflight:
    """What the preflight of one submission found (and repaired)."""

    student: str
    findings: list[Finding] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _graded_cells(nb) -> dict[str, dict]:
    cells = {}
    for cell in nb.cells:
        meta = _meta(cell)
        if meta.get("grade_id") and (meta.get("grade") or meta.get("solution") or meta.get("locked")):
            cells.setdefault(meta["grade_id"], {"type": cell.cell_type, **meta})
    return cells


def check_notebook(name: str, submitted: nbformat.NotebookNode, source: nbformat.NotebookNode) -> list[Finding]:
    """Differences between a submitted notebook and the instructor's source that grading overrides."""
    found = []
    ids = [_meta(c).get("grade_id") for c in submitted.cells if _meta(c).get("grade_id")]
    for gid, n in Counter(ids).items():
        if n > 1:
            found.append(Finding(name, f"grade_id {gid!r} appears {n} times"))
    expected, given = _graded_cells(source), _graded_cells(submitted)
    for gid in sorted(set(given) - set(expected)):
        found.append(Finding(name, f"unknown grade_id {gid!r}"))
    for gid, want in expected.items():
        have = given.get(gid)
        if have is None:
            found.append(Finding(name, f"cell {gid!r} was removed or lost its grading metadata"))
            continue
        if have["type"] != want["type"]:
            found.append(Finding(name, f"cell {gid!r} was turned into a {have['type']} cell"))
        for key in ("grade", "solution", "locked"):
            if bool(have.get(key)) != bool(want.get(key)):
                found.append(Finding(name, f"cell {gid!r}: '{key}' was changed"))
        if want.get("grade") and float(have.get("points", 0) or 0) != float(want.get("points", 0) or 0):
            found.append(Finding(name, f"cell {gid!r}: points changed from {want.get('points')} "
                                       f"to {have.get('points')}"))
    if submitted.metadata.get("kernelspec", {}).get("name") != source.metadata.get("kernelspec", {}).get("name"):
        found.append(Finding(name, f"kernelspec changed to {submitted.metadata.get('kernelspec', {}).get('name')!r}"))
    for cell in submitted.cells:
        if not _meta(cell).get("grade") and "HIDDEN TESTS" in cell.get("source", ""):
            where = _meta(cell).get("grade_id") or "a cell without grade_id"
            found.append(Finding(name, f"a student cell mentions the hidden-test marker ({where})"))
            break
    return found


def repair_metadata(nb: nbformat.NotebookNode) -> bool:
    """Make the grading metadata one that nbgrader can read: a cell whose nbgrader metadata has no
    grade_id, and every repeat of a grade_id after its first cell, lose their nbgrader metadata (nbgrader
    0.9 stops on both). Returns whether anything changed."""
    seen, changed = set(), False
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            continue
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if not isinstance(gid, str) or not gid or gid in seen:
            del cell.metadata["nbgrader"]
            changed = True
        else:
            seen.add(gid)
    return changed


def preflight_submission(folder: Path, student: str, sources: dict[str, Path], released: dict[str, Path],
                         repair: bool = True, keep: Path | None = None) -> Preflight:
    """Check (and with ``repair``, make gradable) the submission in ``folder``.

    ``sources`` and ``released`` map notebook names (``01a_likelihood``) to the instructor's source and the
    released student version. A repaired notebook's original is kept in ``keep`` (a folder) first.
    """
    report = Preflight(student)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    if total > MAX_FOLDER_BYTES:
        report.findings.append(Finding("(folder)", f"{total} bytes, over the limit of {MAX_FOLDER_BYTES}"))
    for name, source_path in sources.items():
        path = folder / f"{name}.ipynb"
        if not path.is_file():
            report.findings.append(Finding(name, "missing: scored 0"))
            continue
        size = path.stat().st_size
        problem = None
        if size > MAX_NOTEBOOK_BYTES:
            problem = f"{size} bytes, over the limit of {MAX_NOTEBOOK_BYTES}"
        else:
            try:
                with open(path, encoding="utf-8") as f:
                    submitted = nbformat.read(f, 4)
                nbformat.validate(submitted)
            except (ValueError, json.JSONDecodeError, nbformat.ValidationError, UnicodeDecodeError) as err:
                problem = f"not a readable notebook ({type(err).__name__}: {str(err)[:120]})"
        if problem:
            report.findings.append(Finding(name, problem))
            if repair:
                _keep(path, keep)
                path.write_bytes(released[name].read_bytes())
                report.repaired.append(f"{name}: replaced by the released notebook")
            continue
        report.findings += check_notebook(name, submitted, nbformat.read(source_path, 4))
        if repair and repair_metadata(submitted):
            _keep(path, keep)
            nbformat.write(submitted, path)
            report.repaired.append(f"{name}: grading metadata of repeated or nameless cells removed")
    return report


def _keep(path: Path, keep: Path | None) -> None:
    """Copy the student's original file into ``keep`` (once: a second preflight keeps the first original)."""
    if keep is None:
        return
    keep.mkdir(parents=True, exist_ok=True)
    if not (keep / path.name).exists():
        tmp = keep / f".{path.name}.tmp"
        tmp.write_bytes(path.read_bytes())
        tmp.replace(keep / path.name)
