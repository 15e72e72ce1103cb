"""Scoring text with a language model: log-probabilities, cross-entropy, perplexity and bits per character.

A model here is lmlab's :class:`~lmlab.models.GPT` or any callable ``model(idx)`` taking int64 ``(B, T)`` ids
and returning next-token logits ``(B, T, V)``, either as a tensor, as the first element of a tuple, or as
an object's ``.logits`` (so transformers models work too). ``logits[:, t]`` scores the token at ``t + 1``.
``model.context_limit`` (:func:`lmlab.lm.context_limit`) is the longest context it reads (None or absent:
unlimited). ``nn.Module``
models are scored in eval mode (no dropout) and put back in the mode they were in.

Everything is computed in nats (natural log) and summed over tokens before any unit change:
bits = nats / ln 2, perplexity = exp(mean NLL in nats per token), bits per character = total NLL in nats
/ (number of characters * ln 2).

Masks are aligned with the ids: ``mask[t]`` says whether the token at position t is scored as a *target*.
The first token is never a target (nothing predicts it), so with per-token log-probs of shape (T-1,) use
``mask[1:]``; to train a GPT on a masked sequence use ``model(ids[:-1], ids[1:], loss_mask=mask[1:])``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmlab.checks import check_vocab, is_int, model_device
from lmlab.lm import IGNORE_INDEX, REDUCTIONS, context_limit, eval_mode, lm_loss

__all__ = [
    "LN2",
    "token_logprobs",
    "sequence_logprob",
    "nll",
    "aggregate",
    "nats_to_bits",
    "bits_to_nats",
    "perplexity",
    "bits_per_token",
    "bits_per_char",
    "bits_per_byte",
    "Evaluation",
    "evaluate_text",
    "ROLES",
    "ChatTemplate",
    "DEFAULT_TEMPLATE",
    "render_dialogue",
    "dialogue_tokens",
]

LN2 = math.log(2.0)  # bits = nats / LN2 (change of logarithm base)
AGGREGATIONS = ("sum", "mean_per_token", "mean_per_sequence")
ROLES = ("system", "user", "assistant")


# ---------------------------------------------------------------------------------------------- model calls
def _as_ids(ids: Any, device: torch.device) -> torch.Tensor:
    if isinstance(ids, str):
        raise TypeError("ids must be token ids, not a string; encode the text with a tokenizer first")
    if not isinstance(ids, torch.Tensor):
        try:
            ids = torch.tensor(list(ids), dtype=torch.long, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"ids must be a tensor or a sequence of ints, got {type(ids).__name__}") from err
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"ids must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() not in (1, 2):
        raise ValueError(f"ids must have shape (T,) or (B, T), got shape {tuple(ids.shape)}")
    if ids.shape[-1] < 2:
        raise ValueError(
            f"ids has {ids.shape[-1]} token(s) per sequence; at least 2 are needed, because the first token "
            "is only context (prepend a BOS token to score it)"
        )
    if ids.shape[0] == 0:
        raise ValueError(f"ids is empty (shape {tuple(ids.shape)})")
    return ids.long()


def _logits(model: Any, idx: torch.Tensor) -> torch.Tensor:
    """model(idx) -> logits (B, T, V) from a tensor, a tuple (first element) or an object's ``.logits``."""
    out = model(idx)
    if not isinstance(out, torch.Tensor):
        if hasattr(out, "logits"):
            out = out.logits
        elif isinstance(out, tuple | list) and out:
            out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"the model returned {type(out).__name__}; expected logits, a tuple or an object with .logits"
        )
    if out.dim() != 3 or out.shape[:2] != idx.shape:
        raise ValueError(
            f"the model's logits have shape {tuple(out.shape)}; expected (B, T, V) for idx {tuple(idx.shape)}"
        )
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


