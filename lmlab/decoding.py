"""Generating text from a language model, one token at a time.

Each function takes ``prompt_ids`` (a list of ints or a 1-D tensor) and returns the prompt followed by the
generated tokens as a list of ints. Generation uses the model's KV cache when it has one
(``model.new_cache``): the prompt is read once (prefill), then each step feeds only the newest token.

Past ``block_size``: the context window slides. Once prompt + generated tokens no longer fit, each next
token is predicted from the last ``block_size`` tokens only, recomputed without a cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["greedy", "sample", "next_token_logits_stream"]


def _as_prompt(prompt_ids: Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() != 1:
            raise ValueError(f"prompt_ids must be 1-D, got shape {tuple(prompt_ids.shape)}")
        ids = prompt_ids.to(device=device, dtype=torch.long)
    else:
        if isinstance(prompt_ids, str):
            raise TypeError("prompt_ids must be token ids; encode the text with a tokenizer first")
        ids = torch.tensor(list(prompt_ids), dtype=torch.long, device=device)
    if ids.numel() == 0:
        raise ValueError("prompt_ids is empty: give at least one token (for example a newline or BOS token)")
    return ids


def _check_count(max_new_tokens: int) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")


def next_token_logits_stream(model: torch.nn.Module, prompt: torch.Tensor) -> Callable[[int | None], torch.Tensor]:
    """Return ``step(token)``: feed one token (None for the first call) and get the next logits (V,).

    Keeps a KV cache while the context fits in ``model.block_size``; after that the window slides and
    the last ``block_size`` tokens are recomputed each step.
    """
    block_size = model.block_size
    tokens = prompt.tolist()
    state: dict = {"cache": model.new_cache(1) if hasattr(model, "new_cache") else None}

    @torch.no_grad()
    def step(token: int | None) -> torch.Tensor:
        cache = state["cache"]
        if token is None:
            if len(tokens) <= block_size and cache is not None:
                return model(prompt.unsqueeze(0), cache=cache).logits[0, -1]
            state["cache"] = None
            return model(torch.tensor([tokens[-block_size:]], device=prompt.device)).logits[0, -1]
        tokens.append(token)
        if cache is not None and len(tokens) <= block_size:
            return model(torch.tensor([[token]], device=prompt.device), cache=cache).logits[0, -1]
        state["cache"] = None
        return model(torch.tensor([tokens[-block_size:]], device=prompt.device)).logits[0, -1]

    return step


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | None,
    choose: Callable[[torch.Tensor], int],
) -> list[int]:
    """Prompt + up to ``max_new_tokens`` tokens, each picked by ``choose(logits (V,))``; stops after EOS."""
    _check_count(max_new_tokens)
    prompt = _as_prompt(prompt_ids, _device(model))
    out = prompt.tolist()
    if max_new_tokens == 0:
        return out
    step = next_token_logits_stream(model, prompt)
    logits = step(None)
    for i in range(max_new_tokens):
        token = choose(logits)
        out.append(token)
        if token == eos_token_id or i == max_new_tokens - 1:
            break
        logits = step(token)
    return out


def greedy(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int | None = None,
) -> list[int]:
    """Append the single most probable token ``max_new_tokens`` times (or until ``eos_token_id``)."""
    # ties go to the lowest id
    return _generate(model, prompt_ids, max_new_tokens, eos_token_id, lambda logits: int(torch.argmax(logits)))


def sample(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> list[int]:
    """Draw each next token from the model's distribution, sharpened by ``temperature`` and cut to ``top_k``.

    ``temperature=0`` means greedy decoding. Pass a seeded ``torch.Generator`` (on the model's device) for
    reproducible samples.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be None or an integer >= 0 (0 means no cut), got {top_k!r}")
    if temperature == 0:
        return greedy(model, prompt_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)

    def choose(logits: torch.Tensor) -> int:
        scaled = logits.float() / temperature
        if top_k:
            kth = torch.topk(scaled, min(top_k, scaled.numel())).values[-1]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        return int(torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator))

    return _generate(model, prompt_ids, max_new_tokens, eos_token_id, choose)
