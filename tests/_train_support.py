"""Shared by test_train.py and _ddp_worker.py: a tiny repetitive corpus, a micro model, small configs."""

from __future__ import annotations

import torch

from lmlab.lm import IGNORE_INDEX
from lmlab.models import GPT, GPTConfig
from lmlab.train import TrainConfig

try:
    from lmlab.text.data import TokenData
except ImportError:  # lmlab.text.data not importable (yet): a stand-in with the same interface

    class TokenData:  # type: ignore[no-redef]
        """Stand-in for lmlab.text.data.TokenData: random windows and an exact pass, as its contract says."""

        def __init__(self, train, val, vocab_size, tokenizer=None):
            self.train, self.val, self.vocab_size, self.tokenizer = train, val, vocab_size, tokenizer

        def get_batch(self, split, batch_size, block_size, generator=None, device="cpu"):
            ids = self.train if split == "train" else self.val
            starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
            w = torch.stack([ids[s : s + block_size + 1] for s in starts.tolist()])  # (B, T + 1)
            return w[:, :-1].to(device), w[:, 1:].to(device)

        def iter_split(self, split, batch_size, block_size, device="cpu"):
            ids = self.train if split == "train" else self.val
            n = len(ids) - 1  # targets 1..n
            starts = list(range(0, n, block_size))
            for b in range(0, len(starts), batch_size):
                rows = starts[b : b + batch_size]
                x = torch.zeros(len(rows), block_size, dtype=torch.int64)
                y = torch.full((len(rows), block_size), IGNORE_INDEX, dtype=torch.int64)
                for r, s in enumerate(rows):
                    L = min(block_size, n - s)
                    x[r, :L], y[r, :L] = ids[s : s + L], ids[s + 1 : s + L + 1]
                yield x.to(device), y.to(device)


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
