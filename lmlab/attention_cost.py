"""What attention costs as the sequence grows: analytic FLOPs and memory of a Transformer, by attention kind,
measured on lmlab's GPT (:func:`measure`), and for a whole book (:func:`book_cost`).

Counting conventions (those of Kaplan et al. 2020, "Scaling Laws for Neural Language Models", table 1):
a multiply-add is 2 FLOPs; a forward pass is counted, biases, LayerNorms, softmax and activations are
left out (they are O(T d), small next to the matrix products). For one layer of width ``d`` (``n_head``
heads of size ``d / n_head``) reading ``T`` tokens:

- projections: q, k, v and the output projection, ``2 * T * 4 d^2``; the MLP of width ``w`` (``mlp_ratio * d``
  unless ``n_inner`` says otherwise), ``2 * T * m * d * w`` with ``m = 2`` matrices (3 for a gated MLP such as
  Llama's SwiGLU, Shazeer 2020); both ~T d^2;
- full attention: the scores Q Kᵀ and the weighted sum of the values, ``2 * T^2 * d`` each (~T^2 d), all
  T x T pairs, as a dense implementation computes them (a causal kernel can skip about half);
- sliding window of ``w``: each query meets at most ``w`` keys, ``2 * 2 * T * min(w, T) * d``;
- linear attention (Katharopoulos et al. 2020) in its recurrent form: per token and head, the state update
  ``S += phi(k) vᵀ`` and the read ``phi(q)ᵀ S`` on a (hs, hs) state, ``2 * 2 * T * d * hs`` in all (~T d).

Memory is counted in bytes at ``bytes_per_value`` (2 for fp16/bf16): the weights, the KV cache of full
attention (``2 * n_layer * T * d`` values: keys and values of every layer, every head keeping its own; a
sliding window keeps ``min(w, T)`` positions, linear attention a fixed (hs, hs) state and an (hs,)
normaliser per head), and the
score matrix of one layer that an explicit implementation materialises (``n_head * T^2`` values).

Measured (:func:`measure`): a small lmlab GPT is timed on random token ids, forward and forward + backward,
and its peak memory is read (on the CPU in a child process per length); before anything runs, every length
whose conservative estimate (:func:`peak_memory_estimate`) exceeds the memory limit is refused.

A whole book (:func:`book_cost`): weights, KV cache, score matrix, FLOPs and time of reading a novel
(:data:`NOVEL_TOKENS`) in one pass, or token by token with and without a KV cache, for named model shapes
(:data:`SHAPES`), and whether each fits on GPUs of 16, 80 and 141 GB.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lmlab.checks import check_int, check_number, is_int

__all__ = [
    "KINDS",
    "CostShape",
    "layer_flops",
    "model_flops",
    "attention_share",
    "crossover_length",
    "memory_bytes",
    "PowerLawFit",
    "fit_exponent",
    "MEASURE_SHAPE",
    "DEFAULT_CPU_MEMORY_LIMIT",
    "default_memory_limit",
    "gpt_num_params",
    "peak_memory_estimate",
    "Measurement",
    "measure",
    "SHAPES",
    "SHAPE_SOURCES",
    "NOVEL_TOKENS",
    "BOOK_GPUS",
    "H100_BF16_PEAK_FLOPS",
    "H100_BANDWIDTH",
    "ASSUMED_UTILISATION",
    "BookScenario",
    "BookCost",
    "book_cost",
]

KINDS = ("full", "sliding_window", "linear")


@dataclass(frozen=True)
class CostShape:
    """The shape of a decoder-only Transformer, for cost accounting (no weights).

    ``mlp_ratio`` is the MLP's width over ``n_embd`` (4 in GPT-2); ``n_inner``, when given, is the MLP's
    width itself (Llama 2 7B: 11008, not a multiple of 4096); ``gated_mlp`` means three MLP matrices, a gate,
    an up and a down projection (SwiGLU, Shazeer 2020, as in Llama), instead of two; ``tied_embeddings``
    means the output layer shares the token embedding (GPT-2), else it is a second V x d matrix (Llama).
    ``bytes_per_value`` 2 for fp16/bf16, 4 for fp32.
    """

    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int = 50_257
    mlp_ratio: int = 4
    bytes_per_value: int = 2
    n_inner: int | None = None  # the MLP's hidden width; None: mlp_ratio * n_embd
    gated_mlp: bool = False  # three MLP matrices (SwiGLU) instead of two
    tied_embeddings: bool = True  # the output layer is the token embedding (GPT-2); False: its own matrix

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "n_head", "vocab_size", "mlp_ratio", "bytes_per_value"):
            check_int(name, getattr(self, name), 1)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.n_inner is not None:
            check_int("n_inner", self.n_inner, 1)
        for name in ("gated_mlp", "tied_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        """The MLP's hidden width w: ``n_inner``, or ``mlp_ratio * n_embd``."""
        return self.n_inner if self.n_inner is not None else self.mlp_ratio * self.n_embd

    @property
    def layer_params(self) -> int:
        """Matrix weights of one block: 4 d^2 (q, k, v, output) + m d w (the MLP's m = 2 or 3 matrices)."""
        d = self.n_embd
        return 4 * d * d + (3 if self.gated_mlp else 2) * d * self.mlp_width

    @property
    def num_params(self) -> int:
        """Weights of the blocks and the embedding: n_layer * (4 + 2 mlp_ratio) d^2 + V d for GPT-2's shape
        (no biases, norms or position tables); an untied output layer adds another V d."""
        return self.n_layer * self.layer_params + (1 if self.tied_embeddings else 2) * self.vocab_size * self.n_embd


def _check_kind(kind: str, window: int | None) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "sliding_window":
        if window is None:
            raise ValueError("kind 'sliding_window' needs window, the number of positions each query sees (>= 1)")
        check_int("window", window, 1)
    elif window is not None:
        raise ValueError(f"window is only for kind 'sliding_window', not {kind!r}")


