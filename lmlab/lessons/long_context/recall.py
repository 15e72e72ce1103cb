"""What each sequence model remembers: train it on multi-query associative recall and count exact answers.

The task (:class:`lmlab.text.synthetic.AssociativeRecall`; Arora et al. 2023, "Zoology") lists key-value
pairs, then asks for the values of earlier keys. A model answers only if what it keeps of the past still
holds the pair: full attention keeps every key and value, a sliding window the last ``window - 1`` positions
of each layer, linear attention and a GRU or LSTM a state of fixed size. :func:`train_recall` trains one
model of one kind on one setting with :class:`lmlab.train.Trainer` and measures its exact accuracy on fresh
sequences; :func:`recall_sweep` does it for kinds x numbers of pairs (or distances) and writes the results,
with the command that remakes them, to a JSON file (atomically, after every run, so an interrupted sweep
resumes). The lesson reads the committed results with :func:`load_recall_results` and runs a small live
version.

Command: ``python -m lmlab.lessons.long_context.recall --out results.json`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lmlab.fileio import atomic_open
from lmlab.models import GPT, RNNLM, GPTConfig, RNNConfig
from lmlab.text.synthetic import AssociativeRecall, RecallData, recall_accuracy
from lmlab.train import TrainConfig, Trainer

__all__ = [
    "RECALL_KINDS",
    "RecallSetup",
    "RecallResult",
    "recall_model",
    "decoding_state_bytes",
    "train_recall",
    "train_recall_model",
    "recall_sweep",
    "load_recall_results",
    "recall_table",
    "RESULTS_PATH",
]

RECALL_KINDS = ("full", "sliding_window", "linear", "gru", "lstm")  # attention kinds of GPT, then RNN cells
RESULTS_PATH = Path(__file__).with_name("recall_results.json")  # the committed sweep the lesson reads
_FORMAT = "lmlab recall sweep"


@dataclass(frozen=True)
class RecallSetup:
    """Everything a recall run depends on besides the kind and the task's pairs and distance.

    Models are as alike as the kinds allow: GPTs of ``n_layer`` blocks of width ``n_embd`` (``n_head`` heads,
    the sliding window ``window`` positions), RNNs of ``n_layer`` layers with hidden size and embedding
    ``n_embd``. Training: ``steps`` AdamW steps of ``batch_size`` fresh sequences at peak rate ``lr`` (warmup,
    cosine decay, no weight decay), seeded by ``seed``; accuracy on ``n_eval`` fresh sequences.
    """

    vocab_size: int = 128
    seq_len: int = 64
    num_queries: int | None = None  # None: as many queries as pairs
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 2
    window: int = 8
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50  # (at most steps)
    n_eval: int = 512
    seed: int = 0
    threads: int | None = 1  # torch threads while training (None: leave as is); 1 is fastest for RNNs

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("num_queries", "threads") and value is None:
                continue
            if f.name == "lr":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                    raise ValueError(f"RecallSetup.lr must be a number in (0, 1), got {value!r}")
                continue
            minimum = 0 if f.name in ("seed", "warmup_steps") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"RecallSetup.{f.name} must be an integer >= {minimum}, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"RecallSetup.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    def task(self, num_pairs: int, min_distance: int = 1) -> AssociativeRecall:
        """The recall task of ``num_pairs`` pairs whose queries come at least ``min_distance`` after their pair."""
        return AssociativeRecall(
            vocab_size=self.vocab_size,
            num_pairs=num_pairs,
            num_queries=self.num_queries,
            min_distance=min_distance,
            seq_len=self.seq_len,
        )


@dataclass(frozen=True)
class RecallResult:
    """One trained model's exact recall. ``state_bytes``: what it keeps per sequence to go on decoding after
    ``seq_len`` tokens (float32): the KV cache, the window's keys and values, or the fixed-size state."""

    kind: str
    num_pairs: int
    min_distance: int
    accuracy: float  # fraction of queried values predicted exactly (argmax), on n_eval fresh sequences
    chance: float  # 1 / number of value ids: a guesser's expected accuracy
    params: int  # trainable parameters
    state_bytes: int
    seconds: float  # training wall-clock time on the machine that ran it
    final_loss: float  # mean training loss of the last 50 steps, nats per answer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_kind(kind: str) -> str:
    if kind not in RECALL_KINDS:
        raise ValueError(f"kind must be one of {RECALL_KINDS}, got {kind!r}")
    return kind