def _windows(T: int, limit: int | None, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_target) of each window: the window reads ids[begin:end] and scores targets
    first_target..end-1. Windows are limit long and end at limit, limit + stride, ..., T."""
    if limit is None or T <= limit:
        return [(0, T, 1)]
    out, first, end = [], 1, limit
    while True:
        end = min(end, T)
        out.append((end - limit, end, first))
        if end == T:
            return out
        first, end = end, end + stride


def _score(model: Any, ids: torch.Tensor, stride: int | None, batch_size: int) -> torch.Tensor:
    """(B, T) ids -> (B, T-1) log p(ids[:, t] | context) for t = 1..T-1, with strided windows when needed."""
    B, T = ids.shape
    limit = context_limit(model)
    if limit is not None and T > limit:
        if limit < 2:
            raise ValueError(f"model.context_limit is {limit}: at least 2 are needed to score in windows")
        stride = limit // 2 if stride is None else stride
        if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride < limit:
            raise ValueError(
                f"stride must be an int in [1, context_limit - 1] = [1, {limit - 1}], got {stride!r}"
            )
    elif stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1):
        raise ValueError(f"stride must be a positive int or None, got {stride!r}")
    windows = _windows(T, limit, stride or 1)
    per_call = max(1, batch_size // B)  # windows per forward pass
    out: torch.Tensor | None = None
    with eval_mode(model):
        for c in range(0, len(windows), per_call):
            chunk = windows[c : c + per_call]
            x = torch.cat([ids[:, b:e] for b, e, _ in chunk])  # (len(chunk) * B, window length)
            logits = _logits(model, x).view(len(chunk), B, x.shape[1], -1)
            V = logits.shape[-1]
            if out is None:
                out = torch.empty(B, T - 1, dtype=logits.dtype, device=logits.device)
            for i, (b, e, first) in enumerate(chunk):
                targets = ids[:, first:e]
                if int(targets.max()) >= V:
                    raise ValueError(
                        f"ids has token id {int(targets.max())}, outside the model's vocabulary [0, {V})"
                    )
                # logits at window position p predict the token at p + 1
                logp = F.log_softmax(logits[i, :, first - b - 1 : e - b - 1], dim=-1)
                out[:, first - 1 : e - 1] = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert out is not None  # at least one window always exists
    return out


def token_logprobs(model: Any, ids: Any, *, stride: int | None = None, batch_size: int = 16) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) in nats for t = 1..T-1: (B, T-1) for (B, T) ids, (T-1,) for 1-D ids or a list.

    When T is longer than the model's ``context_limit`` the text is read in windows of that many tokens (L) ending
    at L, L + stride, ..., T (the last one ends exactly at T). Each token is scored once,
    by the first window that contains it after the previous window's end, so every token past the first
    window has at least ``L - stride`` tokens of context (default stride = L // 2). This is
    the sliding-window scheme of Hugging Face's guide "Perplexity of fixed-length models", except that the
    last window is full length too (it starts at T - L), which only adds context. Windows are
    batched, up to ``batch_size`` rows per forward pass (at least one window of all B rows). The result has
    the logits' dtype (at least float32) and device; gradients are off.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    x = _as_ids(ids, model_device(model))
    vocab = getattr(model, "vocab_size", None)
    check_vocab(x, vocab if is_int(vocab) else None)  # once here, not inside the model's forward
    out = _score(model, x if x.dim() == 2 else x.unsqueeze(0), stride, batch_size)
    return out if x.dim() == 2 else out.squeeze(0)


def _as_mask(mask: Any, shape: torch.Size, device: torch.device, name: str = "mask") -> torch.Tensor:
    mask = torch.as_tensor(mask, device=device)
    if mask.shape != shape:
        raise ValueError(f"{name} shape {tuple(mask.shape)} must equal {tuple(shape)}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name} must be boolean or 0/1 integers, got dtype {mask.dtype}")
        mask = mask.bool()
    return mask


def sequence_logprob(
    model: Any, ids: Any, *, mask: Any = None, stride: int | None = None, batch_size: int = 16
) -> torch.Tensor:
    """Sum of log p(ids[t] | ids[:t]) over t >= 1 (nats): (B,) for (B, T) ids, a 0-dim tensor for 1-D ids.

    ``mask`` (same shape as ids, bool or 0/1) keeps only targets t with ``mask[t]``; ``mask[..., 0]`` is
    ignored because the first token is never predicted. Windows as in :func:`token_logprobs`.
    """
    lp = token_logprobs(model, ids, stride=stride, batch_size=batch_size)
    if mask is not None:
        full = torch.Size((*lp.shape[:-1], lp.shape[-1] + 1))
        lp = torch.where(_as_mask(mask, full, lp.device)[..., 1:], lp, torch.zeros_like(lp))
    return lp.sum(-1)


# ---------------------------------------------------------------------------------------------- losses
def nll(
    logits: torch.Tensor, targets: torch.Tensor, *, mask: torch.Tensor | None = None, reduction: str = "mean"
) -> torch.Tensor:
    """Negative log-likelihood -log softmax(logits)[target] in nats: the cross-entropy against the targets.

    logits (..., V), targets (...) int ids. NLL = logsumexp(logits) - logits[target], computed stably by
    :func:`lmlab.lm.lm_loss` (the library's one cross-entropy); the ids are range-checked here. Targets
    equal to -100 or where ``mask`` is False are not scored. ``reduction``: "none" (shape of targets, 0 where
    unscored), "sum", or "mean" over scored targets (NaN when none is, like
    ``torch.nn.functional.cross_entropy``).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point torch.Tensor")
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError("targets must be a torch.Tensor of integer token ids")
    if logits.dim() < 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} must be targets' shape {tuple(targets.shape)} + (V,)"
        )
    V = logits.shape[-1]
    valid = targets != IGNORE_INDEX
    if mask is not None:
        valid = valid & _as_mask(mask, targets.shape, targets.device)
    if bool((valid & ((targets < 0) | (targets >= V))).any()):
        raise ValueError(f"targets hold ids outside the vocabulary [0, {V}) (use -100 to skip a position)")
    safe = torch.where(valid, targets.long(), IGNORE_INDEX)  # unscored positions: the ignore index
    flat = lm_loss(logits.reshape(1, -1, V), safe.reshape(1, -1), reduction="none" if reduction == "none" else "sum")
    if reduction == "none":
        return flat.view(targets.shape)
    if reduction == "sum":
        return flat
    return flat / valid.sum()