def layer_flops(T: int, shape: CostShape, kind: str = "full", window: int | None = None) -> dict[str, float]:
    """Forward FLOPs of one layer on T tokens, by part: ``{"dense": ..., "attention": ...}`` (module docstring).

    ``dense`` is the projections and the MLP (~T d^2), ``attention`` the token-mixing part of ``kind``.
    """
    check_int("T", T, 1)
    _check_kind(kind, window)
    d = shape.n_embd
    dense = 2.0 * T * shape.layer_params  # 2 FLOPs per weight per token (Kaplan et al. 2020, table 1)
    if kind == "full":
        attention = 2.0 * 2 * T * T * d
    elif kind == "sliding_window":
        attention = 2.0 * 2 * T * min(window, T) * d
    else:
        attention = 2.0 * 2 * T * d * shape.head_size
    return {"dense": dense, "attention": attention}


def model_flops(T: int, shape: CostShape, kind: str = "full", window: int | None = None) -> float:
    """Forward FLOPs of the whole model on T tokens: every layer, plus the output head (2 T d V)."""
    per_layer = sum(layer_flops(T, shape, kind, window).values())
    return shape.n_layer * per_layer + 2.0 * T * shape.n_embd * shape.vocab_size


def attention_share(T: int, shape: CostShape, kind: str = "full", window: int | None = None) -> float:
    """Share of a layer's FLOPs spent mixing tokens (attention), in [0, 1)."""
    parts = layer_flops(T, shape, kind, window)
    return parts["attention"] / (parts["attention"] + parts["dense"])


def crossover_length(shape: CostShape) -> float:
    """The length T where full attention's FLOPs equal the rest of the layer's: 4 T^2 d = 2 T (4 d^2 + m d w).

    That is T = 2 d + m w / 2: (2 + r) d for an MLP of m = 2 matrices of width w = r d (6 d for GPT-2's
    r = 4). Past it, attention is more than half of the work.
    """
    return shape.layer_params / (2 * shape.n_embd)


def memory_bytes(
    T: int, shape: CostShape, kind: str = "full", window: int | None = None, batch_size: int = 1
) -> dict[str, float]:
    """Bytes of a forward pass on ``batch_size`` sequences of T tokens: ``weights``, ``cache`` (what
    decoding keeps per layer: keys and values, or the linear-attention state) and ``scores`` (one layer's
    score matrices, n_head x T x T per sequence, if materialised; the window's band for a sliding window;
    none for linear attention)."""
    check_int("T", T, 1)
    check_int("batch_size", batch_size, 1)
    _check_kind(kind, window)
    b, d, L, nh, hs = shape.bytes_per_value, shape.n_embd, shape.n_layer, shape.n_head, shape.head_size
    if kind == "full":
        cache = 2.0 * L * T * d
        scores = 1.0 * nh * T * T
    elif kind == "sliding_window":
        cache = 2.0 * L * min(window, T) * d
        scores = 1.0 * nh * T * min(window, T)
    else:
        cache = 1.0 * L * nh * (hs * hs + hs)
        scores = 0.0
    return {"weights": float(shape.num_params * b), "cache": batch_size * cache * b,
            "scores": batch_size * scores * b}  # fmt: skip


@dataclass(frozen=True)
class PowerLawFit:
    """values ~ prefactor * length ** exponent, fitted on log-log axes, with a confidence interval."""

    exponent: float
    prefactor: float
    low: float  # the interval for the exponent at `confidence`
    high: float
    confidence: float
    n: int  # points fitted

    def predict(self, length: float) -> float:
        return self.prefactor * length**self.exponent


def _t_pdf(x: float, dof: int) -> float:
    log_c = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
    return math.exp(log_c - (dof + 1) / 2 * math.log1p(x * x / dof))


def _t_quantile(p: float, dof: int) -> float:
    """The p-quantile (p in (0.5, 1)) of Student's t with ``dof`` degrees of freedom, by bisection on its
    CDF, integrated with Simpson's rule after the substitution x = tan(u) (exact to about 1e-9)."""

    def cdf(x: float) -> float:  # P(T <= x) for x >= 0: 1/2 + the integral of the pdf from 0 to x
        top, n = math.atan(x), 2000
        h = top / n
        total = sum((1 if i in (0, n) else 4 if i % 2 else 2) * _t_pdf(math.tan(i * h), dof) / math.cos(i * h) ** 2
                    for i in range(n + 1))  # fmt: skip
        return 0.5 + total * h / 3

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def fit_exponent(lengths: Sequence[float], values: Sequence[float], confidence: float = 0.95) -> PowerLawFit:
    """Fit values ~ c * lengths ** k by least squares on log-log axes: the slope k, with its interval.

    The interval is slope ± t * standard error, t the Student-t quantile with n - 2 degrees of freedom
    (ordinary least squares, e.g. Wasserman, *All of Statistics*, 2004, ch. 13). Needs at least 3 points
    with positive lengths and values; exact power laws give k exactly and an interval of width 0.
    """
    xs, ys = [float(x) for x in lengths], [float(y) for y in values]
    if len(xs) != len(ys):
        raise ValueError(f"lengths and values must have the same size, got {len(xs)} and {len(ys)}")
    if len(xs) < 3:
        raise ValueError(f"a slope with an interval needs at least 3 points, got {len(xs)}")
    if not all(math.isfinite(v) and v > 0 for v in xs + ys):
        raise ValueError("lengths and values must be finite and > 0 (they are fitted on log-log axes)")
    if len(set(xs)) < 2:
        raise ValueError("lengths must not all be equal: the slope needs at least two different lengths")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    n = len(lx)
    mx, my = sum(lx) / n, sum(ly) / n
    sxx = sum((x - mx) ** 2 for x in lx)
    slope = sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / sxx
    intercept = my - slope * mx
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(lx, ly, strict=True))
    se = math.sqrt(residual / (n - 2) / sxx)
    half = _t_quantile(0.5 + confidence / 2, n - 2) * se
    return PowerLawFit(slope, math.exp(intercept), slope - half, slope + half, float(confidence), n)


