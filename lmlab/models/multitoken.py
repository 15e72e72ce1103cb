"""Multi-token prediction: one shared trunk, ``n_future`` output heads, head k predicting k tokens ahead.

Gloeckle et al. 2024, "Better & Faster Large Language Models via Multi-token Prediction" (sec. 2): the
trunk (token and position embeddings, then the first ``n_layer - 1`` Transformer blocks of :class:`GPT`)
turns tokens ``0..t`` into a hidden state ``z_t``; head k (k = 1..n_future) is one more Transformer block
followed by a LayerNorm and the shared unembedding (tied to the token embedding, like GPT's output layer),
and predicts the token at position ``t + k``. The training loss is the sum over heads of their
cross-entropies (sec. 2). Head 1 is an ordinary next-token predictor: trunk + head 1 is exactly a GPT of
``n_layer`` layers, so with ``n_future=1`` this *is* a GPT (:meth:`MultiTokenGPT.from_gpt`,
:meth:`MultiTokenGPT.to_gpt`), and the extra heads can draft tokens for self-speculative decoding
(:mod:`lmlab.generation.speculative`).

Memory (the paper's sec. 2, "Memory-efficient implementation"): each head's (B, T, V) logits are, for a large
vocabulary, the largest activations of the model, so they must not all be alive at once. Here every
extra head's logits and loss are computed inside ``torch.utils.checkpoint`` (non-reentrant): its forward
keeps only the scalar loss, and its backward recomputes that one head's logits, one head after another.
Only head 1's logits, which the model returns, are kept for backward. ``checkpoint_heads=False`` gives the
naive version that keeps every head's logits (for comparison: same numbers, same gradients).

Shapes: ``B`` batch, ``T`` time, ``C`` channels, ``V`` vocabulary, ``H`` heads (``n_future``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from lmlab.checks import check_token_batch, is_int
from lmlab.lm import REDUCTIONS, LMOutput, lm_loss
from lmlab.models.cache import KVCache, SlidingWindowCache, StateCache
from lmlab.models.gpt import GPT, Block, GPTConfig

__all__ = ["MultiTokenGPT", "OutputHead"]


class OutputHead(nn.Module):
    """One output head: a Transformer :class:`Block`, then a LayerNorm. Its output (B, T, C) goes to the shared
    unembedding of :class:`MultiTokenGPT`."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.block = Block(config)
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)

    def forward(self, x: torch.Tensor, cache: Any = None, layer: int = 0) -> torch.Tensor:
        """Trunk states x (B, T, C) -> normalised head states (B, T, C); ``layer`` is its index in ``cache``."""
        return self.ln_f(self.block(x, cache, layer))


