"""Measures of generated text that need no model: diversity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lmlab.checks import check_int

__all__ = ["distinct_n"]


def distinct_n(sequences: Sequence[Sequence[int]] | torch.Tensor | np.ndarray, n: int) -> float:
    """Distinct-n (Li et al. 2016): the number of different n-grams over the number of n-grams, pooled.

    ``sequences`` is a list of token-id lists or a 2-D tensor (one row per text). 1.0 means no n-gram
    occurs twice; text that repeats itself scores low. N-grams never run from one sequence into the next.
    Returns 0.0 when no sequence has n tokens.
    """
    check_int("n", n, 1)
    if isinstance(sequences, torch.Tensor | np.ndarray):
        sequences = sequences.tolist()
    if any(not isinstance(row, Sequence | torch.Tensor | np.ndarray) or isinstance(row, str) for row in sequences):
        raise TypeError("sequences must be a list of token-id lists (or a 2-D tensor), not one flat sequence")
    seen: set[tuple[int, ...]] = set()
    total = 0
    for row in sequences:
        tokens = row.tolist() if isinstance(row, torch.Tensor | np.ndarray) else list(row)
        for i in range(len(tokens) - n + 1):
            seen.add(tuple(tokens[i : i + n]))
            total += 1
    return len(seen) / total if total else 0.0