# ---------------------------------------------------------------------------------------------- measured
# A model small enough for a 2-core CPU to reach 16k tokens: one layer of width 64 with 4 heads (hs = 16),
# the byte vocabulary, fp32. Its crossover length is 6 * 64 = 384 tokens.
MEASURE_SHAPE = CostShape(n_layer=1, n_embd=64, n_head=4, vocab_size=256, bytes_per_value=4)
DEFAULT_CPU_MEMORY_LIMIT = 4e9  # bytes (GB here are 10^9 bytes): measure refuses lengths estimated above it
_CUDA_MEMORY_SHARE = 0.9  # on a GPU the default limit is this share of its memory
_MIN_TIMED_SECONDS = 0.25  # cheap passes are timed more often than `repeats`, until this many seconds
_MAX_REPEATS_FACTOR = 10  # ... but at most this many times `repeats`
_LINEAR_CHUNK = 64  # chunk length of lmlab's chunked linear attention (lmlab.models.gpt.LINEAR_CHUNK)
_MEMORY_WHAT = {
    "cpu": "CPU peak RSS increase of a child process (Linux VmHWM after a reset, minus VmRSS before)",
    "cpu-maxrss": "CPU peak RSS increase of a child process (ru_maxrss after minus before: a high-water mark, "
    "so a pass that peaks below the child's earlier peak reads as 0)",
    "cuda": "CUDA max_memory_allocated during the pass minus memory_allocated before it (tensors only)",
    "none": "not measured",
}


def gpt_num_params(shape: CostShape, block_size: int) -> int:
    """Parameters of lmlab's ``GPT`` of this shape with ``block_size`` learned positions: the matrices of
    :attr:`CostShape.num_params`, plus the biases, LayerNorms and position table that GPT-2 has
    (per block 9 d + w: q, k, v and output biases 4 d, MLP biases w + d, two LayerNorms 4 d; then the final
    LayerNorm 2 d and the block_size x d positions)."""
    if shape.gated_mlp:
        raise ValueError("lmlab's GPT has a plain two-matrix MLP; a gated_mlp shape cannot be built")
    check_int("block_size", block_size, 1)
    d = shape.n_embd
    return shape.num_params + shape.n_layer * (9 * d + shape.mlp_width) + 2 * d + block_size * d


def _uses_explicit_scores(kind: str, impl: str, T: int) -> bool:
    """Whether lmlab's attention of this kind and implementation materialises (T, T) matrices per head."""
    if kind == "linear":
        return impl == "naive"  # "sdpa" and "auto": the chunked form
    from lmlab.models.gpt import AUTO_EXPLICIT_MAX_KEYS

    return impl == "naive" or (impl == "auto" and T <= AUTO_EXPLICIT_MAX_KEYS)