class MultiTokenGPT(nn.Module):
    """A GPT whose last block is replaced by ``n_future`` parallel heads (Gloeckle et al. 2024).

    ``model(idx)`` follows lmlab's language-model interface with head 1: next-token logits (B, T, V), so
    training, likelihood scoring and every decoder of :mod:`lmlab.generation` work on it unchanged. With
    ``targets`` the loss is the *sum* over heads of each head's cross-entropy, head k scored against the
    target k - 1 positions further on (:func:`lmlab.lm.lm_loss` with ``shift=k-1``); :meth:`head_losses`
    gives each head's loss apart. (:class:`lmlab.train.Trainer`'s val loss is therefore this sum too; use
    ``head_losses(...)[0]`` or :mod:`lmlab.likelihood` for the next-token loss alone.)

    Args:
        config: the shape of the GPT it extends: ``n_layer - 1`` trunk blocks, one block per head.
        n_future: number of heads H >= 1 (tokens predicted at once); 1 is an ordinary GPT.
        checkpoint_heads: compute each extra head's logits and loss under activation checkpointing, so that
            no two heads' (B, T, V) logits are kept for backward (default); False keeps them all (naive).
    """

    def __init__(self, config: GPTConfig, n_future: int = 2, *, checkpoint_heads: bool = True) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"MultiTokenGPT needs a GPTConfig, got {type(config).__name__}")
        if not is_int(n_future):
            raise TypeError(f"n_future must be an int >= 1 (the number of tokens predicted), got {n_future!r}")
        if n_future < 1:
            raise ValueError(f"n_future must be an int >= 1 (1: an ordinary GPT, 2-4 as in the paper), got {n_future}")
        if not isinstance(checkpoint_heads, bool):
            raise TypeError(f"checkpoint_heads must be True or False, got {checkpoint_heads!r}")
        self.config = config
        self.n_future = int(n_future)
        self.checkpoint_heads = checkpoint_heads
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
                wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embedding
                drop=nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity(),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer - 1)),  # the shared trunk
            )
        )
        self.heads = nn.ModuleList(OutputHead(config) for _ in range(self.n_future))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # the unembedding all heads share
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        # GPT-2's initialisation, as GPT's: each path from input to a head's output has n_layer blocks
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_gpt(cls, gpt: GPT, n_future: int = 2, *, checkpoint_heads: bool = True) -> MultiTokenGPT:
        """A multi-token model on a (trained) GPT's weights: its first ``n_layer - 1`` blocks become the trunk,
        its last block and final LayerNorm become head 1, so head 1's logits are the GPT's. Every extra head
        starts as a copy of head 1, to be fine-tuned. On the GPT's device and dtype; the GPT is not changed."""
        if not isinstance(gpt, GPT):
            raise TypeError(f"from_gpt needs an lmlab GPT, got {type(gpt).__name__}")
        model = cls(gpt.config, n_future, checkpoint_heads=checkpoint_heads)
        w = gpt.transformer.wte.weight
        model.to(device=w.device, dtype=w.dtype)
        n = gpt.config.n_layer
        with torch.no_grad():
            model.transformer.wte.load_state_dict(gpt.transformer.wte.state_dict())
            model.transformer.wpe.load_state_dict(gpt.transformer.wpe.state_dict())
            for i in range(n - 1):
                model.transformer.h[i].load_state_dict(gpt.transformer.h[i].state_dict())
            for head in model.heads:
                head.block.load_state_dict(gpt.transformer.h[n - 1].state_dict())
                head.ln_f.load_state_dict(gpt.transformer.ln_f.state_dict())
            if not gpt.config.tie_weights:
                model.lm_head.load_state_dict(gpt.lm_head.state_dict())
        return model

    def to_gpt(self) -> GPT:
        """The next-token model inside: a :class:`GPT` of ``n_layer`` layers with the trunk and head 1 (copies of
        the weights), whose logits equal this model's. The extra heads are left out."""
        gpt = GPT(self.config)
        w = self.transformer.wte.weight
        gpt.to(device=w.device, dtype=w.dtype)
        n = self.config.n_layer
        with torch.no_grad():
            gpt.transformer.wte.load_state_dict(self.transformer.wte.state_dict())
            gpt.transformer.wpe.load_state_dict(self.transformer.wpe.state_dict())
            for i in range(n - 1):
                gpt.transformer.h[i].load_state_dict(self.transformer.h[i].state_dict())
            gpt.transformer.h[n - 1].load_state_dict(self.heads[0].block.state_dict())
            gpt.transformer.ln_f.load_state_dict(self.heads[0].ln_f.state_dict())
            if not self.config.tie_weights:
                gpt.lm_head.load_state_dict(self.lm_head.state_dict())
        return gpt

    # ------------------------------------------------------------------ description
    @property
    def block_size(self) -> int:
        """Number of learned positions (``config.block_size``)."""
        return self.config.block_size

    @property
    def context_limit(self) -> int:
        """The longest context the model reads in one pass (its learned positions), as :attr:`GPT.context_limit`."""
        return self.config.block_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    # ------------------------------------------------------------------ forward
    def _check_idx(self, idx: torch.Tensor, cache: Any) -> torch.Tensor:
        idx = check_token_batch(idx)  # int16/uint8 ids become int64 for nn.Embedding
        B, T = idx.shape
        past = 0 if cache is None else cache.length
        if past + T > self.config.block_size:
            what = f"{past} cached + {T} new tokens" if past else f"context of {T} tokens"
            raise ValueError(
                f"{what} is longer than the model's block_size {self.config.block_size}; "
                f"crop the input to its last {self.config.block_size - past} tokens or use a larger block_size"
            )
        if cache is not None:
            if cache.batch_size != B:
                raise ValueError(f"cache holds {cache.batch_size} sequences but idx has batch size {B}")
            capacity = cache.capacity
            if capacity is not None and past + T > capacity:
                raise ValueError(f"cache holds at most {capacity} positions; {past} + {T} do not fit")
        return idx

    def cached_heads(self, cache: Any) -> int:
        """How many heads ``cache`` (from :meth:`new_cache`) keeps keys and values for: 1 to n_future."""
        n_layers = len(getattr(cache, "k", None) or getattr(cache, "states", None) or ())
        heads = n_layers - (self.config.n_layer - 1)
        if not 1 <= heads <= self.n_future:
            raise ValueError(
                f"the cache has {n_layers} layers; this model's caches have n_layer - 1 + heads = "
                f"{self.config.n_layer - 1} + (1 to {self.n_future}) layers: make it with model.new_cache()"
            )
        return heads

    def trunk(self, idx: torch.Tensor, cache: Any = None) -> torch.Tensor:
        """The shared trunk: ids (B, T) -> hidden states (B, T, C), continuing ``cache`` if given (its length is
        advanced by the caller, :meth:`head_states` or :meth:`forward`)."""
        past = 0 if cache is None else cache.length
        pos = torch.arange(past, past + idx.shape[1], device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        return x

    def head_states(self, idx: torch.Tensor, *, cache: Any = None, heads: int | None = None) -> torch.Tensor:
        """The normalised outputs of heads 1..``heads`` (default: every head, or every head ``cache`` holds):
        (heads, B, T, C), ready for the unembedding ``model.lm_head``. ``head_states(idx)[k - 1][:, t]`` gives
        the logits of the token at position ``t + k``. With ``cache`` (from ``new_cache(..., heads=...)``),
        ``idx`` continues the cached tokens and the cache advances by T."""
        idx = self._check_idx(idx, cache)
        n = self.n_future if heads is None else heads
        if cache is not None:
            n = self.cached_heads(cache) if heads is None else n
            if n != self.cached_heads(cache):
                raise ValueError(f"the cache holds {self.cached_heads(cache)} heads' keys and values, not {n}")
        if not is_int(n) or not 1 <= n <= self.n_future:
            raise ValueError(f"heads must be an int in [1, {self.n_future}], got {heads!r}")
        x = self.trunk(idx, cache)
        L = self.config.n_layer - 1
        out = torch.stack([self.heads[k](x, cache, L + k) for k in range(n)])  # (heads, B, T, C)
        if cache is not None:
            cache.advance(idx.shape[1])
        return out

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        loss_mask: torch.Tensor | None = None,
        reduction: str = "mean",
        cache: KVCache | SlidingWindowCache | StateCache | None = None,
    ) -> LMOutput:
        """Head 1's next-token logits for every position, and the multi-token loss when ``targets`` are given.

        Args:
            idx: (B, T) token ids.
            targets: (B, T) next-token ids (-100: not scored), as for :class:`GPT`; head k is scored against
                ``targets[:, t + k - 1]`` at position t (the last k - 1 positions have no target for it).
            loss_mask: (B, T) bool or 0/1, aligned with ``targets``: 1 where a target counts.
            reduction: "mean", "sum" or "none" ((B, T): position t holds the sum of the heads' losses
                scored there), applied to each head and summed over heads.
            cache: a decoding state from :meth:`new_cache`; ``idx`` then continues the cached tokens. A cache
                made with ``heads > 1`` gets the extra heads' keys and values too.

        Returns:
            ``LMOutput(logits (B, T, V) of head 1, loss)``: loss is the sum over the H heads (Gloeckle et
            al. 2024, sec. 2), a scalar for "mean"/"sum".
        """
        if cache is not None:
            if targets is not None:
                raise ValueError("give targets or a cache, not both: the cache is for decoding")
            states = self.head_states(idx, cache=cache)  # (heads, B, T, C): every head the cache holds
            return LMOutput(self.lm_head(states[0]), None)
        idx = self._check_idx(idx, None)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        x = self.trunk(idx)  # (B, T, C)
        logits = self.lm_head(self.heads[0](x))  # (B, T, V)
        if targets is None:
            return LMOutput(logits, None)
        loss = lm_loss(logits, targets, loss_mask=loss_mask, reduction=reduction)
        for k in range(1, self.n_future):
            loss = loss + self._head_loss(k, x, targets, loss_mask, reduction)
        return LMOutput(logits, loss)

    def _head_loss(
        self, k: int, x: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor | None, reduction: str
    ) -> torch.Tensor:
        """Head k + 1's loss (k = 0..H-1) on trunk states x (B, T, C): under checkpointing for k >= 1 when
        gradients are on, so its (B, T, V) logits are freed on return and recomputed in backward."""
        T = x.shape[1]
        if k >= T:  # no position has a target k tokens further on
            return x.new_zeros(targets.shape if reduction == "none" else ())
        if targets.shape != x.shape[:2]:
            raise ValueError(f"targets shape {tuple(targets.shape)} must equal idx's (B, T) {tuple(x.shape[:2])}")

        def head_loss(x: torch.Tensor) -> torch.Tensor:
            logits = self.lm_head(self.heads[k](x))  # (B, T, V): this head's only, freed after the loss
            return lm_loss(logits, targets, loss_mask=loss_mask, reduction=reduction, shift=k)

        if k > 0 and self.checkpoint_heads and torch.is_grad_enabled():
            return checkpoint(head_loss, x, use_reentrant=False)
        return head_loss(x)

    def head_losses(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor,
        *,
        loss_mask: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """Each head's loss, (H,) for "mean"/"sum" or (H, B, T) for "none": entry k - 1 is head k's
        cross-entropy against the target k - 1 positions further on (entry 0 is the next-token loss).
        ``forward``'s loss is their sum. Heads are computed one at a time, as in :meth:`forward`."""
        idx = self._check_idx(idx, None)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        x = self.trunk(idx)
        return torch.stack([self._head_loss(k, x, targets, loss_mask, reduction) for k in range(self.n_future)])

    # ------------------------------------------------------------------ decoding
    def new_cache(
        self, batch_size: int = 1, max_len: int | None = None, *, heads: int = 1
    ) -> KVCache | SlidingWindowCache | StateCache:
        """An empty decoding cache for up to ``max_len`` tokens (default and at most block_size) that keeps the
        trunk's layers and those of heads 1..``heads``: ``n_layer - 1 + heads`` layers. The default, head 1
        only, is what next-token decoding needs (then the cache is a GPT's); self-speculative decoding needs
        every head (``heads=n_future``). Its kind follows ``config.attention`` as in :meth:`GPT.new_cache`."""
        if not is_int(heads) or not 1 <= heads <= self.n_future:
            raise ValueError(f"heads must be an int in [1, {self.n_future}], got {heads!r}")
        max_len = self.config.block_size if max_len is None else max_len
        if max_len > self.config.block_size:
            raise ValueError(f"max_len {max_len} exceeds the model's block_size {self.config.block_size}")
        c, w = self.config, self.transformer.wte.weight
        n_layers = c.n_layer - 1 + heads
        if c.attention == "sliding_window":
            return SlidingWindowCache(n_layers, c.window, batch_size, max_len)
        if c.attention == "linear":
            return StateCache(n_layers, batch_size, max_len)
        return KVCache(n_layers, c.n_head, c.head_size, batch_size, max_len, device=w.device, dtype=w.dtype)

    # ------------------------------------------------------------------ counting
    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (shared tensors counted once); ``non_embedding`` leaves out the token and
        position tables, as :meth:`GPT.num_params`."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, T: int | None = None) -> int:
        """Training FLOPs per token (forward + backward) at context length ``T`` (default block_size).

        PaLM's 6N + 12·L·d·T (Chowdhery et al. 2022, Appendix B), as :meth:`GPT.flops_per_token`, where N
        counts the matmul weights each token goes through: the trunk, every head's block and LayerNorm, and
        the unembedding once per head (H matmuls with one shared matrix), and L = n_layer - 1 + H attention
        layers. Checkpointing's recomputation of the extra heads' logits is not counted. With H = 1 it is
        exactly GPT's count.
        """
        T = self.config.block_size if T is None else T
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        c = self.config
        N = self.num_params(non_embedding=True)
        unembed = self.lm_head.weight.numel()
        N += self.n_future * unembed - (0 if c.tie_weights else unembed)
        L = c.n_layer - 1 + self.n_future
        keys = {"full": T, "sliding_window": min(c.window or T, T), "linear": c.head_size}
        return 6 * N + 12 * L * c.n_embd * keys[c.attention]

    def extra_repr(self) -> str:
        return f"n_future={self.n_future}, checkpoint_heads={self.checkpoint_heads}"