def aggregate(token_nll: torch.Tensor, mask: Any = None, how: str = "mean_per_token") -> torch.Tensor:
    """Reduce per-token losses (B, T) (or (T,)) over the positions where ``mask`` is True (default: all).

    - "sum": total over scored tokens (nats when the losses are nats);
    - "mean_per_token": total / number of scored tokens, so longer sequences weigh more;
    - "mean_per_sequence": the mean of each sequence's own per-token mean, so each sequence weighs the same;
      sequences without a scored token are left out.
    Raises ValueError when no token is scored (a mean would be undefined).
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"how must be one of {AGGREGATIONS}, got {how!r}")
    if not isinstance(token_nll, torch.Tensor) or not token_nll.is_floating_point():
        raise TypeError("token_nll must be a floating-point torch.Tensor")
    if token_nll.dim() not in (1, 2):
        raise ValueError(f"token_nll must have shape (T,) or (B, T), got {tuple(token_nll.shape)}")
    x = token_nll if token_nll.dim() == 2 else token_nll.unsqueeze(0)
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else _as_mask(mask, token_nll.shape, x.device)
    m = m.reshape(x.shape)
    counts = m.sum(-1)  # (B,)
    if int(counts.sum()) == 0:
        raise ValueError("mask selects no token, so there is nothing to aggregate")
    sums = torch.where(m, x, torch.zeros_like(x)).sum(-1)  # (B,)
    if how == "sum":
        return sums.sum()
    if how == "mean_per_token":
        return sums.sum() / counts.sum()
    has = counts > 0
    return (sums[has] / counts[has]).mean()


# ---------------------------------------------------------------------------------------------- units
def nats_to_bits(nats: float | torch.Tensor) -> float | torch.Tensor:
    """bits = nats / ln 2 (change of logarithm base)."""
    return nats / LN2


def bits_to_nats(bits: float | torch.Tensor) -> float | torch.Tensor:
    """nats = bits * ln 2."""
    return bits * LN2


def perplexity(nats_per_token: float | torch.Tensor) -> float | torch.Tensor:
    """exp(mean NLL in nats per token): the effective number of equally likely choices per token."""
    return torch.exp(nats_per_token) if isinstance(nats_per_token, torch.Tensor) else math.exp(nats_per_token)


def _per_unit(total_nats: float, count: int, what: str) -> float:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{what} must be a positive int, got {count!r}")
    return float(total_nats) / (count * LN2)


def bits_per_token(total_nats: float, n_tokens: int) -> float:
    """total NLL (nats) / (n_tokens * ln 2)."""
    return _per_unit(total_nats, n_tokens, "n_tokens")


def bits_per_char(total_nats: float, n_chars: int) -> float:
    """total NLL (nats) / (n_chars * ln 2): comparable across tokenizers of the same text."""
    return _per_unit(total_nats, n_chars, "n_chars")


def bits_per_byte(total_nats: float, n_bytes: int) -> float:
    """total NLL (nats) / (n_bytes * ln 2), with n_bytes the length of the text's UTF-8 encoding."""
    return _per_unit(total_nats, n_bytes, "n_bytes")