def peak_memory_estimate(
    T: int,
    shape: CostShape = MEASURE_SHAPE,
    kind: str = "full",
    window: int | None = None,
    *,
    attention_impl: str = "sdpa",
    batch_size: int = 1,
    backward: bool = True,
    block_size: int | None = None,
) -> dict[str, float]:
    """A conservative estimate of the peak bytes of one pass of lmlab's ``GPT`` on ``batch_size`` x T tokens.

    It is meant to be above what :func:`measure` finds, so that a length it allows does not exhaust the
    machine. Values are counted at ``shape.bytes_per_value`` bytes (the logits' cross-entropy at 4); B is
    ``batch_size``, L layers, d width, w the MLP's width, V the vocabulary, nh heads. Parts, in bytes:

    - ``weights``: :func:`gpt_num_params` (``block_size`` positions, default T); ``gradients``, as many, with
      ``backward``;
    - ``activations``: per layer 12 d + 3 w values per token (a block keeps about 9 d + 2 w for backward:
      its LayerNorm, projection and MLP inputs, q, k, v and the attention output; counted with room), for
      L + 1 layers with ``backward`` (the extra layer: gradients in flight), for 2 without;
    - ``logits``: B T V values, 4 of them with ``backward`` (the logits, the saved log-softmax and the two
      gradients), 1 without;
    - ``attention``: the token mixing, by what lmlab's implementation computes.
      An explicit (T, T) matrix (``"naive"``, or ``"auto"`` up to 256 keys; for linear attention its
      quadratic form): (nh + 1) T^2 values kept per layer (the weights and the mask or bias), plus 3 nh T^2
      in the backward of one layer (gradients of the weights and scores, a temporary), i.e.
      ((L + 3) nh + L + 1) B T^2; without backward (3 nh + 2) B T^2.
      Softmax attention through SDPA keeps no T x T matrix (PyTorch's fused kernels save the output and a
      log-sum-exp of nh T values per layer). lmlab's sliding window of w computes a sequence longer than 2 w
      in blocks of w queries that each meet 2 w keys: a (T/w, w, 2w) mask, the blocks' keys and values
      copied (4 T d values), and, counted in case SDPA takes its unfused path, nh T 2w scores kept 3 times
      for backward: 2 w T (1 + 3 nh bytes) + 4 T d bytes for each of L + 1 layers (2 without backward);
      up to 2 w tokens it hands SDPA an explicit (T, T) band mask: a boolean and its additive copy,
      (1 + bytes) B T^2 bytes per layer held.
      Chunked linear attention (chunk c = 64): 3 nh T c + 3 nh (T / c + 1) hs^2 + 6 T d values per layer,
      for L + 2 layers (2 without backward).

    Checked against measured peaks at 2,048 to 8,192 tokens (CPU, fp32), where it was 1.3x to 3x above
    them. If PyTorch picks its unfused "math" SDPA kernel, (T, T) matrices appear that this leaves out:
    :func:`measure` records the estimate beside the measured peak so that a reader sees it.
    """
    check_int("T", T, 1)
    check_int("batch_size", batch_size, 1)
    _check_kind(kind, window)
    _check_impl(attention_impl)
    block = T if block_size is None else check_int("block_size", block_size, T)
    b, B, L = shape.bytes_per_value, batch_size, shape.n_layer
    d, w, V, nh, hs = shape.n_embd, shape.mlp_width, shape.vocab_size, shape.n_head, shape.head_size
    weights = float(gpt_num_params(shape, block) * b)
    layers_held = L + 1 if backward else 2
    out = {
        "weights": weights,
        "gradients": weights if backward else 0.0,
        "activations": float(layers_held * B * T * (12 * d + 3 * w) * b),
        "logits": float((4 if backward else 1) * B * T * V * 4),
    }
    if _uses_explicit_scores(kind, attention_impl, T):
        values = ((L + 3) * nh + L + 1) if backward else (3 * nh + 2)
        attention = values * B * T * T * b
    elif kind == "full":
        attention = L * B * nh * T * 4  # the kernels' log-sum-exp, fp32
    elif kind == "sliding_window" and T > 2 * window:  # the blocked path of lmlab.models.gpt
        attention = (L + 1 if backward else 2) * B * (2 * window * T * (1 + 3 * nh * b) + 4 * T * d * b)
    elif kind == "sliding_window":
        attention = (L + 1 if backward else 2) * B * T * T * (1 + b)
    else:
        c = _LINEAR_CHUNK
        per_layer = 3 * nh * T * c + 3 * nh * (T // c + 1) * hs * hs + 6 * T * d
        attention = (L + 2 if backward else 2) * B * per_layer * b
    out["attention"] = float(attention)
    return out


def _check_impl(attention_impl: str) -> None:
    from lmlab.models.gpt import ATTENTION_IMPLS

    if attention_impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {attention_impl!r}")


@dataclass(frozen=True)
class Measurement:
    """One length of :func:`measure`: median seconds of a forward and a forward + backward pass, the peak
    memory and what it means, beside the analytic estimates."""

    kind: str
    length: int  # T, tokens per sequence
    batch_size: int
    attention_impl: str
    window: int | None
    device: str
    dtype: str  # "float32" or "bfloat16"
    threads: int  # torch threads of the process that ran the passes
    repeats: int  # timed passes at least (cheap passes are timed more often); the medians are reported
    forward_seconds: float  # median of a no-grad forward pass (logits of every position)
    forward_backward_seconds: float | None  # median of forward + loss + backward; None without backward
    peak_memory_bytes: float | None  # see memory_what; None when not measured
    memory_what: str  # what peak_memory_bytes measures
    memory_pass: str  # the pass whose peak it is: "forward + backward" or "forward"
    estimated_memory_bytes: float  # peak_memory_estimate(...) in all: what the memory limit is checked on
    flops: float  # analytic forward FLOPs: batch_size * model_flops(length, shape, kind, window)
    loss: float  # the cross-entropy (nats) of the random ids: equal for equal seeds

    @property
    def forward_backward_flops(self) -> float:
        """3x the forward FLOPs: the backward pass costs about twice the forward (Kaplan et al. 2020, sec. 2.1)."""
        return 3 * self.flops

    @property
    def tokens(self) -> int:
        return self.batch_size * self.length


def _check_lengths(lengths: Sequence[int]) -> list[int]:
    if isinstance(lengths, str | bytes) or not isinstance(lengths, Sequence):
        raise ValueError(f"lengths must be a sequence of integers >= 1 (e.g. [256, 512]), got {lengths!r}")
    if not lengths:
        raise ValueError("lengths is empty: give at least one length (tokens per sequence)")
    bad = [t for t in lengths if not is_int(t) or t < 1]
    if bad:
        raise ValueError(f"lengths must be integers >= 1, got {bad[0]!r} in {list(lengths)!r}")
    return [int(t) for t in lengths]


def default_memory_limit(device: Any = "cpu") -> float:
    """The memory limit :func:`measure` uses when none is given, in bytes: :data:`DEFAULT_CPU_MEMORY_LIMIT`
    (4 GB) on the CPU, 90% of the GPU's memory on a CUDA device."""
    from lmlab.device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        import torch

        return _CUDA_MEMORY_SHARE * torch.cuda.get_device_properties(dev).total_memory
    return DEFAULT_CPU_MEMORY_LIMIT


def _gb(n: float) -> str:
    """Bytes as GB (10^9 bytes): three significant digits below 10 GB (0.0123 GB), else two decimals."""
    return f"{n / 1e9:.3g} GB" if n < 1e10 else f"{n / 1e9:,.2f} GB"


def measure(
    kind: str,
    lengths: Sequence[int],
    *,
    shape: CostShape = MEASURE_SHAPE,
    window: int | None = None,
    attention_impl: str = "sdpa",
    batch_size: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    backward: bool = True,
    memory: bool = True,
    memory_limit_bytes: float | None = None,
    device: str = "cpu",
    seed: int = 0,
    threads: int | None = None,
    timeout_s: float = 600.0,
) -> list[Measurement]:
    """Time (and measure the memory of) lmlab's ``GPT`` of ``shape`` with attention ``kind`` at each length.

    For each T of ``lengths``: a GPT of ``shape`` (biases and LayerNorms as GPT-2, ``block_size`` =
    ``max(lengths)``, fp32 or, for ``shape.bytes_per_value == 2``, bf16), initialised with ``seed``, reads
    ``batch_size`` sequences of T random token ids (drawn with ``seed``; the next ids are the targets).
    ``warmup`` untimed passes, then ``repeats`` timed ones (more for a pass so cheap that ``repeats`` of
    them take under 0.25 s: then until 0.25 s are timed, at most 10 x ``repeats``): a forward pass without
    gradients (``forward_seconds``) and, with ``backward``, forward + cross-entropy + backward
    (``forward_backward_seconds``); medians, in seconds.

    Memory (``memory=True``): the peak of one extra pass (forward + backward, or forward alone), which is
    also the first warm-up of that pass, over the memory held just before it (model and inputs built, the
    libraries warmed up on 16 tokens). On a CUDA device: ``torch.cuda.max_memory_allocated`` after
    ``reset_peak_memory_stats``, minus ``memory_allocated`` before (tensors only, not the allocator's cache).
    On the CPU the process's peak resident set: every length runs in its own child process (``python -m
    lmlab.attention_cost --child``), so that peaks of different lengths do not mix; on Linux the child resets
    its high-water mark (``/proc/self/clear_refs``), runs the pass and reads ``VmHWM`` minus the ``VmRSS``
    before, elsewhere it uses ``resource.getrusage(...).ru_maxrss`` after minus before. The child runs the
    timings too, is stopped after ``timeout_s`` seconds (TimeoutError), and on Linux caps its address
    space at its size before the pass plus ``memory_limit_bytes`` plus 1 GB, so that a wrong estimate
    ends in a MemoryError rather than swapping. Each record says what was measured (``memory_what``).

    Before anything runs, every length whose :func:`peak_memory_estimate` exceeds ``memory_limit_bytes``
    (default 4 GB on the CPU, 90% of the GPU's memory on CUDA; GB = 10^9 bytes) is refused with a
    ValueError that gives the estimate and the limit. ``threads`` sets ``torch.set_num_threads`` (None:
    this process's current count, passed on to the child). Returns one :class:`Measurement` per length, in
    the order given, each with the analytic forward FLOPs (:func:`model_flops`) and the memory estimate.
    """
    from lmlab.device import resolve_device
    from lmlab.models import ATTENTION_KINDS

    _check_kind(kind, window)
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"lmlab's GPT does not implement kind {kind!r} yet; it has {ATTENTION_KINDS}")
    _check_impl(attention_impl)
    Ts = _check_lengths(lengths)
    if not isinstance(shape, CostShape):
        raise TypeError(f"shape must be a CostShape, got {type(shape).__name__}")
    if shape.bytes_per_value not in (2, 4):
        raise ValueError(f"shape.bytes_per_value must be 4 (fp32) or 2 (bf16) to measure, got {shape.bytes_per_value}")
    if shape.gated_mlp:
        raise ValueError("lmlab's GPT has a plain two-matrix MLP; measure needs a shape with gated_mlp=False")
    check_int("batch_size", batch_size, 1)
    check_int("repeats", repeats, 1)
    check_int("warmup", warmup, 0)
    check_int("seed", seed, 0)
    if threads is not None:
        check_int("threads", threads, 1)
    check_number("timeout_s", timeout_s, positive=True)
    for name, flag in (("backward", backward), ("memory", memory)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    dev = resolve_device(device)
    if memory and dev.type not in ("cpu", "cuda"):
        raise ValueError(f"peak memory is measured on 'cpu' and 'cuda' devices, not {dev.type!r}; pass memory=False")
    if memory_limit_bytes is None:
        limit = default_memory_limit(dev)
    else:
        limit = check_number("memory_limit_bytes", memory_limit_bytes, positive=True)
    block = max(Ts)
    estimates = {
        T: sum(peak_memory_estimate(T, shape, kind, window, attention_impl=attention_impl, batch_size=batch_size,
                                    backward=backward, block_size=block).values())
        for T in Ts
    }  # fmt: skip
    refused = [T for T in Ts if estimates[T] > limit]
    if refused:
        listed = ", ".join(f"T={T}: {_gb(estimates[T])}" for T in refused)
        raise ValueError(
            f"the estimated peak memory of kind {kind!r} exceeds memory_limit_bytes = {_gb(limit)} at {listed} "
            f"(peak_memory_estimate, {'forward + backward' if backward else 'forward'}, batch {batch_size}); "
            f"drop those lengths or raise the limit"
        )
    import torch

    spec = {
        "kind": kind, "window": window, "impl": attention_impl, "batch_size": batch_size, "repeats": repeats,
        "warmup": warmup, "backward": backward, "memory": memory, "device": str(dev), "seed": seed,
        "threads": threads if threads is not None else torch.get_num_threads(), "block_size": block,
        "shape": {"n_layer": shape.n_layer, "n_embd": shape.n_embd, "n_head": shape.n_head,
                  "vocab_size": shape.vocab_size, "n_inner": shape.mlp_width,
                  "tied_embeddings": shape.tied_embeddings, "bytes_per_value": shape.bytes_per_value},
        "limit": limit,
    }  # fmt: skip
    records = []
    for T in Ts:
        one = dict(spec, length=T)
        child = memory and dev.type == "cpu"
        got = _run_in_child(one, timeout_s) if child else _run_spec(one)
        records.append(
            Measurement(
                kind=kind, length=T, batch_size=batch_size, attention_impl=attention_impl, window=window,
                device=str(dev), dtype=got["dtype"], threads=got["threads"], repeats=repeats,
                forward_seconds=got["forward_seconds"], forward_backward_seconds=got["forward_backward_seconds"],
                peak_memory_bytes=got["peak_memory_bytes"], memory_what=_MEMORY_WHAT[got["memory_how"]],
                memory_pass=("forward + backward" if backward else "forward") if memory else "none",
                estimated_memory_bytes=estimates[T], flops=batch_size * model_flops(T, shape, kind, window),
                loss=got["loss"],
            )
        )  # fmt: skip
    return records


def _run_in_child(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """:func:`_run_spec` in a fresh Python process (``python -m lmlab.attention_cost --child``): the spec
    as JSON on its stdin, the result as the last line of its stdout."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])  # the directory that holds the lmlab package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    what = f"kind {spec['kind']!r} at T={spec['length']}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lmlab.attention_cost", "--child"], input=json.dumps(spec), env=env,
            capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired as err:
        raise TimeoutError(f"measuring {what} took longer than timeout_s = {timeout_s:g} s; its process "
                           "was stopped (try fewer repeats or shorter lengths)") from err  # fmt: skip
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        if "MemoryError" in done.stderr or "can't allocate memory" in done.stderr or done.returncode == -9:
            raise MemoryError(f"measuring {what} ran out of memory (the child's limit is the memory limit "
                              f"{_gb(spec['limit'])} + 1 GB): {' | '.join(tail)}")  # fmt: skip
        raise RuntimeError(f"measuring {what} failed in its child process (exit {done.returncode}): "
                           + " | ".join(tail))  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_status() -> dict[str, int] | None:
    """Linux: {"VmRSS": bytes, "VmHWM": bytes, "VmSize": bytes} of this process, or None elsewhere."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "VmSize"):
            out[key] = int(rest.split()[0]) * 1024  # kB
    return out if len(out) == 3 else None


def _maxrss_bytes() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, kilobytes on Linux


def _cpu_peak_increase(run: Callable[[], object], limit: float) -> tuple[float, str]:
    """(peak RSS increase of ``run()``, how it was read) in this process: see :func:`measure`."""
    before = _rss_status()
    if before is not None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
        except OSError:
            before = None
    if before is None:
        start = _maxrss_bytes()
        run()
        return float(max(0, _maxrss_bytes() - start)), "cpu-maxrss"
    import resource

    cap = int(before["VmSize"] + limit + 1e9)  # never swap: a pass past the limit fails with MemoryError
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    run()
    after = _rss_status()
    return float(max(0, after["VmHWM"] - before["VmRSS"])), "cpu"


def _run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the model of ``spec``, measure memory and time (see :func:`measure`); a JSON-able dict."""
    import torch

    from lmlab.device import resolve_device
    from lmlab.models import GPT, GPTConfig

    torch.set_num_threads(spec["threads"])
    dev = resolve_device(spec["device"])
    sh = spec["shape"]
    dtype = torch.float32 if sh["bytes_per_value"] == 4 else torch.bfloat16
    cfg = GPTConfig(
        vocab_size=sh["vocab_size"], block_size=spec["block_size"], n_layer=sh["n_layer"], n_head=sh["n_head"],
        n_embd=sh["n_embd"], n_inner=sh["n_inner"], attention=spec["kind"], window=spec["window"],
        attention_impl=spec["impl"], tie_weights=sh["tied_embeddings"],
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # the caller's global generator is left as it was
        torch.manual_seed(spec["seed"])
        model = GPT(cfg)
    model = model.to(device=dev, dtype=dtype)
    B, T = spec["batch_size"], spec["length"]
    ids = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=torch.Generator().manual_seed(spec["seed"]))
    ids = ids.to(dev)
    x, y = ids[:, :-1], ids[:, 1:]  # (B, T) inputs and next-token targets

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def forward(n: int = T) -> None:
        model.eval()
        with torch.no_grad():
            model(x[:, :n])
        sync()

    losses: list[float] = []  # of the full-length forward + backward passes

    def forward_backward(n: int = T) -> None:
        model.train()
        loss = model(x[:, :n], y[:, :n]).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        sync()
        if n == T and not losses:
            losses.append(loss.item())

    main_pass = forward_backward if spec["backward"] else forward
    main_pass(min(T, 16))  # first calls set up kernels and thread pools: not part of any length's cost
    warm = {"forward": spec["warmup"], "forward_backward": spec["warmup"]}
    peak, how = None, "none"
    if spec["memory"]:
        if dev.type == "cuda":
            sync()
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            main_pass()
            peak, how = float(torch.cuda.max_memory_allocated(dev) - base), "cuda"
        else:
            peak, how = _cpu_peak_increase(main_pass, spec["limit"])
        warm["forward_backward" if spec["backward"] else "forward"] -= 1  # that pass was a warm-up too

    def median_seconds(fn: Callable[[], object], warmups: int) -> float:
        for _ in range(max(0, warmups)):
            fn()
        times: list[float] = []
        # at least `repeats` passes; passes shorter than _MIN_TIMED_SECONDS / repeats are repeated (up to
        # _MAX_REPEATS_FACTOR x repeats) until that much has been timed, so that a stall of a shared CPU
        # cannot take the median of a cheap pass
        while len(times) < spec["repeats"] or (
            sum(times) < _MIN_TIMED_SECONDS and len(times) < _MAX_REPEATS_FACTOR * spec["repeats"]
        ):
            sync()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)  # fn synchronises a GPU before returning
        return statistics.median(times)

    fwd = median_seconds(forward, warm["forward"])
    fwd_bwd = median_seconds(forward_backward, warm["forward_backward"]) if spec["backward"] else None
    if not losses:  # forward only: one more pass, with the targets
        model.eval()
        with torch.no_grad():
            losses.append(float(model(x, y).loss))
    loss = losses[0]
    return {
        "forward_seconds": fwd, "forward_backward_seconds": fwd_bwd, "peak_memory_bytes": peak,
        "memory_how": how, "loss": loss, "threads": torch.get_num_threads(), "dtype": str(dtype).split(".")[-1],
    }  # fmt: skip


def _child_main() -> int:
    """``python -m lmlab.attention_cost --child``: run one spec read as JSON from stdin, print the result."""
    spec = json.loads(sys.stdin.read())
    print(json.dumps(_run_spec(spec)), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------- a whole book
SHAPES: dict[str, CostShape] = {
    "gpt2-small": CostShape(n_layer=12, n_embd=768, n_head=12, vocab_size=50_257),
    "gpt2-xl": CostShape(n_layer=48, n_embd=1600, n_head=25, vocab_size=50_257),
    # Llama's SwiGLU MLP: three d x 11008 matrices; untied output layer; 32 heads of 128, no grouped queries
    "llama2-7b": CostShape(
        n_layer=32, n_embd=4096, n_head=32, vocab_size=32_000, n_inner=11_008, gated_mlp=True, tied_embeddings=False
    ),  # fmt: skip
}
SHAPE_SOURCES: dict[str, str] = {
    "gpt2-small": "GPT-2 small, 124M: Radford et al. 2019, 'Language Models are Unsupervised Multitask Learners', "
    "table 2 (12 layers, d_model 768; 12 heads in OpenAI's released hparams.json)",
    "gpt2-xl": "GPT-2 XL, 1.5B: Radford et al. 2019, table 2 (48 layers, d_model 1600; 25 heads in hparams.json)",
    "llama2-7b": "Llama 2 7B: Touvron et al. 2023, 'Llama 2', sec. 2.2 (Llama 1's architecture) and Touvron et "
    "al. 2023, 'LLaMA', table 2 (32 layers, dimension 4096, 32 heads), vocabulary 32k; SwiGLU MLP of width 11008 "
    "(Meta's released params); 6.74B weights as counted here",
}
# Assumption: a 110,000-word novel at about 1.3 tokens per English word (a BPE vocabulary such as GPT-2's;
# OpenAI's rule of thumb, 1 token ~ 3/4 of a word) is about 143,000 tokens: counted as 150,000.
NOVEL_TOKENS = 150_000
BOOK_GPUS: dict[str, float] = {"T4 16 GB": 16.0, "H100 80 GB": 80.0, "H200 141 GB": 141.0}  # GB (10^9 bytes)
H100_BF16_PEAK_FLOPS = 989e12  # NVIDIA H100 SXM data sheet: dense bf16 tensor cores (1979 with 2:4 sparsity)
H100_BANDWIDTH = 3.35e12  # bytes/s: NVIDIA H100 SXM data sheet, HBM3 memory bandwidth
# An assumed share of the peak that a large model reaches; PaLM reported 46% model FLOPs utilisation in
# training (Chowdhery et al. 2022, table 3). Decoding one token at a time reaches far less: see read_seconds.
ASSUMED_UTILISATION = 0.4


def _sum_to(n: int) -> int:
    """1 + 2 + ... + n."""
    return n * (n + 1) // 2


def _sum_squares_to(n: int) -> int:
    """1^2 + 2^2 + ... + n^2 = n (n + 1) (2 n + 1) / 6."""
    return n * (n + 1) * (2 * n + 1) // 6


def _sum_min(T: int, w: int) -> int:
    """min(w, 1) + ... + min(w, T): the keys a sliding window of w reads, summed over T positions."""
    return _sum_to(T) if T <= w else _sum_to(w) + (T - w) * w


def _sum_t_min(T: int, w: int) -> int:
    """1 min(w, 1) + 2 min(w, 2) + ... + T min(w, T): a window's query-key pairs, summed over prefixes."""
    return _sum_squares_to(T) if T <= w else _sum_squares_to(w) + w * (_sum_to(T) - _sum_to(w))


@dataclass(frozen=True)
class BookScenario:
    """One way of running a book of T tokens through a model: its memory, FLOPs and time, and where it fits."""

    name: str
    memory: dict[str, float]  # bytes by part; the peak is their sum
    flops: float
    bytes_read: float  # bytes read from GPU memory: the weights once per pass, the cache once per token
    compute_seconds: float  # flops / flops_per_second
    read_seconds: float  # bytes_read / bandwidth: a lower bound too, reached when reading memory is the limit
    fits: dict[str, bool]  # GPU name -> whether the memory fits in its memory

    @property
    def total_memory(self) -> float:
        return sum(self.memory.values())

    @property
    def seconds(self) -> float:
        """The larger of the two bounds: a pass can go no faster than its FLOPs or its memory reads allow."""
        return max(self.compute_seconds, self.read_seconds)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_seconds >= self.read_seconds else "memory reads"


@dataclass(frozen=True)
class BookCost:
    """What reading a book of ``tokens`` tokens costs a model of ``shape``: see :func:`book_cost`."""

    tokens: int
    shape: CostShape
    shape_name: str | None
    kind: str
    window: int | None
    fused_attention: bool  # whether the one-pass scenarios keep T x T scores (False) or not (True)
    weights_bytes: float
    kv_cache_bytes: float  # the cache after the whole book (keys and values, or the linear state)
    scores_bytes: float  # one layer's score matrices n_head x T x T (a band for a window; 0 for linear)
    activations_bytes: float  # one layer's activations in a pass over the whole book
    flops_per_second: float
    throughput_what: str
    bandwidth_bytes_per_second: float
    gpus: dict[str, float]  # name -> bytes
    one_pass: BookScenario
    with_cache: BookScenario
    without_cache: BookScenario

    @property
    def scenarios(self) -> tuple[BookScenario, BookScenario, BookScenario]:
        return (self.one_pass, self.with_cache, self.without_cache)

    def report(self) -> str:
        s = self.shape
        name = f"{self.shape_name} " if self.shape_name else ""
        kind = self.kind + (f" (window {self.window})" if self.window is not None else "")
        gpus = list(self.gpus)
        lines = [
            f"a book of {self.tokens:,} tokens, {name}({s.n_layer} layers, n_embd {s.n_embd}, {s.n_head} heads, "
            f"vocabulary {s.vocab_size:,}, {s.num_params / 1e9:.2f}B weights), {kind} attention, "
            f"{s.bytes_per_value} bytes per value",
            f"  weights {_gb(self.weights_bytes)}; KV cache after the book {_gb(self.kv_cache_bytes)}; one layer's "
            f"scores {_gb(self.scores_bytes)}; one layer's activations {_gb(self.activations_bytes)}",
            f"  compute at {self.flops_per_second / 1e12:,.1f} TFLOP/s ({self.throughput_what}); memory read at "
            f"{self.bandwidth_bytes_per_second / 1e12:.2f} TB/s",
            f"  {'':34}{'memory':>11}{'FLOPs':>10}{'time':>11}  {'bound':13}" + "".join(f"{g:>13}" for g in gpus),
        ]
        for sc in self.scenarios:
            lines.append(
                f"  {sc.name:34}{_gb(sc.total_memory):>11}{sc.flops:10.2e}{_duration(sc.seconds):>11}  {sc.bound:13}"
                + "".join(f"{'fits' if sc.fits[g] else 'no':>13}" for g in gpus)
            )
        lines.append("  one pass: " + ("a fused kernel (no T x T scores kept)" if self.fused_attention else
                                       "an explicit implementation (one layer's T x T scores at a time)")
                     + "; the logits of every position are not counted (they can be scored in chunks)")  # fmt: skip
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"


def book_cost(
    tokens: int = NOVEL_TOKENS,
    shape: CostShape | str = "gpt2-small",
    *,
    kind: str = "full",
    window: int | None = None,
    bytes_per_value: int | None = None,
    fused_attention: bool = False,
    flops_per_second: float | None = None,
    bandwidth_bytes_per_second: float = H100_BANDWIDTH,
    gpus: Mapping[str, float] = BOOK_GPUS,
) -> BookCost:
    """Memory, FLOPs and time of a whole book of ``tokens`` tokens (T) through a model of ``shape``.

    ``shape`` is a :class:`CostShape` or a name of :data:`SHAPES`; the book is taken to fit the model's
    context (GPT-2 reads 1,024 tokens and Llama 2 4,096: this is what it would cost if they read it all).
    FLOPs follow :func:`layer_flops` (2 per multiply-add, forward only); bytes are at ``bytes_per_value``
    (default the shape's, 2: fp16). Three scenarios:

    - ``one_pass``: one forward pass over the whole book at once (prefill, or scoring it): FLOPs
      :func:`model_flops` (T); memory the weights, one layer's activations (6 d + (m - 1) w values per token:
      the residual stream, its normalised copy, q, k, v, the attention output and the MLP's hidden layer, as
      the layers run one after another) and, unless ``fused_attention``, one layer's score matrix
      (n_head T^2 values, :func:`memory_bytes`; a fused kernel such as FlashAttention, Dao et al. 2022,
      never holds it);
    - ``with_cache``: token by token, keeping a KV cache: token t computes only its own row, reading t keys
      (min(w, t) for a window, a fixed state for linear attention), so the FLOPs are sum over t of
      L (2 N_layer + 4 keys(t) d) + 2 d V, about one pass (half the T^2 attention, the causal half); memory
      the weights and the cache after the book (2 L T d values for full attention); each token reads the
      weights and the cache so far;
    - ``without_cache``: token by token, each token re-reading the whole prefix: token t is a forward pass
      over t tokens (logits for the last one only), FLOPs sum over t of L (2 t N_layer + attention(t)) + 2 d V,
      ~ (4/3) L d T^3 for full attention; memory that of the last pass, as ``one_pass``.

    Time: FLOPs over ``flops_per_second`` (default :data:`H100_BF16_PEAK_FLOPS` x
    :data:`ASSUMED_UTILISATION`), and bytes read over ``bandwidth_bytes_per_second``; the larger is the
    scenario's ``seconds``. ``gpus`` maps a name to its memory in GB (10^9 bytes); a scenario fits when its
    memory is at most that (nothing counted for the framework, and batch 1).
    """
    shape_name = None
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; named shapes: {', '.join(SHAPES)}")
        shape_name, shape = shape, SHAPES[shape]
    if not isinstance(shape, CostShape):
        raise TypeError(f"shape must be a CostShape or a name of SHAPES, got {type(shape).__name__}")
    if bytes_per_value is not None:
        shape = replace(shape, bytes_per_value=check_int("bytes_per_value", bytes_per_value, 1))
    T = check_int("tokens", tokens, 1)
    _check_kind(kind, window)
    if not isinstance(fused_attention, bool):
        raise ValueError(f"fused_attention must be True or False, got {fused_attention!r}")
    if flops_per_second is None:
        flops_per_second = H100_BF16_PEAK_FLOPS * ASSUMED_UTILISATION
        what = (f"NVIDIA H100 SXM dense bf16 peak {H100_BF16_PEAK_FLOPS / 1e12:.0f} TFLOP/s x an assumed "
                f"{ASSUMED_UTILISATION:.0%} utilisation")  # fmt: skip
    else:
        flops_per_second = check_number("flops_per_second", flops_per_second, positive=True)
        what = "as given"
    bandwidth = check_number("bandwidth_bytes_per_second", bandwidth_bytes_per_second, positive=True)
    if not isinstance(gpus, Mapping) or not gpus:
        raise ValueError(f"gpus must map GPU names to their memory in GB, e.g. {BOOK_GPUS}, got {gpus!r}")
    capacity = {str(k): check_number(f"gpus[{k!r}]", v, positive=True) * 1e9 for k, v in gpus.items()}

    b, L, d, V, hs = shape.bytes_per_value, shape.n_layer, shape.n_embd, shape.vocab_size, shape.head_size
    m = memory_bytes(T, shape, kind, window)
    weights, cache, scores = m["weights"], m["cache"], m["scores"]
    activations = float(T * (6 * d + (2 if shape.gated_mlp else 1) * shape.mlp_width) * b)
    one_pass_memory = {"weights": weights, "activations": activations, "scores": 0.0 if fused_attention else scores}
    head = 2.0 * d * V  # the output layer for one position

    # token by token with a cache: token t reads keys(t) keys (t, min(w, t), or a fixed state)
    dense_token = L * 2.0 * shape.layer_params
    if kind == "full":
        keys_summed, cache_summed = _sum_to(T), 2.0 * L * _sum_to(T) * d * b
    elif kind == "sliding_window":
        keys_summed, cache_summed = _sum_min(T, window), 2.0 * L * _sum_min(T, window) * d * b
    else:
        keys_summed, cache_summed = T * hs, T * m["cache"]  # the recurrent form: a (hs, hs) state per head
    cached_flops = T * (dense_token + head) + L * 4.0 * d * keys_summed

    # token by token without a cache: token t is a pass over the t-token prefix, logits for the last one
    if kind == "full":
        pairs = _sum_squares_to(T)
    elif kind == "sliding_window":
        pairs = _sum_t_min(T, window)
    else:
        pairs = _sum_to(T) * hs
    uncached_flops = _sum_to(T) * dense_token + L * 4.0 * d * pairs + T * head

    def scenario(name: str, memory: dict[str, float], flops: float, read: float) -> BookScenario:
        total = sum(memory.values())
        return BookScenario(name, memory, float(flops), float(read), flops / flops_per_second, read / bandwidth,
                            {g: total <= c for g, c in capacity.items()})  # fmt: skip

    return BookCost(
        tokens=T, shape=shape, shape_name=shape_name, kind=kind, window=window, fused_attention=fused_attention,
        weights_bytes=weights, kv_cache_bytes=cache, scores_bytes=scores, activations_bytes=activations,
        flops_per_second=flops_per_second, throughput_what=what, bandwidth_bytes_per_second=bandwidth,
        gpus=capacity,
        one_pass=scenario("one pass over the whole book", one_pass_memory, model_flops(T, shape, kind, window),
                          weights),
        with_cache=scenario("token by token, with a KV cache", {"weights": weights, "cache": cache}, cached_flops,
                            T * weights + cache_summed),
        without_cache=scenario("token by token, without a cache", dict(one_pass_memory), uncached_flops,
                               T * weights),
    )  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        sys.exit(_child_main())
    for _name in SHAPES:  # python -m lmlab.attention_cost: a novel through each named shape
        print(book_cost(NOVEL_TOKENS, _name).report(), end="\n\n")
