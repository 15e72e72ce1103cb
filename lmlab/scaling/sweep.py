"""A scaling sweep: train every model shape at every budget, one record per run, resumable.

:class:`SweepConfig` names the data (:class:`MarkovData`, the language whose entropy rate is known, or
:class:`CorpusData`), the model shapes, the budgets (training FLOPs or tokens) and the training settings
every run shares. :func:`plan_sweep` lists the runs with their exact cost before anything trains;
:func:`run_sweep` trains them with :class:`lmlab.train.Trainer`:

- each run takes ``floor(budget / cost of one step)`` optimizer steps, so it never exceeds its budget, and
  records what it used (steps, tokens, FLOPs); its cosine schedule ends at its last step;
- the records go to a JSON-lines file (a header line, then one line per run), rewritten atomically after
  every run: a killed sweep leaves every finished run on disk, and the next call trains only the rest;
- runs are independent, so ``workers > 1`` trains them in parallel processes, and ``executor=`` accepts any
  :class:`concurrent.futures.Executor` (a process pool, or Dask's ``client.get_executor()`` across
  machines); the parent process alone writes the file;
- a progress bar over the whole sweep's FLOPs, after an estimate of its time measured on this machine.

Units: budgets and FLOPs in floating-point operations (the Trainer's count, ``model.flops_per_token``
per token: 6N plus attention), losses in nats per token on the whole validation split.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from lmlab.checks import check_int, is_number
from lmlab.fileio import atomic_open
from lmlab.models import GPT, GPTConfig
from lmlab.text.data import TokenData, load_data
from lmlab.text.synthetic import MarkovSource, markov_token_data
from lmlab.train import TrainConfig, Trainer

__all__ = [
    "MarkovData",
    "CorpusData",
    "ModelShape",
    "SweepConfig",
    "PlannedRun",
    "SweepPlan",
    "SweepRecord",
    "plan_sweep",
    "run_sweep",
    "run_one",
    "load_sweep",
]

_FORMAT = "lmlab scaling sweep"
BUDGET_KINDS = ("flops", "tokens")


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class MarkovData:
    """Train and validation text sampled from :class:`lmlab.text.synthetic.MarkovSource`: a language whose
    entropy rate, the lowest loss any model can reach, is known exactly."""

    vocab_size: int = 64
    order: int = 2
    seed: int = 0
    concentration: float = 0.3
    epsilon: float = 0.01
    n_train: int = 1_000_000
    n_val: int = 50_000

    def __post_init__(self) -> None:
        self.source()  # checks the language's arguments
        check_int("n_train", self.n_train, 2)
        check_int("n_val", self.n_val, 2)

    def source(self) -> MarkovSource:
        return MarkovSource(self.vocab_size, self.order, self.seed, concentration=self.concentration,
                            epsilon=self.epsilon)  # fmt: skip

    def build(self) -> TokenData:
        return markov_token_data(self.source(), self.n_train, self.n_val, seed=self.seed)

    def entropy_rate(self) -> float:
        """The language's entropy rate in nats per token: the loss of the true model, the floor of every other."""
        return float(self.source().entropy_rate("nats"))

    def describe(self) -> str:
        return (f"Markov language: {self.vocab_size} words, order {self.order}, seed {self.seed}; "
                f"{self.n_train:,} train and {self.n_val:,} validation tokens")  # fmt: skip


