"""A small GPT: a pre-norm, decoder-only Transformer language model.

Shapes use one vocabulary throughout: ``B`` batch, ``T`` time (tokens), ``C`` channels (``n_embd``),
``nh`` heads, ``hs`` head size (``C // nh``), ``V`` vocabulary size, ``S`` keys seen so far (cache + new).

The model returns logits for *every* position: likelihood scoring needs them all, so there is no
"last position only" shortcut. Attention can be computed two ways that agree to 1e-5:

The attention *kind* (``GPTConfig.attention``) says what each position may attend to and how:

- ``"full"``: softmax attention over itself and every position before it;
- ``"sliding_window"``: the same over itself and the ``window - 1`` positions before it (Beltagy et al.
  2020), with a bounded cache for decoding; through SDPA a sequence longer than ``2 * window`` is computed
  in blocks of ``window`` queries that each meet ``2 * window`` keys, at a cost linear in T;
- ``"linear"``: causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs", eq. 4-6 and
  sec. 3.4): the softmax is replaced by a positive feature map ``phi(x) = elu(x) + 1``, so that
  ``y_t = phi(q_t)ᵀ S_t / phi(q_t)ᵀ z_t`` with running sums ``S_t = sum_{s<=t} phi(k_s) v_sᵀ`` (hs, hs) and
  ``z_t = sum_{s<=t} phi(k_s)`` (hs,): a state of fixed size, updated once per token when decoding.

The kind is separate from its *implementation* (``GPTConfig.attention_impl``), of which there are three
that agree to 1e-5:

- ``"naive"``: the explicit ``T x T`` score matrix, softmax (or, for linear attention, the normalised
  ``phi(Q) phi(K)ᵀ``) and weighted sum, for teaching;
- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``, PyTorch's fused kernels, for speed;
  for linear attention the chunked form, whose cost grows linearly in T;
- ``"auto"`` (the default): for softmax attention the explicit path on the CPU for up to 256 keys, where
  it is faster than SDPA's CPU kernel, and SDPA everywhere else (GPUs, long contexts, one new token of
  cached decoding); for linear attention the chunked form.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.checks import check_token_batch
from lmlab.lm import HiddenLMOutput, LMOutput, eval_mode, lm_loss
from lmlab.models.cache import KVCache, SlidingWindowCache, StateCache

__all__ = [
    "GPTConfig",
    "GPT",
    "PRESETS",
    "ATTENTION_KINDS",
    "ATTENTION_IMPLS",
    "linear_feature_map",
    "linear_attention_step",
    "linear_attention_quadratic",
    "linear_attention_chunked",
]

ACTIVATIONS = ("gelu", "gelu_tanh")
ATTENTION_KINDS = ("full", "sliding_window", "linear")  # what each position may attend to, and how
ATTENTION_IMPLS = ("auto", "sdpa", "naive")  # how full attention is computed
# "auto" uses the explicit path on the CPU up to this many keys: there it measured faster than SDPA's CPU
# kernel (forward + backward, 2 threads: 1.33x at T=64, 1.24x at 128, 1.06x at 256, 0.42x at 1024).
AUTO_EXPLICIT_MAX_KEYS = 256


def _dropout(p: float) -> nn.Module:
    """Dropout, or a no-op module when p == 0 (nn.Dropout(0) still copies its input in training mode)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


