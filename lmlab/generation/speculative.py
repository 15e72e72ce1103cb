"""Self-speculative greedy decoding: a multi-token model drafts with its extra heads and checks with head 1.

Blockwise parallel decoding (Stern et al. 2018, "Blockwise Parallel Decoding for Deep Autoregressive
Models"), as Gloeckle et al. 2024 use it with multi-token prediction ("self-speculative decoding"). A
:class:`~lmlab.models.MultiTokenGPT` with H heads reads the tokens so far; at the last position head 1 gives
the next token (greedy's own choice) and heads 2..H *draft* the tokens after it. Then one forward pass over
``[next token, draft_1, ..., draft_m]`` (with the KV cache) gives head 1's choice after each of them: the
drafts are kept for as long as each equals head 1's choice at the position before it, and head 1's choice
after the last kept draft comes for free. Rejected drafts are cut from the cache
(:meth:`~lmlab.models.cache.KVCache.crop`). Every kept token is the one greedy decoding would have chosen,
so the output is exactly :func:`lmlab.generation.greedy`'s (up to ties that rounding can flip: reading
several tokens in one pass rounds differently from reading them one at a time); what changes is the number
of forward passes: between ``1 + ceil((N - 1) / H)`` (every draft kept) and N (none kept) for N tokens.

Shapes: ``H`` heads, ``m`` drafts in a step (at most ``n_draft``), ``C`` channels, ``V`` vocabulary size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lmlab.checks import check_int
from lmlab.generation.engine import as_prompt, check_eos, check_max_new_tokens
from lmlab.lm import context_limit

__all__ = ["SpeculativeStats", "speculative_greedy", "accept_drafts"]


@dataclass
class SpeculativeStats:
    """What one run of :func:`speculative_greedy` did."""

    new_tokens: int = 0  # tokens generated (returned after the prompt)
    forward_passes: int = 0  # calls of the model, the prompt's prefill included
    drafted: int = 0  # draft tokens checked by head 1
    accepted: int = 0  # of those, the ones equal to head 1's (greedy's) choice and kept
    accepted_per_step: list[int] = field(default_factory=list)  # accepted drafts of each verifying pass
    drafted_by_head: list[int] = field(default_factory=list)  # [j]: drafts checked from head j + 2
    accepted_by_head: list[int] = field(default_factory=list)  # [j]: of those, the ones accepted

    @property
    def acceptance_rate(self) -> float:
        """accepted / drafted (nan when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else math.nan

    @property
    def tokens_per_pass(self) -> float:
        """new_tokens / forward_passes: 1 for plain greedy decoding, up to H with H perfect heads."""
        return self.new_tokens / self.forward_passes if self.forward_passes else math.nan


def accept_drafts(drafts: torch.Tensor, choices: torch.Tensor) -> int:
    """How many leading drafts equal head 1's choices: drafts (m,) and choices (m + 1,), where ``choices[i]``
    is head 1's token after the i-th fed token (``drafts[i]`` is a guess for that same token). Stops at the
    first mismatch: a draft after a wrong one was drafted from the wrong prefix."""
    m = drafts.numel()
    if m == 0:
        return 0
    wrong = (drafts != choices[:m]).nonzero()
    return int(wrong[0, 0]) if wrong.numel() else m


def _check_model(model: Any) -> int:
    """The number of heads H of a multi-token model, or a TypeError that says what is needed."""
    needs = ("head_states", "lm_head", "new_cache")
    n_future = getattr(model, "n_future", None)
    if not isinstance(n_future, int) or any(not hasattr(model, name) for name in needs):
        raise TypeError(
            "speculative_greedy needs a multi-token model such as lmlab.models.MultiTokenGPT (n_future, "
            f"head_states, lm_head, new_cache); got {type(model).__name__}. For other models use greedy()"
        )
    return n_future


@torch.inference_mode()
def speculative_greedy(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    n_draft: int | None = None,
    eos_token_id: int | None = None,
    return_stats: bool = False,
) -> list[int] | tuple[list[int], SpeculativeStats]:
    """Greedy decoding of a multi-token model, drafting with its extra heads: the tokens of
    :func:`~lmlab.generation.greedy` (prompt included, stopping after ``eos_token_id`` or ``max_new_tokens``)
    in fewer forward passes.

    Args:
        model: a :class:`~lmlab.models.MultiTokenGPT` with H heads (any attention whose cache can crop:
            full attention). Call ``model.eval()`` first.
        prompt_ids: the prompt, a list of ints or a 1-D tensor.
        max_new_tokens: tokens to generate, at most.
        n_draft: drafts per step, from heads 2..n_draft+1 (default H - 1, every extra head; 0 is plain
            greedy decoding through the same loop).
        eos_token_id: stop after this token (included), as greedy does.
        return_stats: also return a :class:`SpeculativeStats`.

    Past the model's context limit greedy decoding slides its window; here too: once the cache is full,
    the remaining tokens are decoded one per pass from the last ``context_limit`` tokens, without drafts.
    """
    H = _check_model(model)
    check_max_new_tokens(max_new_tokens)
    check_eos(eos_token_id, model)
    n_draft = H - 1 if n_draft is None else check_int("n_draft", n_draft, 0, H - 1)
    if not isinstance(return_stats, bool):
        raise TypeError(f"return_stats must be True or False, got {return_stats!r}")
    prompt = as_prompt(prompt_ids, model)
    stats = SpeculativeStats(drafted_by_head=[0] * n_draft, accepted_by_head=[0] * n_draft)
    tokens = _decode(model, prompt, max_new_tokens, n_draft, eos_token_id, stats) if max_new_tokens else []
    stats.new_tokens = len(tokens)
    out = prompt.tolist() + tokens
    return (out, stats) if return_stats else out


def _ends(out: list[int], eos: int | None) -> bool:
    return eos is not None and eos in out


def _decode(
    model: Any, prompt: torch.Tensor, N: int, n_draft: int, eos: int | None, stats: SpeculativeStats
) -> list[int]:
    """The generated tokens (at most N, cut after the first EOS), counting passes and drafts in ``stats``."""
    P = prompt.numel()
    window = context_limit(model)
    out: list[int] = []
    if window is None or P <= window:
        heads = 1 + n_draft
        needed = P + N - 1  # the last token is returned, never fed
        cache = model.new_cache(1, max(P, needed if window is None else min(needed, window)), heads=heads)
        if not cache.can_crop:
            raise ValueError(
                f"speculative decoding cuts rejected drafts from the cache, which a {type(cache).__name__} "
                "cannot do; use a model with full attention, or greedy()"
            )
        states = model.head_states(prompt.unsqueeze(0), cache=cache)[:, 0, -1]  # (heads, C): the last position
        stats.forward_passes += 1
        logits = model.lm_head(states)  # (heads, V): row 0 the next token, row j the token j further on
        out.append(int(logits[0].argmax()))
        while len(out) < N and not _ends(out, eos):
            L = cache.length  # tokens in the cache; out[-1] is the next to feed, at position L
            room = cache.capacity - L
            if room < 1:
                break  # the cache is full: slide the window below
            m = min(n_draft, N - len(out) - 1, room - 1)  # m drafts + the free token must fit in N
            drafts = logits[1 : 1 + m].argmax(-1)  # (m,): guesses for positions L + 1 .. L + m
            fed = torch.cat([drafts.new_tensor([out[-1]]), drafts]).unsqueeze(0)  # (1, m + 1)
            states = model.head_states(fed, cache=cache)[:, 0]  # (heads, m + 1, C)
            stats.forward_passes += 1
            choices = model.lm_head(states[0]).argmax(-1)  # (m + 1,): greedy's token after each fed token
            a = accept_drafts(drafts, choices)
            cache.crop(L + a + 1)  # keep out[-1] and the accepted drafts; forget the rejected ones
            logits = model.lm_head(states[:, a])  # (heads, V) at the last kept position
            out.extend(drafts[:a].tolist() + [int(choices[a])])  # an EOS among them ends the loop, cut below
            stats.drafted += m
            stats.accepted += a
            stats.accepted_per_step.append(a)
            for j in range(m):
                stats.drafted_by_head[j] += 1
                stats.accepted_by_head[j] += int(j < a)
    ids = torch.cat([prompt, prompt.new_tensor(out)]) if out else prompt
    while len(out) < N and not _ends(out, eos):  # past the context limit: slide
        lo = 0 if window is None else max(0, ids.numel() - window)
        nxt = int(model(ids[lo:].unsqueeze(0)).logits[0, -1].argmax())
        stats.forward_passes += 1
        out.append(nxt)
        ids = torch.cat([ids, ids.new_tensor([nxt])])
    if eos is not None and eos in out:
        out = out[: out.index(eos) + 1]
    return out[:N]
