"""``lmlab bench sweep``: a scaling sweep (:func:`lmlab.scaling.run_sweep`) timed in one process and with workers.

The same grid of shapes x FLOP budgets is swept twice, each time into a fresh file in a temporary directory
(deleted after): first in this process (``workers=1``), then in ``workers`` spawned processes. For each
sweep: the wall time around ``run_sweep``, runs per minute, and where the time went. In one process the wall
time splits exactly into the runs' training (``SweepRecord.seconds``), their final evaluations
(``SweepRecord.eval_seconds``) and the rest, which the moments the records arrive (``on_record``) divide
into: before the first run (planning, building the data set, the first model), between runs (each later
model and Trainer, the file rewritten after every run) and after the last. The ratio of the two sweeps' runs
per minute is the parallel speed-up. The named peer for achieved GFLOP/s (``record.flops /
record.seconds``, training only) of the smallest and the largest model is this machine's one-thread fp32
1024x1024 matmul rate (:func:`lmlab.bench.matmul_gflops`), one thread because every run trains with
``SweepConfig.threads = 1``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmlab.checks import check_int
from lmlab.scaling import MarkovData, ModelShape, SweepConfig, SweepRecord, plan_sweep, run_sweep

__all__ = ["bench_sweep", "SweepBenchResult", "SweepTiming", "SWEEP_BENCH_CONFIG", "SWEEP_BENCH_QUICK_CONFIG"]

# The default grid: 4 shapes x 3 FLOP budgets = 12 runs, estimated at 30-45 s in one process on two idle CPU
# cores from a few timed steps (the largest model trains at about 60 GFLOP/s on one thread, the smallest at 14).
SWEEP_BENCH_CONFIG = SweepConfig(
    data=MarkovData(vocab_size=256, order=1, seed=0, n_train=1_000_000, n_val=20_000),
    shapes=(ModelShape(2, 24, 2), ModelShape(3, 48, 3), ModelShape(4, 64, 4), ModelShape(4, 128, 4)),
    budgets=(3e10, 6e10, 1.2e11),
    block_size=64,
    batch_size=16,
    threads=1,
)
# The quick grid for tests: 2 tiny shapes x 2 budgets, a few seconds (most of it spawning the workers).
SWEEP_BENCH_QUICK_CONFIG = SweepConfig(
    data=MarkovData(vocab_size=16, order=1, seed=0, n_train=20_000, n_val=2_000),
    shapes=(ModelShape(1, 16, 2), ModelShape(1, 32, 2)),
    budgets=(3e8, 6e8),
    block_size=16,
    batch_size=4,
    warmup_steps=2,
    threads=1,
)


@dataclass
class SweepTiming:
    """One timed ``run_sweep`` call into a fresh file: its wall time and its records, in the order they came."""

    workers: int
    wall_seconds: float  # around run_sweep, planning and (in a process that had not yet) building the data included
    records: list[SweepRecord]
    finished_at: list[float] = field(default_factory=list)  # seconds after the start when each record was written

    @property
    def runs(self) -> int:
        return len(self.records)

    @property
    def runs_per_minute(self) -> float:
        return 60.0 * self.runs / self.wall_seconds

    @property
    def train_seconds(self) -> float:
        """Σ ``record.seconds``: training time of every run, without its final evaluation."""
        return sum(r.seconds for r in self.records)

    @property
    def eval_seconds(self) -> float:
        """Σ ``record.eval_seconds``: every run's final evaluation on the whole validation split."""
        return sum(r.eval_seconds for r in self.records)

    @property
    def overhead(self) -> float:
        """(wall − Σ training seconds) / wall: the share of the wall time not spent in training steps (one
        process; with workers, training time of several processes overlaps, so see :attr:`busy`)."""
        return (self.wall_seconds - self.train_seconds) / self.wall_seconds

    @property
    def busy(self) -> float:
        """Σ (training + evaluation seconds) / (workers x wall): how much of the workers' time ran runs."""
        return (self.train_seconds + self.eval_seconds) / (self.workers * self.wall_seconds)

    def parts(self) -> dict[str, float]:
        """The one-process wall time in seconds, split exactly (their sum is ``wall_seconds``): "training",
        "final evaluations", "before the first run" (planning, building the data, the first model and Trainer,
        the first file write), "between runs" (each later run's model and Trainer construction and the file
        rewritten after it) and "after the last run". Only for ``workers == 1``: runs in parallel overlap."""
        if self.workers != 1:
            raise ValueError(f"the wall time splits into parts in one process only, not with {self.workers} workers")
        if not self.records:
            return {"training": 0.0, "final evaluations": 0.0, "before the first run": self.wall_seconds,
                    "between runs": 0.0, "after the last run": 0.0}  # fmt: skip
        spans = [r.seconds + r.eval_seconds for r in self.records]
        gaps = [b - a for a, b in zip([0.0, *self.finished_at[:-1]], self.finished_at, strict=True)]
        return {
            "training": self.train_seconds,
            "final evaluations": self.eval_seconds,
            "before the first run": gaps[0] - spans[0],
            "between runs": sum(g - s for g, s in zip(gaps[1:], spans[1:], strict=True)),
            "after the last run": self.wall_seconds - self.finished_at[-1],
        }

    def gflops(self, shape: str) -> float:
        """Achieved GFLOP/s of the runs of ``shape`` (its name, e.g. "L2-d24-h2"): Σ flops / Σ training seconds."""
        runs = [r for r in self.records if r.shape.name == shape]
        if not runs:
            raise ValueError(f"no run of shape {shape!r} in this sweep")
        return sum(r.flops for r in runs) / sum(r.seconds for r in runs) / 1e9


