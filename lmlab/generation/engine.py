"""The generation engine: read a prompt once (prefill), then feed one token per row at a time.

Every decoder of :mod:`lmlab.generation.search` runs on this loop. :func:`prefill` reads the prompt into the
model's decoding state (a :class:`~lmlab.models.cache.DecodeCache`, when the model has ``new_cache``) and
returns the first next-token logits and a :class:`DecodeState`; :meth:`DecodeState.feed` (or the checked
:func:`decode_one_token`) appends one token per row and returns the next logits. Beams and samples are
rows of one state (:meth:`DecodeState.reorder`).

Context limit: past the model's ``context_limit`` (:func:`lmlab.lm.context_limit`) the window *slides*: each
next token is predicted from the last ``context_limit`` tokens only, recomputed without a cache. Models
without ``new_cache`` (for example ``MarkovSource.as_model()``) re-read the whole prefix each step.

Shapes: ``B`` rows, ``P`` prompt tokens, ``L`` tokens so far, ``V`` vocabulary size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmlab.checks import check_int, check_vocab, is_int, model_device
from lmlab.lm import context_limit

__all__ = [
    "DecodeState",
    "start",
    "decode_loop",
    "as_prompt",
    "check_max_new_tokens",
    "check_eos",
    "prefill",
    "decode_one_token",
]


def _vocab_size(model: Any) -> int | None:
    v = getattr(model, "vocab_size", None)
    return v if is_int(v) else None


def as_prompt(prompt_ids: Sequence[int] | torch.Tensor, model: Any) -> torch.Tensor:
    """The prompt as a 1-D long tensor (P,) on the model's device, checked against its vocabulary."""
    device = model_device(model)
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() != 1:
            raise ValueError(f"prompt_ids must be 1-D, got shape {tuple(prompt_ids.shape)}")
        if prompt_ids.is_floating_point() or prompt_ids.is_complex() or prompt_ids.dtype == torch.bool:
            raise TypeError(f"prompt_ids must hold integer token ids, got dtype {prompt_ids.dtype}")
        ids = prompt_ids.to(device=device, dtype=torch.long)
    else:
        if isinstance(prompt_ids, str):
            raise TypeError("prompt_ids must be token ids; encode the text with a tokenizer first")
        values = list(prompt_ids)
        if not all(is_int(v) or (isinstance(v, torch.Tensor) and v.dim() == 0) for v in values):
            raise TypeError("prompt_ids must be a list of int token ids or a 1-D integer tensor")
        ids = torch.tensor([int(v) for v in values], dtype=torch.long, device=device)
    if ids.numel() == 0:
        raise ValueError(
            "prompt_ids is empty: give at least one token (for example a newline or BOS token); "
            "lmlab has no implicit BOS token"
        )
    check_vocab(ids, _vocab_size(model), "prompt_ids")
    return ids


def check_max_new_tokens(max_new_tokens: Any, minimum: int = 0) -> int:
    """``max_new_tokens`` as an int >= ``minimum``, else a ValueError."""
    return check_int("max_new_tokens", max_new_tokens, minimum)


def check_eos(eos_token_id: Any, model: Any) -> None:
    """Accept None or a token id of ``model``'s vocabulary; else a ValueError."""
    if eos_token_id is None:
        return
    V = _vocab_size(model)
    if not is_int(eos_token_id) or eos_token_id < 0 or (V is not None and eos_token_id >= V):
        allowed = f"an integer in [0, {V})" if V is not None else "an integer >= 0"
        raise ValueError(f"eos_token_id must be None or {allowed}, got {eos_token_id!r}")