def recall_model(kind: str, setup: RecallSetup) -> nn.Module:
    """A fresh model of ``kind`` sized by ``setup`` (initialised from the current torch seed)."""
    _check_kind(kind)
    if kind in ("gru", "lstm"):
        config = RNNConfig(
            vocab_size=setup.vocab_size, n_embd=setup.n_embd, n_hidden=setup.n_embd, n_layer=setup.n_layer, cell=kind
        )
        return RNNLM(config)
    window = setup.window if kind == "sliding_window" else None
    config = GPTConfig(
        vocab_size=setup.vocab_size,
        block_size=setup.seq_len,
        n_layer=setup.n_layer,
        n_head=setup.n_head,
        n_embd=setup.n_embd,
        attention=kind,
        window=window,
    )
    return GPT(config)


@torch.no_grad()
def decoding_state_bytes(model: nn.Module, length: int) -> int:
    """Bytes a model keeps per sequence to go on decoding after reading ``length`` tokens, measured on its
    own cache (``model.new_cache``) after one pass: the keys and values a KV cache has filled, the ones a
    sliding-window cache kept, or a fixed-size state."""
    cache = model.new_cache(1, length) if isinstance(model, GPT) else model.new_cache(1)
    model(torch.zeros(1, length, dtype=torch.long, device=next(model.parameters()).device), cache=cache)
    if hasattr(cache, "nbytes"):  # a fixed-size state
        return int(cache.nbytes)
    per_position = sum(k.shape[1] * k.shape[3] * k.element_size() for k in cache.k if k is not None) * 2  # k and v
    kept = getattr(cache, "kept", cache.length)
    return int(per_position * kept)


def train_recall(
    kind: str, num_pairs: int, setup: RecallSetup = RecallSetup(), *, min_distance: int = 1
) -> RecallResult:
    """Train one model of ``kind`` on the task of ``num_pairs`` pairs (queries at least ``min_distance`` after
    their pair) and measure its exact accuracy. Deterministic on the CPU for ``setup.seed``."""
    return train_recall_model(kind, num_pairs, setup, min_distance=min_distance)[1]


def train_recall_model(
    kind: str, num_pairs: int, setup: RecallSetup = RecallSetup(), *, min_distance: int = 1
) -> tuple[nn.Module, RecallResult]:
    """:func:`train_recall`, returning the trained model (in eval mode) too, to probe it further (for example
    with :func:`lmlab.text.synthetic.recall_accuracy_by_distance`)."""
    _check_kind(kind)
    task = setup.task(num_pairs, min_distance)
    threads = torch.get_num_threads()
    if setup.threads is not None:
        torch.set_num_threads(setup.threads)
    try:
        torch.manual_seed(setup.seed)
        model = recall_model(kind, setup)
        data = RecallData(task, n_val=64, seed=setup.seed)
        config = TrainConfig(
            max_steps=setup.steps,
            batch_size=setup.batch_size,
            block_size=setup.seq_len,
            lr=setup.lr,
            min_lr=setup.lr / 10,
            warmup_steps=setup.warmup_steps,
            weight_decay=0.0,
            eval_interval=10**9,  # one evaluation, at the end
            device="cpu",
            seed=setup.seed,
            progress=False,
        )
        start = time.perf_counter()
        history = Trainer(model, data, config).fit()
        seconds = time.perf_counter() - start
        losses = [r["train_loss"] for r in history.train][-50:]
        accuracy = recall_accuracy(model, task, n=setup.n_eval, generator=setup.seed + 10_000)
        state = decoding_state_bytes(model, setup.seq_len)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model, RecallResult(
        kind=kind,
        num_pairs=num_pairs,
        min_distance=min_distance,
        accuracy=accuracy,
        chance=task.chance_accuracy,
        params=sum(p.numel() for p in model.parameters()),
        state_bytes=state,
        seconds=seconds,
        final_loss=sum(losses) / len(losses),
    )


def _record(setup: RecallSetup, results: list[RecallResult], command: str) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "command": command,
        "setup": asdict(setup),
        "machine": {"torch": torch.__version__, "python": platform.python_version(), "processor": platform.machine()},
        "results": [r.to_dict() for r in results],
    }


