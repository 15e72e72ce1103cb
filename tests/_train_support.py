"""Shared by test_train.py and _ddp_worker.py: a tiny repetitive corpus, a micro model, small configs."""

from __future__ import annotations

import torch

from lmlab.models import GPT, GPTConfig
from lmlab.text.data import TokenData
from lmlab.train import TrainConfig

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. "


def make_data(n_train: int = 6000, n_val: int = 700) -> TokenData:
    """Bytes of a repeated pangram (vocab 256): easy to learn, so the loss falls within a few dozen steps."""
    ids = torch.tensor(list((TEXT * (1 + (n_train + n_val) // len(TEXT))).encode()), dtype=torch.int64)
    return TokenData(ids[:n_train].clone(), ids[n_train : n_train + n_val].clone(), vocab_size=256)


def make_model(seed: int = 0, **overrides) -> GPT:
    """The micro preset (2 layers, 64 wide, block 32) initialised from ``seed``."""
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("micro", **overrides))


def small_config(**overrides) -> TrainConfig:
    """A quick CPU run: batches of 4 x 16 tokens, no progress bar."""
    base = dict(
        batch_size=4, block_size=16, max_steps=8, lr=3e-3, min_lr=3e-4, warmup_steps=2,
        eval_interval=4, eval_batches=2, device="cpu", progress=False,
    )  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)