@dataclass
class SweepBenchResult:
    """Everything ``lmlab bench sweep`` measured; :meth:`report` prints it."""

    config: SweepConfig
    planned_runs: int
    one_process: SweepTiming  # workers=1, in this process
    parallel: SweepTiming  # workers=N, spawned processes (N=1: a second one-process sweep, a repeat)
    smallest: str  # shape names, by non-embedding parameters
    largest: str
    reference_gflops: float  # the peer: one-thread fp32 1024x1024 matmul, GFLOP/s
    reference_name: str
    identical: bool  # both sweeps gave the same losses run for run
    seconds: float  # wall time of the whole bench
    load: tuple[float, float] | None = None  # the 1-minute load average at the start and the end (Unix)

    @property
    def ratio(self) -> float:
        """Runs per minute with the workers divided by runs per minute in one process (> 1: parallel is faster)."""
        return self.parallel.runs_per_minute / self.one_process.runs_per_minute

    def share_of_reference(self, gflops: float) -> float:
        return gflops / self.reference_gflops

    def report(self) -> str:
        c, one, par = self.config, self.one_process, self.parallel
        budgets = ", ".join(f"{b:.3g}" for b in c.budgets)
        n = par.workers
        par_name = f"{n} workers (spawned processes)" if n > 1 else "one process again (workers=1, a repeat)"
        out = [
            f"sweep bench: lmlab.scaling.run_sweep of {len(c.shapes)} shapes x {len(c.budgets)} {c.budget_kind} "
            f"budgets ({budgets}) = {self.planned_runs} runs; block {c.block_size}, batch {c.batch_size}, "
            f"{c.threads} thread(s) per run, device {c.device}; each sweep into a fresh file",
            f"  data: {c.data.describe()}",
            f"  {'':40}{'runs':>6}{'wall s':>9}{'runs/min':>10}{'train s':>9}{'eval s':>8}{'not training':>14}"
            f"{'workers busy':>14}",
        ]
        for name, t in (("one process (workers=1)", one), (par_name, par)):
            idle = f"{t.overhead:14.1%}" if t.workers == 1 else f"{'n/a':>14}"  # parallel runs overlap
            out.append(f"  {name:40}{t.runs:>6}{t.wall_seconds:9.1f}{t.runs_per_minute:10.1f}{t.train_seconds:9.1f}"
                       f"{t.eval_seconds:8.1f}{idle}{t.busy:14.1%}")  # fmt: skip
        parts = one.parts()
        out.append(f"  one process, where the wall time went: (wall - training) / wall = {one.overhead:.1%}:")
        what = {
            "final evaluations": "the exact loss on the whole validation split, once per run",
            "before the first run": "planning, building the data set, the first model and Trainer, first write",
            "between runs": "each later model and Trainer, the records file rewritten after every run",
            "after the last run": "returning the records",
        }
        for key in ("training", *what):
            note = f"  ({what[key]})" if key in what else ""
            out.append(f"    {key:22}{parts[key]:8.2f} s{parts[key] / one.wall_seconds:8.1%}{note}")
        between = parts["between runs"] / one.wall_seconds
        out.append(f"    overhead between runs: {between:.2%} of the wall time "
                   f"({'under' if between < 0.05 else 'NOT under'} the 5% target)")  # fmt: skip
        out.append(f"  ratio {par_name.split(' (')[0]} / one process, runs per minute: {self.ratio:.2f}x"
                   f" (on {os.cpu_count()} CPUs)")  # fmt: skip
        out.append("  achieved GFLOP/s (record.flops / record.seconds, training only) against the peer:")
        out.append(f"    {'shape':22}{'params':>10}{'one process':>13}{'of peer':>9}{'in parallel':>13}{'of peer':>9}")
        params = {r.shape.name: r.n_params for r in one.records}
        for label, shape in (("smallest", self.smallest), ("largest", self.largest)):
            g1, gp = one.gflops(shape), par.gflops(shape)
            out.append(f"    {shape + ' (' + label + ')':22}{params[shape]:>10,}{g1:13.2f}"
                       f"{self.share_of_reference(g1):9.1%}{gp:13.2f}{self.share_of_reference(gp):9.1%}")  # fmt: skip
        out.append(f"  peer: {self.reference_name} = {self.reference_gflops:,.1f} GFLOP/s (lmlab.bench.matmul_gflops)")
        out.append(f"  identical losses in both sweeps, run for run: {'yes' if self.identical else 'NO'}")
        took = f"bench took {self.seconds:.0f} s"
        if self.load is not None:
            took += (f"; load average {self.load[0]:.2f} at the start, {self.load[1]:.2f} at the end, on "
                     f"{os.cpu_count()} CPUs (other work on them slows the workers unevenly)")  # fmt: skip
        out.append(took)
        return "\n".join(out)


