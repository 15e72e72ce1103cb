"""Lesson 05's experiments: next-token against multi-token training at equal compute, path-star graphs,
and self-speculative decoding. Tested in tests/test_lesson_multitoken.py.

The path-star runs take minutes, so their results are committed (``pathstar_results.json``, next to this
file) and the notebook reads them: ``python -m lmlab.lessons.multitoken.experiments`` makes them again.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.fileio import atomic_open
from lmlab.generation import greedy
from lmlab.generation.speculative import speculative_greedy
from lmlab.lm import IGNORE_INDEX, eval_mode
from lmlab.models import GPT, GPTConfig
from lmlab.models.multitoken import MultiTokenGPT
from lmlab.text.pathstar import PathStar, PathStarData, pathstar_accuracy
from lmlab.text.synthetic import MarkovSource, markov_token_data, syllable_words
from lmlab.train import TrainConfig, Trainer

__all__ = [
    "lesson_language",
    "language_data",
    "lesson_corpus",
    "HeadRun",
    "make_model",
    "next_token_loss",
    "equal_compute_runs",
    "PATHSTAR_TASK",
    "PATHSTAR_RUNS",
    "pathstar_run",
    "load_pathstar_results",
    "SpeculativeRun",
    "speculative_runs",
]

RESULTS = Path(__file__).with_name("pathstar_results.json")


# ------------------------------------------------------------------------------------------- the data
def lesson_language() -> MarkovSource:
    """The course's 12-word language of order 2 (lesson 02's): its best loss, the entropy rate, is known."""
    return MarkovSource(12, 2, seed=0, words=[".", *syllable_words(11)])


def language_data(source: MarkovSource, n_train: int = 40_000, n_val: int = 2_000, seed: int = 0):
    """``n_train`` training and ``n_val`` validation tokens sampled from ``source`` (TokenData)."""
    return markov_token_data(source, n_train=n_train, n_val=n_val, seed=seed)


def lesson_corpus(n_chars: int = 200_000):
    """The first ``n_chars`` characters of the built-in corpus (Python's documentation), as character data."""
    from lmlab.text import TokenData, load_corpus

    text = load_corpus("python-docs")[:n_chars]
    return TokenData.from_text(text, "char", val_fraction=0.1)


# ---------------------------------------------------------------------------- equal-compute training
@dataclass(frozen=True)
class HeadRun:
    """One training run: ``n_future`` heads (1: a plain GPT), its optimizer ``steps`` within the FLOP budget,
    the FLOPs it used, and its next-token (head 1) loss on the validation split, nats per token."""

    n_future: int
    steps: int
    flops: float
    next_token_loss: float
    seconds: float
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # the trained model, in eval mode


def make_model(config: GPTConfig, n_future: int) -> nn.Module:
    """A GPT (``n_future=1``) or a MultiTokenGPT with ``n_future`` heads: the same trunk and head shapes."""
    return GPT(config) if n_future == 1 else MultiTokenGPT(config, n_future=n_future)


@torch.no_grad()
def next_token_loss(model: nn.Module, data: Any, block_size: int, batch_size: int = 64) -> float:
    """Head 1's mean cross-entropy (nats per token) over the whole validation split of ``data``."""
    total, count = 0.0, 0
    with eval_mode(model):
        for x, y in data.iter_split("val", batch_size, block_size):
            logits = model(x).logits  # (B, T, V): the next-token head
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
            total += loss.item()
            count += int((y != IGNORE_INDEX).sum())
    return total / count


def equal_compute_runs(data: Any, heads: Sequence[int], *, flops: float, config: GPTConfig, batch_size: int = 16,
                       lr: float = 3e-3, seed: int = 0) -> list[HeadRun]:
    """Train one model per entry of ``heads`` on ``data`` until each has spent ``flops`` training FLOPs
    (``TrainConfig.max_flops``: a model with more heads costs more per token, so it takes fewer steps) and
    measure each one's next-token loss. Same seed, data order, shapes and recipe for all."""
    runs = []
    for n_future in heads:
        torch.manual_seed(seed)
        model = make_model(config, n_future)
        t0 = time.perf_counter()
        history = Trainer(model, data, TrainConfig(max_flops=flops, batch_size=batch_size, lr=lr,
                                                   warmup_steps=20, eval_interval=10**9, seed=seed,
                                                   progress=False)).fit()
        last = [r for r in history if r["kind"] == "train"][-1]
        runs.append(HeadRun(n_future, last["step"], float(last["flops"]),
                            next_token_loss(model, data, config.block_size), time.perf_counter() - t0,
                            model.eval()))
    return runs


# -------------------------------------------------------------------------------------- path-star graphs
PATHSTAR_TASK = PathStar(degree=2, arm_length=3, num_nodes=20)
# name -> (reverse the answer?, heads): next-token, multi-token with 2 and with 4 heads (4 = every answer
# token after the centre), and next-token on the reversed answer
PATHSTAR_RUNS = {"next-token": (False, 1), "2 heads": (False, 2), "4 heads": (False, 4),
                 "next-token, reversed": (True, 1)}


def pathstar_run(name: str, *, steps: int = 4000, seed: int = 0, task: PathStar = PATHSTAR_TASK,
                 n_eval: int = 2000) -> dict[str, Any]:
    """Train the model of ``PATHSTAR_RUNS[name]`` (4 layers, width 64) on fresh graphs for ``steps`` steps
    of 64 graphs and score its greedy answers on ``n_eval`` new graphs (first step and whole path)."""
    if name not in PATHSTAR_RUNS:
        raise ValueError(f"unknown run {name!r}; runs are: {', '.join(PATHSTAR_RUNS)}")
    reverse, n_future = PATHSTAR_RUNS[name]
    run_task = PathStar(task.degree, task.arm_length, task.num_nodes, reverse=reverse)
    config = GPTConfig(vocab_size=run_task.vocab_size, block_size=run_task.seq_len, n_layer=4, n_head=4,
                       n_embd=64)
    torch.manual_seed(seed)
    model = make_model(config, n_future)
    t0 = time.perf_counter()
    Trainer(model, PathStarData(run_task, 256, seed=seed),
            TrainConfig(max_steps=steps, batch_size=64, lr=1e-3, min_lr=1e-4, warmup_steps=min(100, steps // 10),
                        eval_interval=10**9, seed=seed, progress=False)).fit()
    acc = pathstar_accuracy(model, run_task, n_eval, generator=10_000 + seed)
    return {"name": name, "reverse": reverse, "n_future": n_future, "steps": steps, "seed": seed,
            "first_step": acc.first, "whole_path": acc.path, "n_eval": acc.n,
            "flops_per_token": model.flops_per_token(run_task.seq_len), "seconds": round(time.perf_counter() - t0, 1)}


def load_pathstar_results(path: str | Path = RESULTS) -> dict[str, Any]:
    """The committed path-star results: ``{"task": {...}, "runs": [one dict per run and seed]}``."""
    return json.loads(Path(path).read_text())


def _write_pathstar_results(steps: int, seeds: Sequence[int], path: Path = RESULTS) -> None:
    runs = []
    for seed in seeds:
        for name in PATHSTAR_RUNS:
            runs.append(pathstar_run(name, steps=steps, seed=seed))
            print(runs[-1], flush=True)
    task = asdict(PATHSTAR_TASK)
    with atomic_open(path, text=True) as f:  # the last good file stays if a run fails
        json.dump({"command": f"python -m lmlab.lessons.multitoken.experiments {steps} {len(list(seeds))}",
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
                   "made": time.strftime("%Y-%m-%d"), "task": task, "steps": steps, "batch_size": 64,
                   "model": {"n_layer": 4, "n_head": 4, "n_embd": 64}, "runs": runs}, f, indent=1)


# -------------------------------------------------------------------------------- speculative decoding
@dataclass(frozen=True)
class SpeculativeRun:
    """Self-speculative greedy decoding of one model over several prompts, against plain greedy."""

    n_draft: int
    new_tokens: int
    forward_passes: int
    drafted: int
    accepted: int
    same_as_greedy: bool
    seconds: float
    greedy_seconds: float

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else math.nan

    @property
    def tokens_per_pass(self) -> float:
        return self.new_tokens / self.forward_passes


def speculative_runs(model: MultiTokenGPT, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 40,
                     n_drafts: Sequence[int] | None = None) -> list[SpeculativeRun]:
    """For each number of drafts (default 0..H-1), decode every prompt greedily and self-speculatively;
    count passes, drafts and accepted drafts, time both, and check that the tokens are greedy's."""
    n_drafts = range(model.n_future) if n_drafts is None else n_drafts
    model.eval()
    t0 = time.perf_counter()
    reference = [greedy(model, p, max_new_tokens=max_new_tokens) for p in prompts]
    greedy_seconds = time.perf_counter() - t0
    runs = []
    for n_draft in n_drafts:
        totals = dict(new_tokens=0, forward_passes=0, drafted=0, accepted=0)
        same = True
        t0 = time.perf_counter()
        for prompt, ref in zip(prompts, reference, strict=True):
            out, stats = speculative_greedy(model, prompt, max_new_tokens=max_new_tokens, n_draft=n_draft,
                                            return_stats=True)
            same &= out == ref
            for key in totals:
                totals[key] += getattr(stats, key)
        runs.append(SpeculativeRun(n_draft, **totals, same_as_greedy=same, seconds=time.perf_counter() - t0,
                                   greedy_seconds=greedy_seconds))
    return runs


if __name__ == "__main__":  # python -m lmlab.lessons.multitoken.experiments [STEPS] [SEEDS]
    import sys

    torch.set_num_threads(1)
    _write_pathstar_results(int(sys.argv[1]) if len(sys.argv) > 1 else 4000,
                            range(int(sys.argv[2]) if len(sys.argv) > 2 else 2))
