"""What attention costs as the sequence grows: analytic FLOPs and memory of a Transformer, by attention kind.

Counting conventions (those of Kaplan et al. 2020, "Scaling Laws for Neural Language Models", table 1):
a multiply-add is 2 FLOPs; a forward pass is counted, biases, LayerNorms, softmax and activations are
left out (they are O(T d), small next to the matrix products). For one layer of width ``d`` (``n_head``
heads of size ``d / n_head``) reading ``T`` tokens:

- projections: q, k, v and the output projection, ``2 * T * 4 d^2``; the MLP of width ``mlp_ratio * d``,
  ``2 * T * 2 * mlp_ratio * d^2`` (both ~T d^2);
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lmlab.checks import check_int

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
]

KINDS = ("full", "sliding_window", "linear")


@dataclass(frozen=True)
class CostShape:
    """The shape of a decoder-only Transformer, for cost accounting (no weights).

    ``mlp_ratio`` is the MLP's width over ``n_embd`` (4 in GPT-2); ``bytes_per_value`` 2 for fp16/bf16,
    4 for fp32.
    """

    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int = 50_257
    mlp_ratio: int = 4
    bytes_per_value: int = 2

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "n_head", "vocab_size", "mlp_ratio", "bytes_per_value"):
            check_int(name, getattr(self, name), 1)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def num_params(self) -> int:
        """Weights of the blocks and the (tied) embedding: n_layer * (4 + 2 mlp_ratio) d^2 + V d (no biases)."""
        d = self.n_embd
        return self.n_layer * (4 + 2 * self.mlp_ratio) * d * d + self.vocab_size * d


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
    dense = 2.0 * T * (4 + 2 * shape.mlp_ratio) * d * d
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
    """The length T where full attention's FLOPs equal the rest of the layer's: 4 T^2 d = 2 (4 + 2r) T d^2.

    That is T = (2 + r) d (6 d for GPT-2's r = 4): past it, attention is more than half of the work.
    """
    return float((2 + shape.mlp_ratio) * shape.n_embd)


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