def _timed_sweep(config: SweepConfig, path: Path, workers: int) -> SweepTiming:
    """``run_sweep`` into a fresh ``path``, timed, with the moment each record arrived."""
    records: list[SweepRecord] = []
    finished_at: list[float] = []

    def arrived(record: SweepRecord) -> None:
        finished_at.append(time.perf_counter() - t0)
        records.append(record)

    t0 = time.perf_counter()
    returned = run_sweep(config, path, workers=workers, command="lmlab bench sweep", progress=False,
                         estimate=False, on_record=arrived)  # fmt: skip
    wall = time.perf_counter() - t0
    if [r.run_id for r in returned] != [r.run_id for r in records]:
        raise RuntimeError(f"run_sweep returned other runs than it reported: {len(returned)} vs {len(records)}")
    return SweepTiming(workers, wall, records, finished_at)


def _one_thread_matmul_gflops(repeats: int) -> float:
    from lmlab.bench import matmul_gflops  # here: lmlab.bench re-exports this module

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return matmul_gflops(repeats=repeats)
    finally:
        torch.set_num_threads(threads)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def bench_sweep(config: SweepConfig | None = None, *, quick: bool = False, workers: int = 2) -> SweepBenchResult:
    """Time a scaling sweep in one process and with ``workers`` processes; GFLOP/s against one-thread matmul.

    ``config`` is the grid (default :data:`SWEEP_BENCH_CONFIG`: 4 shapes from L2-d24-h2 to L4-d128-h4 x 3
    FLOP budgets, 12 runs, estimated at one to two minutes for the whole bench on two idle cores; ``quick``:
    :data:`SWEEP_BENCH_QUICK_CONFIG`, seconds). First the peer, the fp32 1024x1024 matmul rate on one
    thread (best of 5 times 20 matmuls; 5 times 2 with ``quick``); then :func:`lmlab.scaling.run_sweep`
    with ``workers=1`` (this process: it builds the data set inside its wall time, unless this process has
    built it before), then with ``workers`` (spawned processes, each building its own data set), each into
    a fresh file of a temporary directory that is deleted after. ``workers=1`` makes the second sweep a
    repeat of the first (its ratio shows the noise). Times in seconds, rates in GFLOP/s.
    """
    if config is not None and quick:
        raise ValueError("pass either config or quick=True, not both")
    config = config if config is not None else SWEEP_BENCH_QUICK_CONFIG if quick else SWEEP_BENCH_CONFIG
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}")
    check_int("workers", workers, 1)
    t_start, load_start = time.perf_counter(), _load_average()
    reference = _one_thread_matmul_gflops(2 if quick else 20)  # 20: matmul_gflops' default, 3.5 s on one thread
    with tempfile.TemporaryDirectory(prefix="lmlab-bench-sweep-") as tmp:
        one = _timed_sweep(config, Path(tmp) / "one-process.jsonl", 1)
        parallel = _timed_sweep(config, Path(tmp) / f"workers-{workers}.jsonl", workers)
    planned = plan_sweep(config).runs  # the data set is built already: cheap
    for t in (one, parallel):
        if sorted(r.run_id for r in t.records) != sorted(r.run_id for r in planned):
            raise RuntimeError(f"the sweep with workers={t.workers} trained {t.runs} runs, planned {len(planned)}")
    params = {r.shape.name: r.n_params for r in planned}
    losses = {r.run_id: r.loss for r in one.records}
    load_end = _load_average()
    return SweepBenchResult(
        config=config, planned_runs=len(planned), one_process=one, parallel=parallel,
        smallest=min(params, key=params.__getitem__), largest=max(params, key=params.__getitem__),
        reference_gflops=reference, reference_name="1024x1024 fp32 matmul, 1 thread",
        identical=all(losses[r.run_id] == r.loss for r in parallel.records),
        seconds=time.perf_counter() - t_start,
        load=None if load_start is None or load_end is None else (load_start, load_end),
    )  # fmt: skip