@dataclass(frozen=True)
class Evaluation:
    """Totals of scoring a text: summed NLL in nats and the counts it is divided by.

    Add two evaluations (``a + b``) to pool splits: sums are added before any division.
    """

    total_nats: float  # -sum of log p(token | context) over the scored tokens
    n_tokens: int  # number of scored tokens (T - 1 for one sequence of T ids)
    n_chars: int | None = None  # characters of the text, when known
    n_bytes: int | None = None  # UTF-8 bytes of the text, when known

    def __post_init__(self) -> None:
        for name in ("n_tokens", "n_chars", "n_bytes"):
            v = getattr(self, name)
            if v is None and name != "n_tokens":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Evaluation.{name} must be a positive int, got {v!r}")

    @property
    def nats_per_token(self) -> float:
        return self.total_nats / self.n_tokens

    @property
    def bits_per_token(self) -> float:
        return bits_per_token(self.total_nats, self.n_tokens)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)

    @property
    def bits_per_char(self) -> float | None:
        """None when ``n_chars`` is unknown."""
        return None if self.n_chars is None else bits_per_char(self.total_nats, self.n_chars)

    @property
    def bits_per_byte(self) -> float | None:
        """None when ``n_bytes`` is unknown."""
        return None if self.n_bytes is None else bits_per_byte(self.total_nats, self.n_bytes)

    def __add__(self, other: Evaluation) -> Evaluation:
        if not isinstance(other, Evaluation):
            return NotImplemented
        chars = None if self.n_chars is None or other.n_chars is None else self.n_chars + other.n_chars
        n_bytes = None if self.n_bytes is None or other.n_bytes is None else self.n_bytes + other.n_bytes
        return Evaluation(self.total_nats + other.total_nats, self.n_tokens + other.n_tokens, chars, n_bytes)

    def __str__(self) -> str:
        parts = [f"{self.nats_per_token:.4f} nats/token", f"{self.bits_per_token:.4f} bits/token"]
        parts.append(f"perplexity {self.perplexity:.3f}")
        if self.n_chars is not None:
            parts.append(f"{self.bits_per_char:.4f} bits/char")
        if self.n_bytes is not None:
            parts.append(f"{self.bits_per_byte:.4f} bits/byte")
        return f"{', '.join(parts)} ({self.n_tokens} tokens)"


def evaluate_text(
    model: Any,
    ids: Any,
    *,
    n_chars: int | None = None,
    n_bytes: int | None = None,
    stride: int | None = None,
    batch_size: int = 16,
) -> Evaluation:
    """Score a whole split (1-D ids; or (B, T) independent documents) exactly, with strided windows past
    the model's context limit (see :func:`token_logprobs`). The first token of each sequence is context only;
    ``n_chars``/``n_bytes`` count the text the ids encode (prepend a BOS token so that every character is
    scored). The total is summed in float64."""
    lp = token_logprobs(model, ids, stride=stride, batch_size=batch_size)
    return Evaluation(-float(lp.double().sum()), lp.numel(), n_chars, n_bytes)


