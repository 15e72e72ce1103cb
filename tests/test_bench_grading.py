"""`python -m course bench grading` on the small example lesson: it grades a generated class three ways
and reports rates and the sandbox's overhead (figures are printed, never asserted)."""

from __future__ import annotations

import pytest
from _course_support import EXAMPLE, write_example_lesson

import course
from course.bench_grading import bench_grading, report
from course.fakeclass import ATTACKS
from course.sandbox import probe_bwrap

pytestmark = [pytest.mark.slow, pytest.mark.skipif(probe_bwrap() is not None, reason="no sandbox")]


def test_bench_grading_grades_a_generated_class_and_reports(tmp_path, capsys):
    (tmp_path / "course").mkdir()
    for path in (course.ROOT / "course").glob("*.py"):
        (tmp_path / "course" / path.name).write_bytes(path.read_bytes())
    write_example_lesson(tmp_path)
    course.nbgrader(["generate_assignment", EXAMPLE, "--force"], root=tmp_path, check=True, capture_output=True)
    size = 3 + len(ATTACKS)
    r = bench_grading(size=size, lesson=EXAMPLE, workers=2, sample=1, root=tmp_path)
    assert r["statuses"] == {"graded": size, "timed out": 0, "error": 0}
    assert r["scores"]["correct"] == (8.0, 8.0) and r["scores"]["blank"] == (0.0, 0.0)
    partial = next(v for s, v in r["per_student"].items() if "-partial-" in s)
    assert all(v <= partial for s, v in r["per_student"].items() if s.split("-")[1] in ATTACKS), r["per_student"]
    assert r["serial_per_min"] > 0 and r["parallel_per_min"] > 0 and r["unsafe_mean"] > 0
    text = report(r)
    assert "submissions/min" in text and "x serial" in text and "sandbox overhead" in text
    with pytest.raises(ValueError, match="positive number"):
        bench_grading(size=0, lesson=EXAMPLE, root=tmp_path)
