"""`python -m course bench grading` on the example lesson: it grades a generated class three ways and
reports rates and the sandbox's overhead (figures are printed, never asserted)."""

from __future__ import annotations

import pytest

from course.bench_grading import bench_grading, report
from course.fakeclass import ATTACKS
from course.sandbox import probe_bwrap

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200),
              pytest.mark.skipif(probe_bwrap() is not None, reason="no sandbox")]


def test_bench_grading_grades_a_generated_class_and_reports():
    size = 4  # correct, partial, blank and the first attack: the adversarial suite grades all attacks
    r = bench_grading(size=size, workers=2, sample=1)
    assert sorted(s.split("-")[1] for s in r["per_student"]) == sorted(["correct", "partial", "blank",
                                                                         next(iter(ATTACKS))])
    assert r["lesson"] == "00_example"
    assert r["statuses"] == {"graded": size, "timed out": 0, "error": 0}
    assert r["scores"]["correct"] == (8.0, 8.0) and r["scores"]["blank"] == (0.0, 0.0)
    partial = next(v for s, v in r["per_student"].items() if "-partial-" in s)
    assert all(v <= partial for s, v in r["per_student"].items() if s.split("-")[1] in ATTACKS), r["per_student"]
    assert r["serial_per_min"] > 0 and r["parallel_per_min"] > 0 and r["unsafe_mean"] > 0
    text = report(r)
    assert "submissions/min" in text and "x serial" in text and "sandbox overhead" in text


def test_bench_grading_refuses_nonsense():
    with pytest.raises(ValueError, match="positive number"):
        bench_grading(size=0)
    with pytest.raises(ValueError, match="no lesson"):
        bench_grading(size=3, lesson="99_nothing")
