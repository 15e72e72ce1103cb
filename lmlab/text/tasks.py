"""Trainer data for a task sampled afresh: :class:`SampledTaskData`, the base of
:class:`~lmlab.text.synthetic.RecallData` and :class:`~lmlab.text.pathstar.PathStarData`.

A synthetic task (associative recall, path-star graphs) can draw as many new sequences as training asks
for, so its train split has no end; its val split is a fixed set drawn once. A subclass names the task it
serves and how to draw ``n`` sequences from it; this class gives the :class:`lmlab.train.Trainer` its
``get_batch`` and ``iter_split``. Shapes: ``B`` sequences of ``L = task.seq_len`` tokens.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import torch

from lmlab.checks import check_count

__all__ = ["SampledTaskData"]

_MIX = 0x9E3779B97F4A7C15  # an odd 64-bit constant: neighbouring seeds map to val seeds far apart


class SampledTaskData(ABC):
    """Fresh train sequences at every ``get_batch("train", ...)`` (from the trainer's generator, so a seeded
    run and its resume see the same ones); a fixed val set of ``n_val`` sequences, sampled once.

    ``iter_split("val", ...)`` walks through the val set in order (the exact evaluation of
    ``TrainConfig(eval_batches=None)``); ``get_batch("val", ...)`` draws rows of it. ``block_size`` must be
    the task's ``seq_len``. The val set comes from a seed mixed from ``seed`` (not ``seed`` itself), so it
    differs from the train batches of a trainer whose ``TrainConfig.seed`` equals ``seed``.

    Subclasses set ``task_type`` and ``val_salt`` (the mixing constant) and define :meth:`sample_pairs`.
    """

    task_type: ClassVar[type]
    val_salt: ClassVar[int]

    def __init__(self, task: Any, n_val: int = 512, *, seed: int = 0) -> None:
        if not isinstance(task, self.task_type):
            raise TypeError(f"task must be a {self.task_type.__name__}, got {type(task).__name__}")
        self.task = task
        self.vocab_size: int = task.vocab_size
        self.seed = check_count("seed", seed, 0)
        val_seed = (self.seed * _MIX + self.val_salt) % 2**63
        self.val = self.sample_pairs(check_count("n_val", n_val, 1), torch.Generator().manual_seed(val_seed))
        self._train_generator = torch.Generator().manual_seed(self.seed)  # used when no generator is given

    @abstractmethod
    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fresh ``(inputs, targets)``, each (n, L) int64 on the CPU."""

    def _check(self, split: str, batch_size: int, block_size: int) -> int:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if check_count("block_size", block_size, 1) != self.task.seq_len:
            raise ValueError(
                f"block_size {block_size} differs from the task's seq_len {self.task.seq_len}: every window is one "
                f"whole sequence; use TrainConfig(block_size={self.task.seq_len}) or a model with that block_size"
            )
        return check_count("batch_size", batch_size, 1)

    def get_batch(
        self,
        split: str,
        batch_size: int,
        block_size: int,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``, each (batch_size, L) int64 on ``device``: fresh train sequences, or random val rows."""
        B = self._check(split, batch_size, block_size)
        g = self._train_generator if generator is None else generator
        if split == "train":
            x, y = self.sample_pairs(B, g)
        else:
            rows = torch.randint(len(self.val[0]), (B,), generator=g)
            x, y = self.val[0][rows], self.val[1][rows]
        return x.to(device), y.to(device)

    def iter_split(
        self, split: str, batch_size: int, block_size: int, device: str | torch.device = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The val set in order, ``batch_size`` sequences at a time (the last batch may be smaller)."""
        B = self._check(split, batch_size, block_size)
        if split == "train":
            raise ValueError("the train split is sampled afresh at every step and has no end; iterate over 'val'")
        return ((x.to(device), y.to(device)) for x, y in zip(self.val[0].split(B), self.val[1].split(B), strict=True))