@dataclass
class DecodeState:
    """What generation carries from one step to the next.

    ``ids`` (B, capacity) holds every row's tokens in ``ids[:, :length]`` (prompt first). ``cache`` is the
    model's decoding state while the context fits in it, else None (then each step re-reads the last
    ``window`` tokens, or the whole prefix when ``window`` is None).
    """

    model: Any
    ids: torch.Tensor  # (B, capacity) long
    length: int  # tokens filled per row
    cache: Any  # a DecodeCache; None once the context outgrows it, or when the model has none
    window: int | None  # the model's context limit (None: any length)

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    def tokens(self, row: int = 0) -> list[int]:
        """Row ``row``'s tokens so far (prompt included)."""
        return self.ids[row, : self.length].tolist()

    def append(self, tokens: torch.Tensor) -> None:
        """Write one new token per row, tokens (B,), without running the model."""
        if self.length == self.ids.shape[1]:
            raise ValueError(f"the state holds at most {self.ids.shape[1]} tokens per row; prefill with more room")
        self.ids[:, self.length] = tokens
        self.length += 1

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (B',) of the tokens and the cache: picks beams, or copies one prompt to many."""
        if self.cache is not None:
            self.cache.reorder(index)
        self.ids = self.ids.index_select(0, index)

    def logits(self, n_new: int) -> torch.Tensor:
        """Next-token logits (B, V) after reading the last ``n_new`` tokens of ``ids`` (the only unread ones)."""
        L, cache = self.length, self.cache
        if cache is not None:
            capacity = cache.capacity
            if capacity is None or cache.length + n_new <= capacity:
                return self.model(self.ids[:, L - n_new : L], cache=cache).logits[:, -1]
            self.cache = None  # the cache is full: from here on the window slides (recomputed each step)
        lo = 0 if self.window is None else max(0, L - self.window)
        return self.model(self.ids[:, lo:L]).logits[:, -1]

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row, tokens (B,), and return the next-token logits (B, V). No checks."""
        self.append(tokens)
        return self.logits(1)


def start(model: Any, prompt: torch.Tensor, capacity: int, use_cache: bool) -> tuple[torch.Tensor, DecodeState]:
    """:func:`prefill` for a prompt already checked by :func:`as_prompt`: ``capacity`` tokens in all."""
    P = prompt.numel()
    window = context_limit(model)
    ids = torch.empty(1, max(capacity, P), dtype=torch.long, device=prompt.device)
    ids[0, :P] = prompt
    cache = None
    if use_cache and hasattr(model, "new_cache") and (window is None or P <= window):
        needed = max(P, capacity - 1)  # the last generated token is returned, never fed back
        cache = model.new_cache(1, needed if window is None else min(needed, window))
    state = DecodeState(model, ids, P, cache, window)
    return state.logits(P), state


@torch.inference_mode()
def prefill(
    model: Any,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    use_cache: bool = True,
) -> tuple[torch.Tensor, DecodeState]:
    """Read the prompt (P,) once. Returns next-token logits (1, V) and the :class:`DecodeState` to go on from.

    The cache is sized for ``max_new_tokens`` more tokens (capped at the context limit; beyond that the
    window slides).
    """
    check_max_new_tokens(max_new_tokens)
    prompt = as_prompt(prompt_ids, model)
    return start(model, prompt, prompt.numel() + max_new_tokens, use_cache)


@torch.inference_mode()
def decode_one_token(state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
    """Feed one new token per row, tokens (B,) long; returns the next-token logits (B, V)."""
    if not isinstance(tokens, torch.Tensor) or tokens.shape != (state.batch_size,):
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a tensor of shape ({state.batch_size},), one per row, got {shape}")
    return state.feed(tokens)


def decode_loop(
    logits: torch.Tensor,
    state: DecodeState,
    max_new_tokens: int,
    choose: Callable[[torch.Tensor, DecodeState], torch.Tensor],
    *,
    eos_token_id: int | None = None,
    on_step: Callable[[torch.Tensor, torch.Tensor, bool], None] | None = None,
) -> DecodeState:
    """The one token-by-token loop that greedy decoding and sampling share.

    ``logits`` (B, V) are the next-token logits after ``state`` (from :func:`start` or :func:`prefill`). At
    each of at most ``max_new_tokens`` steps ``choose(logits, state)`` picks one token per row (B,), the
    token is appended and, unless it was the last step, fed to the model. A row that produced
    ``eos_token_id`` is finished: it repeats the EOS token from then on, and the loop stops when every row
    is finished. ``on_step(logits, tokens, final)`` (a search-tree recorder, say) sees each step before
    it is applied; ``final`` is True at the step after which the loop stops. Returns the state: its
    ``ids[:, :length]`` hold every row's prompt and generated tokens.
    """
    finished: torch.Tensor | None = None  # (B,) bool, rows that have produced the EOS token
    for i in range(max_new_tokens):
        tokens = choose(logits, state)  # (B,)
        final = i == max_new_tokens - 1
        if eos_token_id is not None:
            is_eos = tokens == eos_token_id
            if finished is not None:
                tokens = torch.where(finished, torch.full_like(tokens, eos_token_id), tokens)
                is_eos = is_eos | finished
            finished = is_eos
            final = final or bool(finished.all())  # one host sync per step, only when there is an EOS token
        if on_step is not None:
            on_step(logits, tokens, final)
        if final:
            state.append(tokens)
            break
        logits = state.feed(tokens)
    return state