@dataclass(frozen=True)
class CorpusData:
    """A corpus by name or path (:func:`lmlab.text.data.load_data`; the default is built in and offline)."""

    name: str = "python-docs"
    tokenizer: str = "char"
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"CorpusData.name must be a corpus name or path, got {self.name!r}")
        if self.tokenizer not in ("char", "byte"):
            raise ValueError(f"CorpusData.tokenizer must be 'char' or 'byte', got {self.tokenizer!r}")
        if not is_number(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise ValueError(f"CorpusData.val_fraction must be in (0, 1), got {self.val_fraction!r}")

    def build(self) -> TokenData:
        return load_data(self.name, tokenizer=self.tokenizer, val_fraction=self.val_fraction)

    def entropy_rate(self) -> None:
        """Unknown for natural text."""
        return None

    def describe(self) -> str:
        return f"corpus {self.name!r}, {self.tokenizer} tokens, {self.val_fraction:.0%} held out"


def _data_from_dict(d: dict[str, Any]) -> MarkovData | CorpusData:
    kind = d.get("kind")
    values = {k: v for k, v in d.items() if k != "kind"}
    if kind == "markov":
        return MarkovData(**values)
    if kind == "corpus":
        return CorpusData(**values)
    raise ValueError(f"unknown data kind {kind!r} (expected 'markov' or 'corpus')")


def _data_to_dict(data: MarkovData | CorpusData) -> dict[str, Any]:
    return {"kind": "markov" if isinstance(data, MarkovData) else "corpus", **asdict(data)}


@functools.lru_cache(maxsize=4)
def _built(data: MarkovData | CorpusData) -> TokenData:
    """Each process builds a data set once."""
    return data.build()


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ModelShape:
    """A GPT's shape in a sweep: ``n_layer`` blocks of width ``n_embd`` with ``n_head`` heads; ``lr``
    overrides the sweep's learning rate for this shape."""

    n_layer: int
    n_embd: int
    n_head: int
    lr: float | None = None

    def __post_init__(self) -> None:
        check_int("n_layer", self.n_layer, 1)
        check_int("n_embd", self.n_embd, 1)
        check_int("n_head", self.n_head, 1)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.lr is not None and (not is_number(self.lr) or not 0 < self.lr < 1):
            raise ValueError(f"ModelShape.lr must be None or a number in (0, 1), got {self.lr!r}")

    @property
    def name(self) -> str:
        return f"L{self.n_layer}-d{self.n_embd}-h{self.n_head}"


@dataclass(frozen=True)
class SweepConfig:
    """Every shape at every budget, trained alike.

    Each run: a fresh GPT (``block_size`` positions, initialised from ``seed``), AdamW at peak ``lr`` (or the
    shape's own) after ``warmup_steps`` (at most a tenth of the run), cosine decay to ``lr * min_lr_ratio``
    at its last step, ``batch_size`` random windows of ``block_size`` tokens per step, ``threads`` torch
    threads, on ``device``; then the exact loss on the whole validation split. A shape whose budget pays for
    fewer than ``min_steps`` steps (a large model on a small budget) is left out at that budget.
    """

    data: MarkovData | CorpusData
    shapes: tuple[ModelShape, ...]
    budgets: tuple[float, ...]
    budget_kind: str = "flops"
    block_size: int = 64
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    min_steps: int = 1  # a shape x budget whose budget pays for fewer steps is left out of the plan

    def __post_init__(self) -> None:
        if not isinstance(self.data, MarkovData | CorpusData):
            raise TypeError(f"SweepConfig.data must be MarkovData or CorpusData, got {type(self.data).__name__}")
        shapes, budgets = tuple(self.shapes), tuple(self.budgets)
        if not shapes or not all(isinstance(s, ModelShape) for s in shapes):
            raise ValueError("SweepConfig.shapes must be a non-empty sequence of ModelShape")
        if not budgets or not all(is_number(b) and b > 0 for b in budgets):
            raise ValueError(f"SweepConfig.budgets must be a non-empty sequence of numbers > 0, got {self.budgets!r}")
        if len(set(shapes)) != len(shapes) or len(set(budgets)) != len(budgets):
            raise ValueError("SweepConfig.shapes and budgets must not repeat")
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "budgets", tuple(float(b) for b in budgets))
        if self.budget_kind not in BUDGET_KINDS:
            raise ValueError(f"SweepConfig.budget_kind must be one of {BUDGET_KINDS}, got {self.budget_kind!r}")
        for name in ("block_size", "batch_size", "threads", "min_steps"):
            check_int(name, getattr(self, name), 1)
        check_int("warmup_steps", self.warmup_steps, 0)
        check_int("seed", self.seed, 0)
        if not is_number(self.lr) or not 0 < self.lr < 1:
            raise ValueError(f"SweepConfig.lr must be a number in (0, 1), got {self.lr!r}")
        if not is_number(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"SweepConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if not is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"SweepConfig.weight_decay must be >= 0, got {self.weight_decay!r}")

    def setup(self) -> dict[str, Any]:
        """What every run shares (all but the shapes and budgets): runs of one file must share it."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("data", "shapes", "budgets")}
        return {"data": _data_to_dict(self.data), **d}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.setup(), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class PlannedRun:
    """One run of the sweep, with its exact cost."""

    shape: ModelShape
    budget: float
    steps: int  # floor(budget / cost of one step)
    tokens: int  # steps * batch_size * block_size
    flops: float  # tokens * flops_per_token(block_size)
    n_params: int  # non-embedding parameters (Kaplan et al.'s N)
    n_params_total: int  # every parameter (Hoffmann et al.'s N)
    flops_per_token: int

    @property
    def run_id(self) -> str:
        return f"{self.shape.name}@{self.budget:.4g}"


@dataclass(frozen=True)
class SweepPlan:
    runs: list[PlannedRun]
    total_flops: float
    skipped: list[str]  # "shape at budget": fewer than min_steps steps


def _shape_model(config: SweepConfig, shape: ModelShape, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, block_size=config.block_size, n_layer=shape.n_layer,
                     n_head=shape.n_head, n_embd=shape.n_embd, dropout=0.0)  # fmt: skip


def plan_sweep(config: SweepConfig, vocab_size: int | None = None) -> SweepPlan:
    """Every run of ``config`` with its steps, tokens and FLOPs, shapes x budgets in order, without those
    below ``config.min_steps`` steps (listed in ``skipped``). Raises a ValueError naming every run whose
    budget does not pay for one optimizer step."""
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}")
    V = vocab_size if vocab_size is not None else _built(config.data).vocab_size
    tokens_per_step = config.batch_size * config.block_size
    runs, too_small, skipped = [], [], []
    for shape in config.shapes:
        with torch.device("meta"):
            model = GPT(_shape_model(config, shape, V))
        fpt = int(model.flops_per_token(config.block_size))
        step_cost = tokens_per_step * (fpt if config.budget_kind == "flops" else 1)
        for budget in config.budgets:
            steps = int(budget // step_cost)
            if steps < 1:
                too_small.append(f"{shape.name} at {budget:.3g} (one step costs {step_cost:.3g})")
                continue
            if steps < config.min_steps:
                skipped.append(f"{shape.name} at {budget:.3g} ({steps} steps)")
                continue
            tokens = steps * tokens_per_step
            runs.append(PlannedRun(shape, budget, steps, tokens, float(tokens * fpt), model.num_params(True),
                                   model.num_params(False), fpt))  # fmt: skip
    if too_small:
        raise ValueError(f"budgets too small for one optimizer step ({config.budget_kind}): " + "; ".join(too_small))
    if not runs and not too_small:
        raise ValueError(f"no run has min_steps = {config.min_steps} steps: " + "; ".join(skipped))
    return SweepPlan(runs, float(sum(r.flops for r in runs)), skipped)


# ---------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class SweepRecord:
    """One finished run. ``loss`` is the exact mean loss on the validation split (nats per token)."""

    run_id: str
    n_layer: int
    n_embd: int
    n_head: int
    budget: float
    budget_kind: str
    steps: int
    tokens: int  # D, training tokens
    flops: float  # the Trainer's count: tokens * flops_per_token (6N + attention)
    n_params: int  # non-embedding parameters
    n_params_total: int
    loss: float
    train_loss: float  # mean training loss of the last tenth of the steps
    seconds: float  # training time (without building the data or the final evaluation)
    eval_seconds: float
    lr: float
    setup: str  # the fingerprint of the SweepConfig's shared setup

    @property
    def flops_6nd(self) -> float:
        """``6 N D`` with the non-embedding N (Kaplan et al. 2020)."""
        return 6.0 * self.n_params * self.tokens

    @property
    def shape(self) -> ModelShape:
        return ModelShape(self.n_layer, self.n_embd, self.n_head)


def run_one(config: SweepConfig, run: PlannedRun) -> SweepRecord:
    """Train and evaluate one planned run (in this process). Deterministic on the CPU for the config's seed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        data = _built(config.data)
        torch.manual_seed(config.seed)
        model = GPT(_shape_model(config, run.shape, data.vocab_size))
        lr = run.shape.lr if run.shape.lr is not None else config.lr
        train_config = TrainConfig(
            batch_size=config.batch_size,
            block_size=config.block_size,
            max_steps=run.steps,
            lr=lr,
            min_lr=lr * config.min_lr_ratio,
            warmup_steps=min(config.warmup_steps, run.steps // 10),
            weight_decay=config.weight_decay,
            eval_interval=10**9,  # one evaluation, at the end
            device=config.device,
            seed=config.seed,
            progress=False,
        )
        trainer = Trainer(model, data, train_config)
        start = time.perf_counter()
        history = trainer.fit()
        total = time.perf_counter() - start
        final = history.evals[-1]
        train = [r["train_loss"] for r in history.train]
        tail = train[-max(1, len(train) // 10) :]
        eval_seconds = max(0.0, total - history.train[-1]["elapsed"])
    finally:
        torch.set_num_threads(threads)
    if trainer.step != run.steps or trainer.tokens != run.tokens:
        raise RuntimeError(f"{run.run_id}: trained {trainer.step} steps / {trainer.tokens} tokens, "
                           f"planned {run.steps} / {run.tokens}")  # fmt: skip
    return SweepRecord(
        run_id=run.run_id, n_layer=run.shape.n_layer, n_embd=run.shape.n_embd, n_head=run.shape.n_head,
        budget=run.budget, budget_kind=config.budget_kind, steps=run.steps, tokens=run.tokens,
        flops=float(trainer.flops), n_params=run.n_params, n_params_total=run.n_params_total,
        loss=float(final["val_loss"]), train_loss=float(sum(tail) / len(tail)), seconds=total - eval_seconds,
        eval_seconds=eval_seconds, lr=lr, setup=config.fingerprint(),
    )  # fmt: skip


def _header(config: SweepConfig, command: str) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "setup": config.setup(),
        "fingerprint": config.fingerprint(),
        "command": command,
        "machine": _machine(),
        "sessions": [],  # one per call that trained runs: {"started", "ended", "workers", "runs"} (UTC)
    }


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:  # the model name, where Linux tells it
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"torch": torch.__version__, "python": platform.python_version(), "system": platform.system(),
            "processor": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count()}  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_sweep(path: str | Path) -> tuple[dict[str, Any], list[SweepRecord]]:
    """A sweep file: its header ({"setup", "fingerprint", "command", "machine", ...}) and its records."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} is empty: not a sweep file")
    header = json.loads(lines[0])
    if header.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a sweep file (format {header.get('format')!r})")
    return header, [SweepRecord(**json.loads(line)) for line in lines[1:]]


def _write(path: Path, header: dict[str, Any], records: list[SweepRecord]) -> None:
    with atomic_open(path, text=True) as f:
        f.write(json.dumps(header) + "\n")
        for r in records:
            f.write(json.dumps(asdict(r)) + "\n")


def _seconds_per_flop(config: SweepConfig, shapes: Sequence[ModelShape]) -> dict[ModelShape, float]:
    """Time two training steps of each shape (after one untimed step) to estimate the sweep's duration."""
    data = _built(config.data)
    rates = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        for shape in shapes:
            torch.manual_seed(config.seed)
            model = GPT(_shape_model(config, shape, data.vocab_size))
            opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
            g = torch.Generator().manual_seed(config.seed)
            times = []
            for i in range(3):
                x, y = data.get_batch("train", config.batch_size, config.block_size, generator=g)
                t0 = time.perf_counter()
                model(x, y).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if i:
                    times.append(time.perf_counter() - t0)
            flops = config.batch_size * config.block_size * model.flops_per_token(config.block_size)
            rates[shape] = min(times) / flops
    finally:
        torch.set_num_threads(threads)
    return rates


def run_sweep(
    config: SweepConfig,
    path: str | Path,
    *,
    workers: int = 1,
    executor: Executor | None = None,
    command: str = "",
    progress: bool = True,
    estimate: bool = True,
    on_record: Callable[[SweepRecord], None] | None = None,
) -> list[SweepRecord]:
    """Train every run of ``config`` not yet in ``path`` and return all its records (the file's order).

    ``workers > 1``: that many processes (spawned; each run uses ``config.threads`` threads). ``executor``:
    any concurrent.futures executor instead (it must be able to call :func:`run_one` with picklable
    arguments). With ``estimate``, two steps of each shape are timed first and the sweep's expected time is
    printed. The file is rewritten atomically after every run; a file made with another setup is refused.
    In a script, call it under ``if __name__ == "__main__":`` when ``workers > 1`` (worker processes are
    spawned and import the main module).
    """
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}")
    check_int("workers", workers, 1)
    path = Path(path)
    plan = plan_sweep(config)
    header, records = _header(config, command), []
    if path.exists():
        old_header, records = load_sweep(path)
        if old_header["fingerprint"] != header["fingerprint"]:
            raise ValueError(
                f"{path} holds runs of another setup ({old_header['setup']}); write this sweep to another file"
            )
        if old_header.get("command") and command and command not in old_header["command"]:
            header["command"] = f"{old_header['command']} && {command}"
        elif old_header.get("command"):
            header["command"] = old_header["command"]
        header["sessions"] = list(old_header.get("sessions", []))
    done = {r.run_id for r in records}
    todo = [r for r in plan.runs if r.run_id not in done]
    if not todo:
        return records
    session = {"started": _now(), "ended": None, "workers": workers if executor is None else type(executor).__name__,
               "runs": 0}  # fmt: skip
    header["sessions"].append(session)
    parallel = executor is not None or workers > 1
    if estimate:
        rates = _seconds_per_flop(config, sorted({r.shape for r in todo}, key=lambda s: s.name))
        seconds = sum(r.flops * rates[r.shape] for r in todo) / (1 if executor is not None else workers)
        caveat = " (if the workers do not slow each other)" if parallel else ""
        print(f"{len(todo)} runs to train ({len(done)} already in {path.name}), {sum(r.flops for r in todo):.3g} "
              f"FLOPs: about {_duration(seconds)} here{caveat}", file=sys.stderr, flush=True)  # fmt: skip
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(r.flops for r in todo), unit="FLOP", unit_scale=True, desc="sweep", leave=True)

    def finished(record: SweepRecord) -> None:
        records.append(record)
        session["ended"], session["runs"] = _now(), session["runs"] + 1
        _write(path, header, records)
        if bar is not None:
            bar.update(record.flops)
            bar.set_postfix_str(f"{record.run_id} loss {record.loss:.3f}")
        if on_record is not None:
            on_record(record)

    try:
        if not parallel:
            for run in todo:
                finished(run_one(config, run))
        else:
            own = executor is None
            pool = executor or ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
            try:
                futures = [pool.submit(run_one, config, run) for run in todo]
                for future in as_completed(futures):
                    finished(future.result())
            finally:
                if own:
                    pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if bar is not None:
            bar.close()
    return records


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

