"""What every language model in lmlab agrees on: its output, its loss, the ignore index, its context limit.

This small module is the meeting point of the two sides of the library: the models (:mod:`lmlab.models`)
produce an :class:`LMOutput` and compute :func:`lm_loss`; data, training, likelihood and generation consume
them. Both sides may import it; it imports neither.

A **language model** (:class:`LanguageModel`) is a callable ``model(idx, targets=None, *, loss_mask=None,
reduction="mean")`` mapping token ids ``(B, T)`` to an :class:`LMOutput` with next-token logits
``(B, T, V)``: ``logits[:, t]`` scores the token at position ``t + 1``. It has a ``vocab_size``, and it may
have a ``context_limit`` (the longest context it reads; None or absent: any length) and a ``new_cache``
method for incremental decoding (see :mod:`lmlab.models.cache`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "IGNORE_INDEX",
    "REDUCTIONS",
    "LMOutput",
    "HiddenLMOutput",
    "LanguageModel",
    "lm_loss",
    "context_limit",
    "eval_mode",
]

IGNORE_INDEX = -100  # targets equal to this are not scored (the same convention as PyTorch and transformers)
REDUCTIONS = ("mean", "sum", "none")


class LMOutput(NamedTuple):
    """What a language model returns: unpack it as ``logits, loss = model(idx, targets)``."""

    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # scalar for "mean"/"sum", (B, T) for "none", None without targets


class HiddenLMOutput(NamedTuple):
    """:class:`LMOutput` plus the final hidden states, for extra output heads on the same trunk.

    What ``GPT(..., return_hidden=True)`` returns: ``logits, loss, hidden = model(idx, targets, return_hidden=True)``.
    """

    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None  # as in LMOutput
    hidden: torch.Tensor  # (B, T, C): the residual stream after the final LayerNorm, which the output layer reads


@runtime_checkable
class LanguageModel(Protocol):
    """The interface that training, likelihood and generation rely on (a structural type: no base class)."""

    vocab_size: int

    def __call__(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        loss_mask: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> LMOutput: ...


def context_limit(model: Any) -> int | None:
    """The longest context ``model`` reads, from its ``context_limit`` attribute; None means any length.

    Likelihood windows and generation use it: past it, the context window slides.
    """
    limit = getattr(model, "context_limit", None)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"model.context_limit must be a positive int or None (any length), got {limit!r}")
    return limit


@contextlib.contextmanager
def eval_mode(model: Any, *, no_grad: bool = True) -> Iterator[None]:
    """Run a block with ``model`` in eval mode (no dropout) and, by default, without gradients.

    The model's train/eval mode is restored afterwards, also when the block raises.
    """
    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield
    finally:
        if was_training:
            model.train()


def lm_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_mask: torch.Tensor | None = None,
    reduction: str = "mean",
    shift: int = 0,
) -> torch.Tensor:
    """Cross-entropy of next-token ``logits`` (B, T, V) against ``targets`` (B, T), in nats.

    Positions where ``targets == -100`` or ``loss_mask`` is 0 are not scored. ``reduction``: "mean" (over
    scored positions), "sum", or "none" ((B, T), zeros where not scored).

    ``shift`` k >= 0 scores ``logits[:, t]`` against ``targets[:, t + k]``: with the usual next-token
    targets, k = 1 trains a head to predict the token two ahead (multi-token prediction, Gloeckle et al.
    2024). The last k positions have no target and are not scored; ``loss_mask`` is aligned with
    ``targets``.

    The loss keeps the logits' precision (float64 logits give a float64 loss; half precision is computed
    in float32). Token ids are not range-checked here, which would cost a host synchronisation on a GPU:
    the entry points (data, likelihood, generation, CLI) check them.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"targets shape {tuple(targets.shape)} must equal logits' (B, T) {tuple(logits.shape[:2])}")
    if loss_mask is not None and loss_mask.shape != targets.shape:
        raise ValueError(f"loss_mask shape {tuple(loss_mask.shape)} must equal targets' {tuple(targets.shape)}")
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift < max(1, targets.shape[1]):
        raise ValueError(f"shift must be an int in [0, T) = [0, {targets.shape[1]}), got {shift!r}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if shift:
        B, T = targets.shape
        pad = targets.new_full((B, shift), IGNORE_INDEX)
        targets = torch.cat([targets[:, shift:], pad], dim=1)  # targets[:, t] is now the old t + shift
        if loss_mask is not None:
            loss_mask = torch.cat([loss_mask[:, shift:], loss_mask.new_zeros((B, shift))], dim=1)
    V = logits.shape[-1]
    flat_logits, flat_targets = logits.reshape(-1, V), targets.reshape(-1)
    if loss_mask is None and reduction != "none":  # the common training case: one fused kernel
        return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX, reduction=reduction)
    valid = targets != IGNORE_INDEX
    if loss_mask is not None:
        valid = valid & loss_mask.bool()
    nll = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX, reduction="none")
    nll = nll.view_as(targets) * valid  # (B, T), zero where not scored
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    return nll.sum() / valid.sum()