def recall_sweep(
    kinds: Sequence[str],
    pairs: Sequence[int],
    setup: RecallSetup = RecallSetup(),
    *,
    distances: Sequence[int] = (1,),
    path: str | Path | None = None,
    command: str = "",
    verbose: bool = False,
) -> list[RecallResult]:
    """:func:`train_recall` for every kind x number of pairs x minimum distance.

    With ``path``, results are written there after every run (atomically: an interrupted sweep leaves the
    last complete file), and a run already in the file with the same setup is not repeated; the file's
    ``command`` then lists every command that added runs, joined by ``&&``.
    """
    for kind in kinds:
        _check_kind(kind)
    done: dict[tuple[str, int, int], RecallResult] = {}
    if path is not None and Path(path).exists():
        old = load_recall_results(path)
        if old["setup"] == setup:
            done = {(r.kind, r.num_pairs, r.min_distance): r for r in old["results"]}
            if old["command"] and command and command not in old["command"]:
                command = f"{old['command']} && {command}"  # every command that added runs to the file
    results = list(done.values())
    for kind in kinds:
        for p in pairs:
            for dist in distances:
                if (kind, p, dist) in done:
                    continue
                result = train_recall(kind, p, setup, min_distance=dist)
                results.append(result)
                if verbose:
                    print(
                        f"{kind:>15} pairs={p:<3} distance>={dist:<3} accuracy={result.accuracy:.3f} "
                        f"({result.seconds:.0f} s)",
                        flush=True,
                    )
                if path is not None:
                    with atomic_open(path, text=True) as f:
                        json.dump(_record(setup, results, command), f, indent=1)
                        f.write("\n")
    return results


def load_recall_results(path: str | Path = RESULTS_PATH) -> dict[str, Any]:
    """A sweep file: ``{"command", "setup": RecallSetup, "machine", "results": [RecallResult, ...]}``."""
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    if record.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a recall sweep file (format {record.get('format')!r})")
    return {
        "command": record["command"],
        "setup": RecallSetup(**record["setup"]),
        "machine": record["machine"],
        "results": [RecallResult(**r) for r in record["results"]],
    }


def recall_table(results: Sequence[RecallResult], *, by: str = "num_pairs") -> str:
    """A text table of accuracy: one column per number of pairs (``by="num_pairs"``) or per minimum distance
    (``by="min_distance"``), one row per kind (and per value of the other setting, when it varies)."""
    if by not in ("num_pairs", "min_distance"):
        raise ValueError(f"by must be 'num_pairs' or 'min_distance', got {by!r}")
    other = "min_distance" if by == "num_pairs" else "num_pairs"
    columns = sorted({getattr(r, by) for r in results})
    others = sorted({getattr(r, other) for r in results})
    label = "pairs" if by == "num_pairs" else "dist>="
    rows = []
    for kind in [k for k in RECALL_KINDS if any(r.kind == k for r in results)]:
        for o in others:
            cells = {getattr(r, by): r.accuracy for r in results if r.kind == kind and getattr(r, other) == o}
            if cells:
                name = kind if len(others) == 1 else f"{kind} ({'dist>=' if other == 'min_distance' else 'pairs'} {o})"
                rows.append((name, cells))
    width = max([4, *(len(name) for name, _ in rows)])
    lines = [f"{'kind':>{width}} | " + " ".join(f"{label} {c}".rjust(9) for c in columns)]
    for name, cells in rows:
        lines.append(
            f"{name:>{width}} | " + " ".join((f"{cells[c]:.2f}" if c in cells else "-").rjust(9) for c in columns)
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    defaults = RecallSetup()
    p = argparse.ArgumentParser(
        prog="python -m lmlab.lessons.long_context.recall",
        description="Train each kind of model on associative recall and write the accuracy table (JSON).",
    )
    p.add_argument("--out", required=True, help="JSON file to write (resumes the runs already in it)")
    p.add_argument("--kinds", default=",".join(RECALL_KINDS), help="comma-separated, of " + ", ".join(RECALL_KINDS))
    p.add_argument("--pairs", default="2,4,8", help="comma-separated numbers of key-value pairs")
    p.add_argument("--distances", default="1", help="comma-separated minimum query distances")
    for f in fields(RecallSetup):
        if f.name in ("num_queries", "threads"):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=getattr(defaults, f.name))
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = p.parse_args(argv)
    setup = replace(defaults, **{f.name: getattr(args, f.name) for f in fields(RecallSetup)})
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    kinds = [k for k in args.kinds.split(",") if k]
    command = "python -m lmlab.lessons.long_context.recall " + " ".join(sys.argv[1:] if argv is None else argv)
    results = recall_sweep(
        kinds, ints(args.pairs), setup, distances=ints(args.distances), path=args.out, command=command, verbose=True
    )
    by = "min_distance" if len(set(ints(args.distances))) > 1 else "num_pairs"
    print(recall_table(results, by=by))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