@dataclass
class GPTConfig:
    """Shape and options of a :class:`GPT`. Build one directly or from a preset: ``GPTConfig.preset("tiny")``."""

    vocab_size: int = 256  # number of token ids; 256 fits the byte tokenizer
    block_size: int = 64  # longest context the model can read (number of learned positions)
    n_layer: int = 4  # Transformer blocks
    n_head: int = 4  # attention heads per block; must divide n_embd
    n_embd: int = 128  # width of the residual stream (C)
    n_inner: int | None = None  # hidden width of the MLP; None means 4 * n_embd as in GPT-2
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches (0 = off)
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    activation: str = "gelu"  # "gelu" (exact, erf) or "gelu_tanh" (GPT-2's tanh approximation)
    attention: str = "full"  # the attention kind: "full" (causal self-attention over the whole context) or
    # "sliding_window" (each position sees itself and the window - 1 positions before it; Beltagy et al. 2020)
    # or "linear" (causal linear attention with the feature map elu(x) + 1; Katharopoulos et al. 2020)
    window: int | None = None  # sliding_window only: positions each query sees, >= 1
    attention_impl: str = "auto"  # "sdpa" (PyTorch's fused kernel), "naive" (explicit T x T matrix) or "auto"
    tie_weights: bool = True  # share the token embedding with the output layer (GPT-2 does)
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon, GPT-2's value

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): each head gets "
                f"n_embd // n_head channels; try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner < 1):
            raise ValueError(f"GPTConfig.n_inner must be a positive integer or None, got {self.n_inner!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"GPTConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"GPTConfig.attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.attention == "sliding_window":
            if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
                raise ValueError(
                    f"GPTConfig.window must be an integer >= 1 for attention='sliding_window' (the positions each "
                    f"query sees, itself included), got {self.window!r}"
                )
        elif self.window is not None:
            raise ValueError(f"GPTConfig.window is only for attention='sliding_window', not {self.attention!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"GPTConfig.attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")

    @property
    def head_size(self) -> int:
        """Channels per attention head (hs = n_embd // n_head)."""
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        """Hidden width of the MLP (n_inner, or 4 * n_embd)."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named configuration, optionally changed: ``GPTConfig.preset("tiny", vocab_size=96)``.

        Presets (parameters counted with the default byte vocabulary of 256):
        ``micro`` ~0.1M, ``tiny`` ~0.8M, ``small`` ~11M, ``gpt2`` the 124M GPT-2 shape.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown GPTConfig field(s) {unknown}; fields are: {', '.join(sorted(known))}")
        return replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary of every field (for checkpoints and JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {unknown}")
        return cls(**d)


# Sized for a 2-core CPU, apart from gpt2 which is the shape of the smallest GPT-2 (Radford et al. 2019).
PRESETS: dict[str, GPTConfig] = {
    "micro": GPTConfig(vocab_size=256, block_size=32, n_layer=2, n_head=2, n_embd=64),
    "tiny": GPTConfig(vocab_size=256, block_size=64, n_layer=4, n_head=4, n_embd=128),
    "small": GPTConfig(vocab_size=256, block_size=256, n_layer=6, n_head=6, n_embd=384),
    "gpt2": GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, activation="gelu_tanh"),
}


LINEAR_CHUNK = 64  # tokens per chunk of the chunked linear attention: cost ~ T * (chunk + hs) * hs per head
LINEAR_EPS = 1e-6  # added to linear attention's normaliser phi(q)ᵀ z, which is > 0 (phi > 0)


def linear_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1, elementwise and > 0: the feature map of Katharopoulos et al. 2020, eq. 7."""
    return F.elu(x) + 1.0


LinearState = tuple[torch.Tensor, torch.Tensor]  # S (B, nh, hs, hs) and z (B, nh, hs): the running sums


def _empty_linear_state(phi_k: torch.Tensor, v: torch.Tensor) -> LinearState:
    B, nh, _, hs = phi_k.shape
    return phi_k.new_zeros(B, nh, hs, v.shape[-1]), phi_k.new_zeros(B, nh, hs)


def linear_attention_step(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, state: LinearState
) -> tuple[torch.Tensor, LinearState]:
    """One token of causal linear attention in its recurrent form (Katharopoulos et al. 2020, sec. 3.4).

    ``phi_q``, ``phi_k`` (B, nh, hs) are the feature-mapped query and key of the new token, ``v`` (B, nh, hs)
    its value, ``state`` the running sums ``(S (B, nh, hs, hs), z (B, nh, hs))`` of the tokens before it.
    ``S += phi_k vᵀ``, ``z += phi_k``, then ``y = phi_qᵀ S / (phi_qᵀ z + eps)``. Returns ``y`` (B, nh, hs) and
    the new state (new tensors; the old ones are not changed).
    """
    S, z = state
    S = S + phi_k.unsqueeze(-1) * v.unsqueeze(-2)  # (B, nh, hs, hs): the outer product phi(k) vᵀ
    z = z + phi_k
    num = (phi_q.unsqueeze(-1) * S).sum(-2)  # (B, nh, hs): phi(q)ᵀ S
    den = (phi_q * z).sum(-1, keepdim=True) + LINEAR_EPS  # (B, nh, 1)
    return num / den, (S, z)


def linear_attention_quadratic(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, state: LinearState | None = None
) -> tuple[torch.Tensor, LinearState]:
    """Causal linear attention written with the explicit (B, nh, T, T) matrix ``A = phi(Q) phi(K)ᵀ``, masked
    causally: ``y_t = (sum_{s<=t} A_ts v_s + phi(q_t)ᵀ S0) / (sum_{s<=t} A_ts + phi(q_t)ᵀ z0 + eps)``, for
    teaching (quadratic cost, like softmax attention, but no softmax). Inputs (B, nh, T, hs); ``state`` the
    running sums of earlier tokens (None: none). Returns y (B, nh, T, hs) and the state after the T tokens.
    """
    T = phi_q.shape[2]
    S0, z0 = _empty_linear_state(phi_k, v) if state is None else state
    a = (phi_q @ phi_k.transpose(-2, -1)) * _causal_mask(T, T, phi_q.device).to(phi_q.dtype)  # (B, nh, T, T)
    num = a @ v + phi_q @ S0  # (B, nh, T, hs)
    den = a.sum(-1, keepdim=True) + phi_q @ z0.unsqueeze(-1) + LINEAR_EPS  # (B, nh, T, 1)
    return num / den, (S0 + phi_k.transpose(-2, -1) @ v, z0 + phi_k.sum(2))


def linear_attention_chunked(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    state: LinearState | None = None,
    chunk: int = LINEAR_CHUNK,
) -> tuple[torch.Tensor, LinearState]:
    """Causal linear attention in chunks: the same numbers as :func:`linear_attention_quadratic` at a cost
    linear in T.

    Within a chunk of ``chunk`` tokens the explicit causal matrix is used (chunk x chunk); each chunk also
    reads the running sums of every chunk before it, formed once per chunk by a cumulative sum of
    (hs, hs) matrices: memory ~ T * chunk + (T / chunk) * hs^2 per head, instead of the T * hs^2 of a
    per-token cumulative sum or the T^2 of the quadratic form. Inputs (B, nh, T, hs); returns y
    (B, nh, T, hs) and the state after the T tokens.
    """
    B, nh, T, hs = phi_q.shape
    hv = v.shape[-1]
    S0, z0 = _empty_linear_state(phi_k, v) if state is None else state
    n = -(-T // chunk)  # number of chunks
    pad = n * chunk - T  # zero keys and values add nothing to the sums; padded queries are cut off below
    if pad:
        phi_q, phi_k, v = (F.pad(t, (0, 0, 0, pad)) for t in (phi_q, phi_k, v))
    qc = phi_q.view(B, nh, n, chunk, hs)
    kc = phi_k.view(B, nh, n, chunk, hs)
    vc = v.view(B, nh, n, chunk, hv)
    a = (qc @ kc.transpose(-2, -1)) * _causal_mask(chunk, chunk, v.device).to(v.dtype)  # (B, nh, n, c, c)
    kv = kc.transpose(-2, -1) @ vc  # (B, nh, n, hs, hv): each chunk's sum of phi(k) vᵀ
    kz = kc.sum(-2)  # (B, nh, n, hs)
    S_incl = kv.cumsum(2) + S0.unsqueeze(2)  # running sums up to the end of each chunk
    z_incl = kz.cumsum(2) + z0.unsqueeze(2)
    S_prev = torch.cat([S0.unsqueeze(2), S_incl[:, :, :-1]], dim=2)  # ... up to the start of each chunk
    z_prev = torch.cat([z0.unsqueeze(2), z_incl[:, :, :-1]], dim=2)
    num = a @ vc + qc @ S_prev  # (B, nh, n, c, hv)
    den = a.sum(-1, keepdim=True) + qc @ z_prev.unsqueeze(-1) + LINEAR_EPS  # (B, nh, n, c, 1)
    y = (num / den).reshape(B, nh, n * chunk, hv)[:, :, :T]
    return y, (S_incl[:, :, -1], z_incl[:, :, -1])


def _causal_mask(T: int, S: int, device: torch.device, window: int | None = None) -> torch.Tensor:
    """(T, S) boolean mask, True where query i (at position S - T + i of the S keys) may see key j.

    With ``window``, only the ``window`` keys ending at the query's own position (a band).
    """
    q_pos = torch.arange(S - T, S, device=device).unsqueeze(1)  # (T, 1)
    k_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    visible = k_pos <= q_pos
    return visible if window is None else visible & (k_pos > q_pos - window)


def _sliding_window_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, p: float) -> torch.Tensor:
    """Sliding-window attention in blocks of ``window`` queries, at a cost linear in T (no T x T matrix).

    q, k, v (B, nh, T, hs), the same T (no cache). The queries of block i can only see keys of blocks i - 1
    and i, so each block meets 2 * window keys, masked to the band: memory and work ~ T * window instead of
    T^2. Returns (B, nh, T, hs), equal to the banded full computation.
    """
    B, nh, T, hs = q.shape
    b = window
    n = -(-T // b)  # blocks
    pad = n * b - T  # padded keys come after every real query, so the causal band never shows them
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qb = q.view(B, nh, n, b, hs)
    kb, vb = k.view(B, nh, n, b, hs), v.view(B, nh, n, b, hs)
    k2 = torch.cat([F.pad(kb, (0, 0, 0, 0, 1, 0))[:, :, :-1], kb], dim=3)  # (B, nh, n, 2b, hs): previous + own
    v2 = torch.cat([F.pad(vb, (0, 0, 0, 0, 1, 0))[:, :, :-1], vb], dim=3)
    i = torch.arange(b, device=q.device).view(b, 1) + b  # query offsets within the 2b keys
    j = torch.arange(2 * b, device=q.device).view(1, 2 * b)
    band = (j <= i) & (j > i - window)  # (b, 2b)
    mask = band.expand(n, b, 2 * b).clone()
    mask[0, :, :b] = False  # block 0 has no previous block (those keys are padding)
    y = F.scaled_dot_product_attention(qb, k2, v2, attn_mask=mask, dropout_p=p)  # (B, nh, n, b, hs)
    return y.reshape(B, nh, n * b, hs)[:, :, :T]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the positions before it."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.implementation = config.attention_impl
        self.kind = config.attention
        self.window = config.window  # None: full attention; else the band of the sliding window
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = _dropout(config.dropout)
        self.resid_dropout = _dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: Any = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        # one copy puts q, k and v head-major: (3, B, nh, T, hs), each contiguous
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4).contiguous()
        q, k, v = qkv.unbind(0)  # each (B, nh, T, hs)
        if self.kind == "linear":
            y = self._linear(q, k, v, cache, layer)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, S, hs)
        S = k.shape[2]
        impl = self.implementation
        if impl == "auto":
            # one new query (cached decoding) needs no mask, and SDPA does it in a single fused call
            impl = "naive" if q.device.type == "cpu" and T > 1 and S <= AUTO_EXPLICIT_MAX_KEYS else "sdpa"
        if impl == "naive":
            y = self._naive(q, k, v)
        else:
            y = self._sdpa(q, k, v, T, S)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights of input x (B, T, C) (the block's normalised input): (B, nh, T, T).

        ``weights[b, h, t, s]`` is how much position t's query draws on position s's value in head h:
        softmax over s of q_t · k_s / sqrt(hs), 0 outside the visible positions (explicit formula, whatever
        ``attention_impl``). For linear attention, phi(q_t) · phi(k_s) normalised over s <= t (ignoring the
        tiny eps of the normaliser).
        """
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k, _ = qkv.unbind(0)  # each (B, nh, T, hs)
        if self.kind == "linear":
            a = linear_feature_map(q) @ linear_feature_map(k).transpose(-2, -1)  # (B, nh, T, T), > 0
            a = a * _causal_mask(T, T, x.device).to(a.dtype)
            return a / a.sum(-1, keepdim=True)
        return F.softmax(self._scores(q, k), dim=-1)

    def _linear(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: Any, layer: int) -> torch.Tensor:
        """Causal linear attention (B, nh, T, hs), continuing the running sums held by ``cache`` if any."""
        phi_q, phi_k = linear_feature_map(q), linear_feature_map(k)
        state = None if cache is None else cache.get(layer)
        T = q.shape[2]
        if state is not None and T == 1:  # one new token: the recurrent form
            y, state = linear_attention_step(phi_q[:, :, 0], phi_k[:, :, 0], v[:, :, 0], state)
            y = y.unsqueeze(2)
        elif self.implementation == "naive":
            y, state = linear_attention_quadratic(phi_q, phi_k, v, state)
        else:
            y, state = linear_attention_chunked(phi_q, phi_k, v, state)
        if cache is not None:
            cache.set(layer, state)
        return y

    def _scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Masked, scaled scores Q Kᵀ / sqrt(hs) + M (B, nh, T, S); M is 0 where a query may look, else -inf."""
        T, S, hs = q.shape[2], k.shape[2], q.shape[3]
        bias = torch.zeros(T, S, device=q.device, dtype=q.dtype)
        bias = bias.masked_fill(~_causal_mask(T, S, q.device, self.window), float("-inf"))  # (T, S)
        B, nh = q.shape[:2]
        return torch.baddbmm(
            bias.expand(B * nh, T, S),
            q.reshape(B * nh, T, hs),
            k.reshape(B * nh, S, hs).transpose(1, 2),
            alpha=1.0 / math.sqrt(hs),
        ).view(B, nh, T, S)

    def _naive(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product attention written out: softmax(Q Kᵀ / sqrt(hs) + M) V (Vaswani et al. 2017, eq. 1).

        M is the causal mask as an additive bias: 0 where a query may look, -inf where it may not, so
        those keys get probability exactly 0 after the softmax.
        """
        # scores = q @ k.transpose(-2, -1) / sqrt(hs) + bias, as one fused call on B*nh matrices
        weights = F.softmax(self._scores(q, k), dim=-1)  # each row sums to 1 over the visible keys
        weights = self.attn_dropout(weights)
        return weights @ v  # (B, nh, T, hs)

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, T: int, S: int) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        if self.window is not None:  # the band; one new query that sees every cached key needs none
            if T == 1 and S <= self.window:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            if T == S and T > 2 * self.window:  # a whole sequence: in blocks, linear in T
                return _sliding_window_blocks(q, k, v, self.window, p)
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=_causal_mask(T, S, q.device, self.window), dropout_p=p
            )
        if T == S:  # no cache, or an empty one: the usual lower-triangular mask
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        if T == 1:  # one new token sees every cached key
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        # is_causal aligns the mask top-left, which is wrong when S > T: pass the mask explicitly
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_causal_mask(T, S, q.device), dropout_p=p)


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear, GELU, Linear."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_width, bias=config.bias)
        self.act = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd, bias=config.bias)
        self.dropout = _dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x)) (GPT-2's ordering)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: Any = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """Decoder-only Transformer language model (GPT-2 architecture, Radford et al. 2019).

    ``model(idx)`` maps token ids ``(B, T)`` to next-token logits ``(B, T, V)``: ``logits[:, t]`` scores the
    token at position ``t + 1`` given tokens ``0..t``.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
                wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embedding
                drop=_dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # one matrix, two uses (Press & Wolf 2017)
        self._compiled_step: Any = None  # set by compile_decoding()
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer): two residual additions per block
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def block_size(self) -> int:
        """Number of learned positions (``config.block_size``)."""
        return self.config.block_size

    @property
    def context_limit(self) -> int:
        """The longest context the model reads in one pass: its number of learned positions.

        Likelihood scoring reads longer texts in windows of this length, and generation slides its window
        past it (:func:`lmlab.lm.context_limit`).
        """
        return self.config.block_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        loss_mask: torch.Tensor | None = None,
        reduction: str = "mean",
        cache: KVCache | SlidingWindowCache | StateCache | None = None,
        return_hidden: bool = False,
    ) -> LMOutput | HiddenLMOutput:
        """Logits for every position, and the cross-entropy loss when ``targets`` are given.

        Args:
            idx: (B, T) token ids, ``0 <= id < vocab_size`` (not range-checked here: the check would wait for
                the GPU at every call; data, likelihood, generation and the CLI check ids where they enter).
            targets: (B, T) next-token ids; entries equal to -100 are not scored.
            loss_mask: (B, T) bool or 0/1 tensor, 1 where a position counts in the loss.
            reduction: "mean" (over scored tokens), "sum" (nats), or "none" ((B, T), 0 where unscored).
            cache: the decoding state from :meth:`new_cache`; ``idx`` then continues the cached tokens.
            return_hidden: also return the final hidden states (B, T, C), after the last LayerNorm, for
                extra output heads on the same trunk.

        Returns:
            ``LMOutput(logits (B, T, V), loss)``; with ``return_hidden``,
            ``HiddenLMOutput(logits, loss, hidden (B, T, C))``.
        """
        idx = check_token_batch(idx)  # int16/uint8 ids become int64 for nn.Embedding
        B, T = idx.shape
        past = 0 if cache is None else cache.length
        if past + T > self.config.block_size:
            what = f"{past} cached + {T} new tokens" if past else f"context of {T} tokens"
            raise ValueError(
                f"{what} is longer than the model's block_size {self.config.block_size}; "
                f"crop the input to its last {self.config.block_size - past} tokens or use a larger block_size"
            )
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"cache holds {cache.batch_size} sequences but idx has batch size {B}")
        if cache is not None and past + T > cache.max_len:
            raise ValueError(f"cache holds at most {cache.max_len} positions; {past} + {T} do not fit")
        step_fn = getattr(cache, "step_fn", None)
        if step_fn is not None and T == 1 and targets is None and not return_hidden:
            # one new token per row over the whole preallocated cache: static shapes, compiled once
            logits = step_fn(idx, torch.tensor(past, device=idx.device), cache.k, cache.v)  # (B, V)
            cache.advance(1)
            return LMOutput(logits.unsqueeze(1), None)
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(T)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = lm_loss(logits, targets, loss_mask=loss_mask, reduction=reduction)
        return HiddenLMOutput(logits, loss, x) if return_hidden else LMOutput(logits, loss)

    @torch.no_grad()
    def attention_weights(self, idx: torch.Tensor) -> torch.Tensor:
        """Every head's attention weights on ids (B, T): (n_layer, B, n_head, T, T), rows summing to 1.

        ``out[l, b, h, t, s]`` is the weight that position t puts on position s in head h of layer l
        (0 for s > t: the causal mask), computed with the explicit formula of
        :meth:`CausalSelfAttention.weights` while the blocks run as in :meth:`forward` (eval mode: no
        dropout). T at most block_size.
        """
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.is_floating_point():
            raise ValueError("attention_weights needs a (B, T) tensor of integer token ids")
        B, T = idx.shape
        if not 1 <= T <= self.config.block_size:
            raise ValueError(f"attention_weights reads 1 to block_size={self.config.block_size} tokens, got {T}")
        with eval_mode(self, no_grad=True):
            pos = torch.arange(T, device=idx.device)
            x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
            out = []
            for block in self.transformer.h:
                out.append(block.attn.weights(block.ln_1(x)))  # (B, nh, T, T)
                x = block(x)
        return torch.stack(out)

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> KVCache | SlidingWindowCache | StateCache:
        """An empty decoding cache for up to ``max_len`` tokens (default and at most block_size), on this
        model's device and dtype: a :class:`~lmlab.models.cache.KVCache`; for a sliding window a
        :class:`~lmlab.models.cache.SlidingWindowCache`, which keeps only the last ``window - 1`` keys and
        values; for linear attention a :class:`~lmlab.models.cache.StateCache` holding each layer's running
        sums (B, nh, hs, hs) and (B, nh, hs), the same size after any number of tokens. After
        :meth:`compile_decoding` the KV cache always holds block_size positions (one shape, one compilation)
        and single-token steps run the compiled step."""
        max_len = self.config.block_size if max_len is None else max_len
        if max_len > self.config.block_size:
            raise ValueError(f"max_len {max_len} exceeds the model's block_size {self.config.block_size}")
        c, w = self.config, self.transformer.wte.weight
        if c.attention == "sliding_window":
            return SlidingWindowCache(c.n_layer, c.window, batch_size, max_len)
        if c.attention == "linear":
            return StateCache(c.n_layer, batch_size, max_len)
        step_fn = self._compiled_step
        if step_fn is not None:
            max_len = c.block_size
        cache = KVCache(c.n_layer, c.n_head, c.head_size, batch_size, max_len, device=w.device, dtype=w.dtype)
        cache.step_fn = step_fn
        return cache

    def decode_step(
        self, idx: torch.Tensor, pos: torch.Tensor, k: list[torch.Tensor], v: list[torch.Tensor]
    ) -> torch.Tensor:
        """Next-token logits (B, V) for one new token per row, idx (B, 1), at position ``pos`` (a 0-dim long
        tensor), against preallocated keys and values ``k[layer]``, ``v[layer]`` (B, nh, S, hs), which get the
        new token's keys and values at ``pos``.

        Every shape is fixed (attention covers all S slots, those after ``pos`` masked out), so
        ``torch.compile`` compiles it once for a batch size, the way gpt-fast compiles its decode step. The
        same numbers as :meth:`forward` with a KV cache, up to rounding; eval mode only (no dropout).
        """
        B = idx.shape[0]
        c = self.config
        nh, hs, C = c.n_head, c.head_size, c.n_embd
        at = pos.view(1)
        x = self.transformer.wte(idx) + self.transformer.wpe(at)  # (B, 1, C)
        S = k[0].shape[2]
        visible = (torch.arange(S, device=idx.device) <= pos).view(1, 1, 1, S)  # the slots filled so far
        for i, block in enumerate(self.transformer.h):
            attn = block.attn
            qkv = attn.c_attn(block.ln_1(x)).view(B, 1, 3, nh, hs).permute(2, 0, 3, 1, 4)
            q, k_new, v_new = qkv.unbind(0)  # each (B, nh, 1, hs)
            k[i].index_copy_(2, at, k_new)
            v[i].index_copy_(2, at, v_new)
            y = F.scaled_dot_product_attention(q, k[i], v[i], attn_mask=visible)  # (B, nh, 1, hs)
            x = x + attn.c_proj(y.transpose(1, 2).reshape(B, 1, C))
            x = x + block.mlp(block.ln_2(x))
        return self.lm_head(self.transformer.ln_f(x))[:, -1]

    def compile_decoding(self, enabled: bool = True) -> GPT:
        """Run single-token decoding steps through ``torch.compile(decode_step)`` (inductor; needs a C++
        compiler on the CPU). The first generation call with a batch size compiles (seconds to a minute);
        later calls reuse it. ``enabled=False`` goes back to eager steps. Returns the model. Full attention
        only."""
        if enabled and self.config.attention != "full":
            raise ValueError(f"compile_decoding supports attention='full' only, not {self.config.attention!r}")
        self._compiled_step = torch.compile(self.decode_step, fullgraph=True, dynamic=False) if enabled else None
        return self

    # ------------------------------------------------------------------ counting
    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (shared tensors counted once).

        With ``non_embedding=True`` the token and position embedding tables are left out, as in the
        parameter counts of scaling-law papers (Kaplan et al. 2020, section 2.1). An untied output layer
        is counted.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, T: int | None = None) -> int:
        """Training FLOPs per token (forward + backward) at context length ``T`` (default block_size).

        6N + 12·L·d·T, from PaLM (Chowdhery et al. 2022), Appendix B: 6 FLOPs per weight per token for the
        matmuls (2 forward, 4 backward), plus the attention score and value products, for full attention.
        A sliding window reads min(window, T) keys per query, so T becomes min(window, T); linear attention
        updates and reads a (hs, hs) state per head, so T becomes hs (as in :mod:`lmlab.attention_cost`,
        recurrent form, counting every query-key pair as PaLM does). N counts the
        weights used in matmuls: every parameter but the embedding lookups, plus the output projection,
        which is a matmul even when it shares the token embedding's weights.
        """
        T = self.config.block_size if T is None else T
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        N = self.num_params(non_embedding=True)
        if self.config.tie_weights:
            N += self.lm_head.weight.numel()
        L, d = self.config.n_layer, self.config.n_embd
        keys = {"full": T, "sliding_window": min(self.config.window or T, T), "linear": self.config.head_size}
        return 6 * N + 12 * L * d * keys[self.config.attention]

    # ------------------------------------------------------------------ interop
    @classmethod
    def from_hf_gpt2(cls, hf_model: nn.Module) -> GPT:
        """Build a GPT with the weights of a transformers ``GPT2LMHeadModel`` (any size, no download).

        The activation comes from ``hf_model.config.activation_function``: "gelu" becomes exact GELU,
        "gelu_new" and "gelu_pytorch_tanh" the tanh approximation. GPT-2's ``Conv1D`` layers store
        weights as (in, out); they are transposed into ``nn.Linear``'s (out, in).
        """
        hf_cfg = getattr(hf_model, "config", None)
        if hf_cfg is None or getattr(hf_cfg, "model_type", None) != "gpt2":
            raise TypeError("from_hf_gpt2 needs a transformers GPT2LMHeadModel (config.model_type 'gpt2')")
        act = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}.get(
            hf_cfg.activation_function
        )
        if act is None:
            raise ValueError(
                f"activation {hf_cfg.activation_function!r} is not supported; "
                "use 'gelu', 'gelu_new' or 'gelu_pytorch_tanh'"
            )
        if not getattr(hf_cfg, "scale_attn_weights", True) or getattr(hf_cfg, "scale_attn_by_inverse_layer_idx", False):
            raise ValueError("only GPT-2 attention scaled by 1/sqrt(head size) is supported")
        config = GPTConfig(
            vocab_size=hf_cfg.vocab_size,
            block_size=hf_cfg.n_positions,
            n_layer=hf_cfg.n_layer,
            n_head=hf_cfg.n_head,
            n_embd=hf_cfg.n_embd,
            n_inner=hf_cfg.n_inner,
            dropout=float(hf_cfg.resid_pdrop),
            bias=True,
            activation=act,
            tie_weights=bool(getattr(hf_cfg, "tie_word_embeddings", True)),
            layer_norm_eps=hf_cfg.layer_norm_epsilon,
        )
        model = cls(config)
        src = {k: v.detach().float() for k, v in hf_model.state_dict().items()}
        conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        new_state = {}
        for name in model.state_dict():
            if name == "lm_head.weight":
                key = "lm_head.weight" if "lm_head.weight" in src else "transformer.wte.weight"
            else:
                key = name
            if key not in src:
                raise ValueError(f"the transformers model has no weight {key!r}")
            w = src[key]
            new_state[name] = w.t() if name.endswith(conv1d) else w
        model.load_state_dict(new_state)
        return model.to(hf_model.device if hasattr(hf_model, "device") else "cpu")
