"""A bigram language model: one row of next-token logits per previous token, a (V, V) table.

The smallest model that fits lmlab's language-model interface (:mod:`lmlab.lm`): likelihood scoring,
training and generation treat it like a GPT. It can be trained by gradient descent, or built directly from
probabilities (:meth:`BigramLM.from_probs`) or from counts of token pairs (:meth:`BigramLM.from_counts`
with :func:`bigram_counts`), which is how a count-based n-gram baseline is made.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.checks import as_ids, check_int, check_number, check_vocab
from lmlab.lm import LMOutput, lm_loss

__all__ = ["BigramLM", "bigram_counts"]


def bigram_counts(ids: object, vocab_size: int) -> torch.Tensor:
    """counts (V, V) int64: ``counts[a, b]`` = number of positions t with ids[t] = a and ids[t + 1] = b.

    ``ids`` is one sequence (T,) or a batch of independent sequences (B, T); pairs never cross rows.
    """
    x = as_ids(ids).cpu()
    V = check_int("vocab_size", vocab_size, 1)
    check_vocab(x, V)
    x = x if x.dim() == 2 else x.unsqueeze(0)
    pairs = x[:, :-1] * V + x[:, 1:]  # (B, T-1) index of each (previous, next) pair in the flat table
    return torch.bincount(pairs.reshape(-1), minlength=V * V).view(V, V)


class BigramLM(nn.Module):
    """A bigram language model: one learned row of V logits per previous token, a (V, V) table.

    ``model(idx)`` maps (B, T) ids to ``LMOutput(logits (B, T, V), loss)``: the logits at position t are the
    row of token ``idx[:, t]`` and score the token at t + 1. ``context_limit`` is None (a bigram model reads
    only the previous token, whatever the length). The logits start at zero, the uniform distribution.
    """

    context_limit = None

    def __init__(self, vocab_size: int, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, 1)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        self.logits = nn.Parameter(torch.zeros(self.vocab_size, self.vocab_size, dtype=dtype))  # (V, V)

    @classmethod
    def from_probs(cls, probs: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> BigramLM:
        """A model whose next-token distributions are the rows of ``probs`` (V, V); logits = log probs.

        A probability of 0 becomes a logit of -inf: the model then calls that token impossible, and a text
        that contains it gets log-probability -inf (infinite loss). Use it for scoring, not for training.
        """
        if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or probs.shape[0] != probs.shape[1]:
            raise ValueError("probs must be a square (V, V) tensor of probabilities")
        if bool((probs < 0).any()) or not torch.allclose(probs.sum(1).double(), torch.ones(len(probs)).double()):
            raise ValueError("every row of probs must be a probability distribution (>= 0, summing to 1)")
        model = cls(probs.shape[0], dtype=dtype)
        with torch.no_grad():
            model.logits.copy_(torch.log(probs.double()))  # log 0 = -inf: impossible
        return model

    @classmethod
    def from_counts(
        cls, counts: torch.Tensor, *, smoothing: float = 0.0, dtype: torch.dtype = torch.float32
    ) -> BigramLM:
        """The count-based bigram model: p(b | a) = (count(a, b) + k) / (count(a) + k V), k = ``smoothing``.

        Add-k smoothing (Jurafsky & Martin, Speech and Language Processing, 3rd ed. draft, ch. 3); k = 0 gives
        the relative frequencies, the maximiser of the likelihood of the counted text. A context never
        followed by anything has no data, so its row is uniform. ``dtype`` is the logits' (float64 keeps
        the table exact to rounding).
        """
        if not isinstance(counts, torch.Tensor) or counts.dim() != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError("counts must be a square (V, V) tensor of pair counts, e.g. from bigram_counts")
        k = check_number("smoothing", smoothing, minimum=0.0)
        table = counts.double() + k
        totals = table.sum(dim=1, keepdim=True)  # (V, 1)
        uniform = torch.full_like(table, 1.0 / table.shape[0])
        return cls.from_probs(torch.where(totals > 0, table / totals.clamp_min(1e-300), uniform), dtype=dtype)

    def probs(self) -> torch.Tensor:
        """The model's bigram table softmax(logits) (V, V), without gradients."""
        return F.softmax(self.logits.detach(), dim=-1)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        loss_mask: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> LMOutput:
        """idx (B, T) -> LMOutput(logits (B, T, V), cross-entropy loss against targets (B, T) if given)."""
        idx = as_ids(idx, "idx", dims=(2,), device=self.logits.device)
        logits = self.logits[idx]  # (B, T, V): row of the previous token
        loss = None if targets is None else lm_loss(logits, targets, loss_mask=loss_mask, reduction=reduction)
        return LMOutput(logits, loss)
