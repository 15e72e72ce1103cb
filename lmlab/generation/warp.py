"""Reshaping a next-token distribution before sampling, and drawing from it.

:func:`warp_logits` applies, in transformers' order and with its semantics, the repetition penalty,
temperature, top-k, top-p and min-p; :func:`sample_next_token` draws with an explicit ``torch.Generator``.
:func:`apply_warp` is the same as :func:`warp_logits` without argument checks, for generation loops that
check their options once, up front. Shapes: ``B`` rows, ``V`` vocabulary size, ``L`` previous tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmlab.checks import is_int, is_number

__all__ = [
    "check_warp_options",
    "apply_repetition_penalty",
    "top_k_logits",
    "top_p_logits",
    "min_p_logits",
    "apply_warp",
    "warp_logits",
    "sample_next_token",
]

NEG_INF = float("-inf")


def check_warp_options(
    temperature: float, top_k: int | None, top_p: float | None, min_p: float | None, repetition_penalty: float
) -> None:
    if not is_number(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy, 1 leaves logits unchanged), got {temperature!r}")
    if top_k is not None and (not is_int(top_k) or top_k < 0):
        raise ValueError(f"top_k must be None or an integer >= 0 (0 means no cut), got {top_k!r}")
    if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1] (1 means no cut), got {top_p!r}")
    if min_p is not None and (not is_number(min_p) or not 0 <= min_p <= 1):
        raise ValueError(f"min_p must be None or a number in [0, 1] (0 means no cut), got {min_p!r}")
    if not is_number(repetition_penalty) or repetition_penalty <= 0:
        raise ValueError(
            f"repetition_penalty must be a number > 0 (1: none, > 1 discourages repeats), got {repetition_penalty!r}"
        )


def apply_repetition_penalty(scores: torch.Tensor, prev: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019, eq. 2) as transformers applies it to scores (B, V).

    Every token in ``prev`` (B, L) counts once however often it occurred: a positive score is divided by
    the penalty and a negative one multiplied, so penalty > 1 always lowers it.
    """
    picked = torch.gather(scores, 1, prev)  # (B, L)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, prev, picked)


def top_k_logits(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep every token scoring at least the k-th highest (ties at the boundary are all kept; Fan et al. 2018)."""
    k = min(max(k, 1), scores.shape[-1])
    kth = torch.topk(scores, k)[0][..., -1, None]  # (B, 1)
    return scores.masked_fill(scores < kth, NEG_INF)


def top_p_logits(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the most probable tokens whose probabilities sum to >= p.

    transformers' formulation: sort ascending, remove tokens while the cumulative probability of the
    *least* probable ones stays <= 1 - p; the most probable token is always kept.
    """
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return scores.masked_fill(remove, NEG_INF)


def min_p_logits(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Min-p filtering (Nguyen et al. 2024): drop tokens less probable than ``p`` times the top probability."""
    probs = torch.softmax(scores, dim=-1)
    remove = probs < p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(-1, torch.topk(probs, 1, dim=-1).indices, False)  # the top token always stays
    return scores.masked_fill(remove, NEG_INF)


def apply_warp(
    scores: torch.Tensor,
    prev: torch.Tensor | None,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None,
    repetition_penalty: float,
) -> torch.Tensor:
    """warp_logits on (B, V) scores without argument checks (the generation loops check once, up front)."""
    if repetition_penalty != 1.0:
        scores = apply_repetition_penalty(scores, prev, repetition_penalty)
    if temperature == 0:  # the limit T -> 0: only the argmax (lowest id among ties) stays
        keep = scores.argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, NEG_INF).scatter(1, keep, scores.gather(1, keep))
    if temperature != 1.0:
        scores = scores / temperature
    if top_k:
        scores = top_k_logits(scores, top_k)
    if top_p is not None and top_p < 1.0:
        scores = top_p_logits(scores, top_p)
    if min_p is not None:
        scores = min_p_logits(scores, min_p)
    return scores


def warp_logits(
    logits: torch.Tensor,
    prev_ids: Sequence[int] | torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    """Reshape next-token logits (V,) or (B, V); removed tokens get -inf. Returns the same shape.

    Applied in transformers' order (``GenerationMixin._get_logits_processor``) with its semantics:

    1. ``repetition_penalty`` over every token in ``prev_ids`` ((L,) or (B, L), prompt included), once per
       distinct token: positive logits divided by it, negative ones multiplied (``RepetitionPenaltyLogitsProcessor``);
    2. ``temperature``: logits / temperature (``TemperatureLogitsWarper``). ``temperature=0`` (which
       transformers refuses) keeps only the argmax, lowest id among ties, so sampling becomes greedy;
    3. ``top_k``: keep tokens scoring at least the k-th best, ties included (``TopKLogitsWarper``; 0 = no cut);
    4. ``top_p``: keep the smallest most-probable set with probability >= top_p, at least one token
       (``TopPLogitsWarper``);
    5. ``min_p``: drop tokens with probability < min_p x the top probability, after temperature
       (``MinPLogitsWarper``).

    Half-precision logits are computed in float32; float32 and float64 keep their dtype.
    """
    check_warp_options(temperature, top_k, top_p, min_p, repetition_penalty)
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point torch.Tensor of shape (V,) or (B, V)")
    if logits.dim() not in (1, 2) or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape (V,) or (B, V) with V >= 1, got {tuple(logits.shape)}")
    one_row = logits.dim() == 1
    scores = logits.unsqueeze(0) if one_row else logits
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    prev = None
    if repetition_penalty != 1.0:
        if prev_ids is None:
            raise ValueError("repetition_penalty needs prev_ids: the tokens generated so far (and the prompt)")
        prev = torch.as_tensor(prev_ids, dtype=torch.long, device=scores.device)
        if prev.dim() == 1:
            prev = prev.unsqueeze(0).expand(scores.shape[0], -1)
        if prev.dim() != 2 or prev.shape[0] != scores.shape[0]:
            raise ValueError(
                f"prev_ids must have shape (L,) or (B, L) with B = {scores.shape[0]}, got {tuple(prev.shape)}"
            )
        if prev.numel() and (int(prev.min()) < 0 or int(prev.max()) >= scores.shape[-1]):
            raise ValueError(f"prev_ids must be token ids in [0, {scores.shape[-1]})")
    out = apply_warp(scores, prev, temperature, top_k, top_p, min_p, repetition_penalty)
    return out[0] if one_row else out


def sample_next_token(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token from softmax(logits): logits (..., V) -> token ids (...), long.

    ``generator``: a seeded ``torch.Generator`` on the logits' device for reproducible draws (None uses
    PyTorch's global generator). Tokens at -inf are never drawn.
    """
    probs = torch.softmax(logits, dim=-1)
    if probs.dim() == 1:
        return torch.multinomial(probs, 1, generator=generator)[0]
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
