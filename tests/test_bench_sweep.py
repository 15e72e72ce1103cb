"""lmlab bench sweep: one process against parallel workers, the wall time split into its parts, the matmul peer.

No test asserts on how fast anything is: only that the figures are consistent with each other.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from lmlab.bench import SWEEP_BENCH_CONFIG, SWEEP_BENCH_QUICK_CONFIG, SweepBenchResult, bench_sweep
from lmlab.cli import build_parser, main
from lmlab.scaling import ModelShape, plan_sweep


def _check_consistent(result: SweepBenchResult) -> None:
    planned = plan_sweep(result.config).runs
    assert result.planned_runs == len(planned)
    for t in (result.one_process, result.parallel):
        assert t.runs == len(planned) == len(t.finished_at)
        assert sorted(r.run_id for r in t.records) == sorted(r.run_id for r in planned)
        assert t.finished_at == sorted(t.finished_at) and 0 < t.finished_at[-1] <= t.wall_seconds
        assert t.runs_per_minute == pytest.approx(60 * t.runs / t.wall_seconds)
        assert 0 < t.train_seconds < t.wall_seconds * t.workers and t.eval_seconds >= 0
        assert 0 < t.busy
    one = result.one_process
    assert 0 <= one.overhead < 1
    parts = one.parts()
    assert sum(parts.values()) == pytest.approx(one.wall_seconds)
    assert parts["training"] == one.train_seconds and parts["final evaluations"] == one.eval_seconds
    assert all(v >= -1e-6 for v in parts.values()), parts  # the parts are measured, so never negative
    assert result.ratio > 0
    assert result.ratio == result.parallel.runs_per_minute / result.one_process.runs_per_minute
    assert result.reference_gflops > 0 and result.identical
    for shape in (result.smallest, result.largest):
        for t in (one, result.parallel):
            runs = [r for r in t.records if r.shape.name == shape]
            assert t.gflops(shape) == sum(r.flops for r in runs) / sum(r.seconds for r in runs) / 1e9 > 0
    report = result.report()
    assert "peer: 1024x1024 fp32 matmul, 1 thread = " in report
    assert f"{result.ratio:.2f}x" in report and f"{one.overhead:.1%}" in report
    assert f"{result.smallest} (smallest)" in report and f"{result.largest} (largest)" in report
    share = result.share_of_reference(one.gflops(result.largest))
    assert share == one.gflops(result.largest) / result.reference_gflops and f"{share:9.1%}" in report
    assert "identical losses in both sweeps, run for run: yes" in report


def test_the_quick_bench_counts_every_planned_run_and_its_figures_agree():
    result = bench_sweep(quick=True, workers=1)  # in this process: the second sweep repeats the first
    assert result.config == SWEEP_BENCH_QUICK_CONFIG
    assert (result.smallest, result.largest) == ("L1-d16-h2", "L1-d32-h2")
    assert result.one_process.workers == result.parallel.workers == 1
    _check_consistent(result)
    assert "one process again (workers=1, a repeat)" in result.report()


@pytest.mark.slow
def test_the_quick_bench_with_two_workers():
    result = bench_sweep(quick=True, workers=2)  # spawns two processes, which import torch
    assert result.parallel.workers == 2
    _check_consistent(result)
    assert "2 workers (spawned processes)" in result.report()
    with pytest.raises(ValueError, match="in one process only"):
        result.parallel.parts()


def test_smallest_and_largest_are_by_parameters_not_by_order():
    config = replace(SWEEP_BENCH_QUICK_CONFIG, shapes=(ModelShape(1, 32, 2), ModelShape(1, 16, 2)), budgets=(3e8,))
    result = bench_sweep(config, workers=1)
    assert (result.smallest, result.largest) == ("L1-d16-h2", "L1-d32-h2")
    _check_consistent(result)


def test_the_default_grid_spans_the_issue_shapes_and_bad_input_is_refused():
    names = [s.name for s in SWEEP_BENCH_CONFIG.shapes]
    assert names[0] == "L2-d24-h2" and names[-1] == "L4-d128-h4" and SWEEP_BENCH_CONFIG.threads == 1
    assert len(plan_sweep(SWEEP_BENCH_CONFIG, vocab_size=256).runs) == 12  # planned without building the data
    with pytest.raises(ValueError, match="either config or quick"):
        bench_sweep(SWEEP_BENCH_QUICK_CONFIG, quick=True)
    with pytest.raises(ValueError, match="workers"):
        bench_sweep(quick=True, workers=0)
    with pytest.raises(TypeError, match="config must be a SweepConfig"):
        bench_sweep({"shapes": ()})


def test_cli_bench_sweep_prints_the_report(capsys):
    args = build_parser().parse_args(["bench", "sweep", "--quick"])
    assert (args.what, args.quick, args.workers) == ("sweep", True, 2)
    assert main(["bench", "sweep", "--quick", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("sweep bench: lmlab.scaling.run_sweep of 2 shapes x 2 flops budgets")
    row = next(line for line in lines if line.startswith("  one process (workers=1)")).split()
    runs, wall, rate = int(row[3]), float(row[4]), float(row[5])
    assert runs == 4 and math.isfinite(wall) and wall > 0 and rate > 0
    assert "overhead between runs:" in out and "peer: 1024x1024 fp32 matmul, 1 thread" in out
    assert main(["bench", "sweep", "--quick", "--workers", "0"]) == 2
    assert "workers" in capsys.readouterr().err
