"""Feedback shows no hidden test code, in cells or in outputs (used by course/nbgrader_config.py)."""

from __future__ import annotations

from nbformat import NotebookNode

MIN_LINE = 8  # a shorter hidden line (`)`, `pass`) says nothing about the test
REPLACEMENT = "[line removed from the feedback: it quoted hidden test code]"


def _normal(text: str) -> str:
    return " ".join(text.split())


def is_test_cell(cell: NotebookNode) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def hidden_lines(nb: NotebookNode, begin: str = "BEGIN HIDDEN TESTS", end: str = "END HIDDEN TESTS") -> list[str]:
    """The lines inside hidden-test regions of the notebook's test cells (whitespace normalised).

    Only test cells count: a student's own cell that contains the markers (in a comment, say) is neither
    a source of hidden lines nor an error.
    """
    lines = []
    for cell in nb.cells:
        if not is_test_cell(cell):
            continue
        inside = False
        for line in cell.source.split("\n"):
            if begin in line:
                inside = True
            elif end in line:
                inside = False
            elif inside and len(_normal(line)) >= MIN_LINE:
                lines.append(_normal(line))
    return lines


def _scrub(text: str, hidden: list[str]) -> str:
    out = []
    for line in text.split("\n"):
        flat = _normal(line)
        out.append(REPLACEMENT if flat and any(h in flat for h in hidden) else line)
    return "\n".join(out)


def scrub_hidden_lines(nb: NotebookNode, hidden: list[str]) -> int:
    """Blank every output line of every cell that quotes one of ``hidden``; returns how many outputs changed."""
    if not hidden:
        return 0
    changed = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            before = repr(output)
            if output.output_type == "stream":
                output.text = _scrub(output.text, hidden)
            elif output.output_type == "error":
                output.traceback = [_scrub(t, hidden) for t in output.traceback]
                output.evalue = _scrub(output.evalue, hidden)
            else:
                data = output.get("data", {})
                for mime, value in list(data.items()):
                    if isinstance(value, str) and (mime.startswith("text/") or mime == "application/javascript"):
                        data[mime] = _scrub(value, hidden)
                    elif isinstance(value, list):
                        data[mime] = [_scrub(v, hidden) if isinstance(v, str) else v for v in value]
            changed += repr(output) != before
    return changed
