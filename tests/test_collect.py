"""Collecting a class from LMS exports (Canvas, Moodle, zips, nbgrader's layout) and the roster."""

from __future__ import annotations

import io
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest

import course
from course.collect import collect, identify, import_roster, parse_deadline

LESSON = "07_demo"
NOTEBOOKS = {"07a_first", "07b_second"}


def _nb(text: str) -> bytes:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(text)])
    return nbformat.writes(nb).encode()


@pytest.fixture
def root(tmp_path) -> Path:
    for name in NOTEBOOKS:
        folder = tmp_path / "assessments" / LESSON
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.ipynb").write_bytes(_nb("pass"))
    return tmp_path


def _write(path: Path, data: bytes, when: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (when.timestamp(), when.timestamp()))


def _submitted(root: Path, student: str, nb: str) -> str:
    return nbformat.read(root / course.GRADING / "submitted" / student / LESSON / f"{nb}.ipynb", 4).cells[0].source


ON_TIME = datetime(2026, 10, 9, 20, 0, tzinfo=UTC)
LATE = datetime(2026, 10, 10, 9, 30, tzinfo=UTC)
DEADLINE = parse_deadline("2026-10-09 23:59")


def test_names_of_each_lms_are_understood():
    roster = [{"id": "ada", "canvas_id": "4821", "moodle_id": "77"}]
    from pathlib import PurePosixPath as P

    assert identify(P("lovelaceada_4821_99120_07a_first.ipynb"), NOTEBOOKS, roster) == ("ada", "07a_first", False)
    assert identify(P("lovelaceada_LATE_4821_99120_07a_first-2.ipynb"), NOTEBOOKS, roster) == (
        "ada", "07a_first", True)
    assert identify(P("Ada Lovelace_77_assignsubmission_file_/07b_second.ipynb"), NOTEBOOKS, roster) == (
        "ada", "07b_second", False)
    assert identify(P("grace/07b_second.ipynb"), NOTEBOOKS, roster) == ("grace", "07b_second", False)
    assert identify(P("hopper_5_6_07z_other.ipynb"), NOTEBOOKS, roster) is None
    assert identify(P("notes.txt"), NOTEBOOKS, roster) is None
    assert identify(P("07a_first.ipynb"), NOTEBOOKS, roster) is None  # no student in the name


def test_a_mixed_class_is_collected_with_late_and_missing_students(root, tmp_path):
    roster_csv = tmp_path / "roster.csv"
    roster_csv.write_text("id,first_name,last_name,email,canvas_id,moodle_id\n"
                          "ada,Ada,Lovelace,ada@example.org,4821,\n"
                          "grace,Grace,Hopper,,,77\n"
                          "alan,Alan,Turing,,,\n")
    assert [r["id"] for r in import_roster(roster_csv, root)] == ["ada", "grace", "alan"]
    canvas = tmp_path / "canvas"
    _write(canvas / "lovelaceada_4821_99120_07a_first.ipynb", _nb("ada first, old"), ON_TIME)
    _write(canvas / "lovelaceada_4821_99121_07a_first-1.ipynb", _nb("ada first, new"), ON_TIME.replace(hour=21))
    _write(canvas / "lovelaceada_LATE_4821_99122_07b_second.ipynb", _nb("ada second"), LATE)
    _write(canvas / "hopperx_999_1_07a_first.ipynb", _nb("not in the roster"), ON_TIME)
    _write(canvas / "readme.txt", b"ignored", ON_TIME)
    moodle = io.BytesIO()
    with zipfile.ZipFile(moodle, "w") as z:
        z.writestr(zipfile.ZipInfo("Grace Hopper_77_assignsubmission_file_/07b_second.ipynb",
                                   date_time=LATE.timetuple()[:6]), _nb("grace second"))
        z.writestr(zipfile.ZipInfo("Grace Hopper_77_assignsubmission_file_/07q_unknown.ipynb",
                                   date_time=ON_TIME.timetuple()[:6]), _nb("?"))
    _write(tmp_path / "moodle.zip", moodle.getvalue(), LATE)
    report = collect(LESSON, [canvas, tmp_path / "moodle.zip"], root=root, deadline=DEADLINE)
    assert report.collected == {"ada": ["07a_first", "07b_second"], "grace": ["07b_second"],
                                "hopperx": ["07a_first"]}
    assert _submitted(root, "ada", "07a_first") == "ada first, new", "the later of two submissions is kept"
    assert set(report.late) == {"ada", "grace"}
    assert "marked late" in report.late["ada"] and "after the deadline" in report.late["grace"]
    assert report.missing == ["alan"] and report.not_in_roster == ["hopperx"]
    assert any("07q_unknown" in u for u in report.unmatched)
    stamp = (root / course.GRADING / "submitted" / "grace" / LESSON / "timestamp.txt").read_text()
    assert stamp == "2026-10-10 09:30:00.000000 UTC"
    from nbgrader.utils import parse_utc

    assert parse_utc(stamp) == LATE.replace(tzinfo=None)  # what nbgrader reads
    text = report.summary()
    assert "3 students collected, 2 late, 1 in the roster sent nothing" in text and "alan" in text


def test_bad_rosters_and_deadlines_are_refused_clearly(root, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,email\nada,a@b\n")
    with pytest.raises(ValueError, match="needs an 'id' column"):
        import_roster(bad, root)
    bad.write_text("id\nada\nada\n")
    with pytest.raises(ValueError, match="appear twice"):
        import_roster(bad, root)
    bad.write_text("id\nada lovelace\n")
    with pytest.raises(ValueError, match="letters, digits"):
        import_roster(bad, root)
    with pytest.raises(ValueError, match="YYYY-MM-DD HH:MM"):
        parse_deadline("next friday")
    assert parse_deadline("2026-10-09T23:59+02:00") == datetime(2026, 10, 9, 21, 59, tzinfo=UTC)
    with pytest.raises(FileNotFoundError):
        collect(LESSON, [tmp_path / "nowhere"], root=root)