# ---------------------------------------------------------------------------------------------- dialogue
@dataclass(frozen=True)
class ChatTemplate:
    """A plain-text chat format. Each turn renders as ``header.format(role=role) + content + end``:

        <|user|>
        What is 2+2?<|end|>
        <|assistant|>
        4<|end|>

    Only an assistant turn's content and its ``end`` marker are scored (the model learns when to stop).
    """

    header: str = "<|{role}|>\n"
    end: str = "<|end|>\n"

    def __post_init__(self) -> None:
        if not isinstance(self.header, str) or "{role}" not in self.header:
            raise ValueError(
                f"ChatTemplate.header must be a string containing '{{role}}', got {self.header!r}"
            )
        try:
            self.header.format(role="user")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"ChatTemplate.header may only use the field '{{role}}': {err}") from err
        if not isinstance(self.end, str) or not self.end:
            raise ValueError(f"ChatTemplate.end must be a non-empty string, got {self.end!r}")


DEFAULT_TEMPLATE = ChatTemplate()


def _turns(turns: Any) -> list[tuple[str, str]]:
    if isinstance(turns, str | bytes) or not isinstance(turns, Sequence):
        raise TypeError("turns must be a list of (role, text) tuples or {'role': ..., 'content': ...} dicts")
    if len(turns) == 0:
        raise ValueError("turns is empty; give at least one (role, text) turn")
    out = []
    for i, turn in enumerate(turns):
        if isinstance(turn, Mapping):
            if "role" not in turn or "content" not in turn:
                raise ValueError(f"turn {i} must have keys 'role' and 'content', got {sorted(turn)}")
            role, text = turn["role"], turn["content"]
        elif isinstance(turn, tuple | list) and len(turn) == 2:
            role, text = turn
        else:
            raise TypeError(f"turn {i} must be a (role, text) pair or a dict, got {turn!r}")
        if role not in ROLES:
            raise ValueError(f"turn {i} has role {role!r}; roles are {ROLES}")
        if not isinstance(text, str):
            raise TypeError(f"turn {i}'s text must be a str, got {type(text).__name__}")
        out.append((role, text))
    return out


def render_dialogue(turns: Any, *, template: ChatTemplate = DEFAULT_TEMPLATE) -> list[tuple[str, bool]]:
    """The dialogue as ``(text, scored)`` segments; ``"".join(text)`` is the full rendering.

    ``turns``: (role, text) tuples or dicts with "role" and "content"; role in "system", "user",
    "assistant" (any order). Scored segments are the assistant contents and their end markers.
    """
    if not isinstance(template, ChatTemplate):
        raise TypeError(f"template must be a ChatTemplate, got {type(template).__name__}")
    segments = []
    for role, text in _turns(turns):
        scored = role == "assistant"
        segments += [(template.header.format(role=role), False), (text, scored), (template.end, scored)]
    return segments


def dialogue_tokens(
    turns: Any, tokenizer: Any, *, template: ChatTemplate = DEFAULT_TEMPLATE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (T,) int64 of a rendered dialogue and a mask (T,) bool, True exactly on the tokens of the
    assistant replies and their end markers.

    ``tokenizer`` is any object with ``encode(str) -> list[int]``. Each segment of :func:`render_dialogue`
    is encoded on its own so the mask is exact; a subword tokenizer may then split differently from
    encoding the whole string at once. Use the mask as targets: ``sequence_logprob(model, ids, mask=mask)``,
    or ``model(ids[:-1], ids[1:], loss_mask=mask[1:])`` to train.
    """
    encode = getattr(tokenizer, "encode", None)
    if not callable(encode):
        raise TypeError(
            f"tokenizer must have an encode(str) -> list[int] method, got {type(tokenizer).__name__}"
        )
    ids: list[int] = []
    mask: list[bool] = []
    for text, scored in render_dialogue(turns, template=template):
        if not text:
            continue
        piece = list(encode(text))
        try:
            ids += [operator.index(i) for i in piece]
        except TypeError as err:
            raise TypeError(f"tokenizer.encode must return a list of ints, got {piece[:5]!r}") from err
        mask += [scored] * len(piece)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.bool)
