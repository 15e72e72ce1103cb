"""What attention costs: the experiments and figures of lesson 03a, over :mod:`lmlab.attention_cost`.

Each function is one idea of the lesson:

- where a layer's FLOPs go as the sequence grows, by part and by attention kind (:func:`flops_rows`,
  :func:`plot_flops_by_part`, :func:`plot_attention_share`), and where the memory goes (:func:`memory_rows`,
  :func:`plot_memory`);
- the cost measured on this machine, against the length, and the exponents fitted to it next to the
  analytic ones (:func:`time_sweep`, :func:`memory_sweep`, :func:`slope_rows`, :func:`plot_sweep`);
- what one generated token costs at position t, with a KV cache (:func:`token_cost`,
  :func:`plot_token_cost`), and generation timed with and without the cache (:func:`generation_timing`,
  :func:`plot_generation`);
- a whole book in one pass, next to the GPUs' memory (:func:`plot_book_memory`; the numbers are
  :func:`lmlab.attention_cost.book_cost`'s).

The counting conventions are those of :mod:`lmlab.attention_cost` (2 FLOPs per multiply-add, forward
passes; Kaplan et al. 2020, table 1). The lesson's exercises (a layer's FLOPs by part, a log-log slope) are
solved only in the instructor's notebook. Shapes: ``T`` tokens, ``d`` width, ``L`` layers, ``t`` a position.
Plotting functions draw on the ``ax`` they are given (or a new figure) and return it; matplotlib is
imported when one is called.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.nn as nn

from lmlab.attention_cost import (
    KINDS,
    MEASURE_SHAPE,
    BookCost,
    CostShape,
    Measurement,
    PowerLawFit,
    attention_share,
    crossover_length,
    fit_exponent,
    layer_flops,
    measure,
    memory_bytes,
    model_flops,
)
from lmlab.checks import check_int
from lmlab.generation import greedy
from lmlab.lm import context_limit
from lmlab.plots import new_axes

__all__ = [
    "DEFAULT_WINDOW",
    "kind_label",
    "FlopsRow",
    "flops_rows",
    "plot_flops_by_part",
    "plot_attention_share",
    "MemoryRow",
    "memory_rows",
    "plot_memory",
    "SWEEP_VARIANTS",
    "time_sweep",
    "memory_sweep",
    "SlopeRow",
    "slope_rows",
    "plot_sweep",
    "token_cost",
    "plot_token_cost",
    "GenerationRow",
    "generation_timing",
    "plot_generation",
    "plot_book_memory",
]

DEFAULT_WINDOW = 4096  # the sliding window of the analytic comparisons: Mistral 7B's (Jiang et al. 2023)
KIND_STYLE = {"full": ("tab:red", "-"), "sliding_window": ("tab:green", "--"), "linear": ("tab:blue", ":")}


def _window_for(kind: str, window: int | None) -> int | None:
    """The window argument of :mod:`lmlab.attention_cost` for ``kind``: ``window`` for a sliding window."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind != "sliding_window":
        return None
    return check_int("window", DEFAULT_WINDOW if window is None else window, 1)


def kind_label(kind: str, window: int | None = None) -> str:
    """``"full"``, ``"sliding window 4096"``, ``"linear"``: how the figures name an attention kind."""
    w = _window_for(kind, window)
    return f"sliding window {w}" if w is not None else kind


def _check_lengths(lengths: Sequence[int]) -> list[int]:
    if isinstance(lengths, str | bytes) or not isinstance(lengths, Sequence) or not lengths:
        raise ValueError(f"lengths must be a non-empty sequence of integers >= 1, got {lengths!r}")
    return [check_int("length", T, 1) for T in lengths]


# ---------------------------------------------------------------------------------------------- FLOPs
@dataclass(frozen=True)
class FlopsRow:
    """Forward FLOPs of one layer on ``T`` tokens with attention ``kind``: the dense part (projections and
    MLP, ~T d^2), the token mixing (``attention``) and the mixing's share of the layer."""

    T: int
    kind: str
    window: int | None
    dense: float
    attention: float
    share: float

    @property
    def total(self) -> float:
        return self.dense + self.attention


def flops_rows(
    shape: CostShape, lengths: Sequence[int], kinds: Sequence[str] = KINDS, *, window: int | None = None
) -> list[FlopsRow]:
    """One :class:`FlopsRow` per length and kind (lengths outer), from :func:`lmlab.attention_cost.layer_flops`.

    ``window`` is the sliding window's (default :data:`DEFAULT_WINDOW`).
    """
    rows = []
    for T in _check_lengths(lengths):
        for kind in kinds:
            w = _window_for(kind, window)
            parts = layer_flops(T, shape, kind, w)
            rows.append(FlopsRow(T, kind, w, parts["dense"], parts["attention"], attention_share(T, shape, kind, w)))
    return rows


def _log_lengths(lo: int, hi: int, n: int = 60) -> list[int]:
    return sorted({int(round(x)) for x in np.geomspace(lo, hi, n)})


def plot_flops_by_part(
    shape: CostShape, *, lo: int = 64, hi: int = 1_000_000, window: int | None = None, ax: Any = None
) -> Any:
    """Per-layer forward FLOPs against T on log-log axes: the dense part and each kind's token mixing.

    The dense part (slope 1) and full attention (slope 2) cross at :func:`crossover_length`, marked.
    """
    ax = new_axes(ax, (6.4, 3.8))
    Ts = _log_lengths(lo, hi)
    ax.plot(Ts, [layer_flops(T, shape)["dense"] for T in Ts], color="black", lw=2,
            label="projections + MLP (~T d²)")  # fmt: skip
    for kind in KINDS:
        w = _window_for(kind, window)
        color, style = KIND_STYLE[kind]
        ax.plot(Ts, [layer_flops(T, shape, kind, w)["attention"] for T in Ts], color=color, ls=style,
                label=f"attention, {kind_label(kind, w)}")  # fmt: skip
    T0 = crossover_length(shape)
    ax.axvline(T0, color="grey", lw=0.8)
    ax.text(T0, 0.04, f" crossover T = {T0:,.0f}", transform=ax.get_xaxis_transform(), fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (tokens)")
    ax.set_ylabel("forward FLOPs of one layer")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax


def plot_attention_share(shapes: Mapping[str, CostShape], *, lo: int = 64, hi: int = 1_000_000, ax: Any = None) -> Any:
    """Full attention's share of a layer's FLOPs against T, one line per named shape, each crossover marked."""
    if not shapes:
        raise ValueError("shapes must name at least one CostShape")
    ax = new_axes(ax, (6.4, 3.4))
    Ts = _log_lengths(lo, hi)
    for name, shape in shapes.items():
        (line,) = ax.plot(Ts, [attention_share(T, shape) for T in Ts], label=f"{name} (d = {shape.n_embd:,})")
        T0 = crossover_length(shape)
        ax.plot([T0], [0.5], "o", color=line.get_color())
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("sequence length T (tokens)")
    ax.set_ylabel("full attention's share of a layer's FLOPs")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax


# ---------------------------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemoryRow:
    """Bytes for one sequence of ``T`` tokens (:func:`lmlab.attention_cost.memory_bytes`): the weights, the
    KV cache (or linear attention's fixed state) and one layer's score matrices, if materialised."""

    T: int
    kind: str
    window: int | None
    weights: float
    cache: float
    scores: float


def memory_rows(
    shape: CostShape, lengths: Sequence[int], kinds: Sequence[str] = KINDS, *, window: int | None = None
) -> list[MemoryRow]:
    """One :class:`MemoryRow` per length and kind (lengths outer)."""
    rows = []
    for T in _check_lengths(lengths):
        for kind in kinds:
            w = _window_for(kind, window)
            m = memory_bytes(T, shape, kind, w)
            rows.append(MemoryRow(T, kind, w, m["weights"], m["cache"], m["scores"]))
    return rows


def plot_memory(
    shape: CostShape,
    *,
    lo: int = 256,
    hi: int = 1_000_000,
    window: int | None = None,
    gpus: Mapping[str, float] | None = None,
    ax: Any = None,
) -> Any:
    """Bytes against T on log-log axes: the weights (flat), the KV cache and one layer's explicit score
    matrices of each kind (a linear-attention state is flat, it has no scores). ``gpus`` ({name: GB})
    draws each GPU's memory as a horizontal line."""
    ax = new_axes(ax, (6.4, 3.8))
    Ts = _log_lengths(lo, hi)
    ax.plot(Ts, [memory_bytes(T, shape)["weights"] for T in Ts], color="black", lw=2, label="weights")
    for kind in KINDS:
        w = _window_for(kind, window)
        color, _ = KIND_STYLE[kind]
        ms = [memory_bytes(T, shape, kind, w) for T in Ts]
        ax.plot(Ts, [m["cache"] for m in ms], color=color, ls="-", label=f"KV cache / state, {kind_label(kind, w)}")
        if kind != "linear":
            ax.plot(
                Ts, [m["scores"] for m in ms], color=color, ls="--", label=f"one layer's scores, {kind_label(kind, w)}"
            )
    for name, gb in (gpus or {}).items():
        ax.axhline(gb * 1e9, color="grey", lw=0.8, ls="-.")
        ax.annotate(name, (Ts[-1], gb * 1e9), xytext=(-2, 2), textcoords="offset points", fontsize=7, color="grey",
                    ha="right")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (tokens)")
    ax.set_ylabel(f"bytes ({shape.bytes_per_value} per value)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, which="both")
    return ax


# ---------------------------------------------------------------------------------------------- measured
# What the lesson times: full attention and a sliding window, each computed two ways, and linear attention.
# "naive" computes the whole T x T score matrix (masked for the window); "sdpa" is PyTorch's fused kernel for
# full attention, and for the window lmlab's blocks of `window` queries that each meet 2 * window keys.
SWEEP_VARIANTS: dict[str, dict[str, Any]] = {
    "full, explicit T x T scores": {"kind": "full", "attention_impl": "naive"},
    "full, fused kernel (SDPA)": {"kind": "full", "attention_impl": "sdpa"},
    "window 128, masked T x T": {"kind": "sliding_window", "window": 128, "attention_impl": "naive"},
    "window 128, in blocks": {"kind": "sliding_window", "window": 128, "attention_impl": "sdpa"},
    "linear (chunked)": {"kind": "linear", "attention_impl": "sdpa"},
}


def _check_variants(variants: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError("variants must map a label to measure's options, e.g. {'full': {'kind': 'full'}}")
    out = {}
    for label, options in variants.items():
        if not isinstance(options, Mapping) or "kind" not in options:
            raise ValueError(f"variant {label!r} must be a dict with at least a 'kind', got {options!r}")
        unknown = set(options) - {"kind", "window", "attention_impl"}
        if unknown:
            raise ValueError(f"variant {label!r}: unknown options {sorted(unknown)}; use kind, window, attention_impl")
        out[str(label)] = dict(options)
    return out


def time_sweep(
    lengths: Sequence[int],
    variants: Mapping[str, Mapping[str, Any]] = SWEEP_VARIANTS,
    *,
    shape: CostShape = MEASURE_SHAPE,
    repeats: int = 3,
    threads: int = 1,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, list[Measurement]]:
    """Forward-pass times of each variant at each length: :func:`lmlab.attention_cost.measure` without
    backward and without memory (in this process), ``repeats`` timed passes (median) after one warm-up, on
    ``threads`` torch threads (one by default: steadier times on a shared machine). ``{label: [Measurement]}``."""
    Ts = _check_lengths(lengths)
    return {label: measure(lengths=Ts, shape=shape, repeats=repeats, warmup=1, backward=False, memory=False,
                           seed=seed, threads=threads, device=device, **options)
            for label, options in _check_variants(variants).items()}  # fmt: skip


def memory_sweep(
    lengths: Sequence[int],
    variants: Mapping[str, Mapping[str, Any]],
    *,
    shape: CostShape = MEASURE_SHAPE,
    threads: int = 1,
    seed: int = 0,
) -> dict[str, list[Measurement]]:
    """The measured peak memory of one forward pass of each variant at each length, on the CPU:
    :func:`lmlab.attention_cost.measure` with ``memory=True`` (a child process per length, which takes a
    couple of seconds each) and a single timed pass."""
    Ts = _check_lengths(lengths)
    return {label: measure(lengths=Ts, shape=shape, repeats=1, warmup=0, backward=False, memory=True, seed=seed,
                           threads=threads, device="cpu", **options)
            for label, options in _check_variants(variants).items()}  # fmt: skip


@dataclass(frozen=True)
class SlopeRow:
    """The exponent k of ``value ~ c T^k`` fitted to one variant's measurements, next to the exponent that
    the analytic FLOPs (or bytes) of the same lengths give: ``analytic`` is :func:`fit_exponent` on them."""

    label: str
    kind: str
    lengths: tuple[int, ...]
    measured: PowerLawFit
    analytic: float


def _values(records: Sequence[Measurement], value: str) -> list[float]:
    if value == "forward_seconds":
        return [r.forward_seconds for r in records]
    if value == "peak_memory_bytes":
        out = [r.peak_memory_bytes for r in records]
        if any(v is None for v in out):
            raise ValueError("these measurements hold no memory: take them with memory_sweep")
        return [max(float(v), 1.0) for v in out]  # a pass that allocates nothing measurable reads as 1 byte
    raise ValueError(f"value must be 'forward_seconds' or 'peak_memory_bytes', got {value!r}")


def _analytic(r: Measurement, shape: CostShape, value: str) -> float:
    """The analytic count that ``value`` should follow: FLOPs for time; for memory, the T-dependent bytes of
    what the implementation holds (score matrices if it materialises them, else the cache or state)."""
    if value == "forward_seconds":
        return model_flops(r.length, shape, r.kind, r.window)
    m = memory_bytes(r.length, shape, r.kind, r.window)
    explicit = r.attention_impl == "naive" and r.kind != "linear"
    return m["scores"] if explicit else m["cache"] + r.length * shape.n_embd * shape.bytes_per_value


def slope_rows(
    sweep: Mapping[str, Sequence[Measurement]],
    *,
    shape: CostShape = MEASURE_SHAPE,
    min_length: int | None = None,
    value: str = "forward_seconds",
) -> list[SlopeRow]:
    """For each variant, the log-log slope of ``value`` (``"forward_seconds"`` or ``"peak_memory_bytes"``)
    over the lengths >= ``min_length`` (default: past :func:`crossover_length` of ``shape``), and the slope
    of the analytic count over the same lengths: :func:`lmlab.attention_cost.model_flops` for time; for
    memory, one layer's T x T scores for an explicit implementation, else the cache and one layer's
    activations, linear in T. Needs at least 3 such lengths per variant (for the fit's interval)."""
    lo = crossover_length(shape) if min_length is None else check_int("min_length", min_length, 1)
    rows = []
    for label, records in sweep.items():
        kept = [r for r in records if r.length >= lo]
        if len(kept) < 3:
            raise ValueError(f"{label!r}: only {len(kept)} lengths >= {lo:,.0f}; a fitted slope needs at least 3")
        Ts = [r.length for r in kept]
        measured = fit_exponent(Ts, _values(kept, value))
        analytic = fit_exponent(Ts, [_analytic(r, shape, value) for r in kept]).exponent
        rows.append(SlopeRow(label, kept[0].kind, tuple(Ts), measured, analytic))
    return rows


def plot_sweep(
    sweep: Mapping[str, Sequence[Measurement]],
    slopes: Sequence[SlopeRow] = (),
    *,
    value: str = "forward_seconds",
    ax: Any = None,
) -> Any:
    """The measurements on log-log axes, one colour per variant, each with its fitted power law (over the
    lengths it was fitted on) and its slope in the legend."""
    ax = new_axes(ax, (6.4, 3.8))
    fits = {row.label: row for row in slopes}
    for label, records in sweep.items():
        Ts = [r.length for r in records]
        (pts,) = ax.plot(Ts, _values(records, value), "o", ms=4)
        row = fits.get(label)
        if row is None:
            pts.set_label(label)
        elif value == "forward_seconds":
            pts.set_label(f"{label}: slope {row.measured.exponent:.2f} (FLOPs {row.analytic:.2f})")
        else:
            pts.set_label(f"{label}: slope {row.measured.exponent:.2f}")
        if row is not None:
            xs = np.geomspace(min(row.lengths), max(row.lengths), 20)
            ax.plot(xs, [row.measured.predict(x) for x in xs], "-", color=pts.get_color(), lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (tokens)")
    ax.set_ylabel("seconds per forward pass" if value == "forward_seconds" else "peak memory of a pass (bytes)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return ax


# ---------------------------------------------------------------------------------------------- generation
def token_cost(t: int, shape: CostShape, kind: str = "full", window: int | None = None) -> dict[str, float]:
    """What generating the token at position ``t`` (1-based: ``t - 1`` tokens before it) costs with a cache.

    ``flops``: L (2 N_layer + 4 keys d) + 2 d V, the new token through every layer's weights (2 FLOPs per
    weight), its query against ``keys`` cached keys and values (``t``; ``min(window, t)`` for a sliding
    window, default :data:`DEFAULT_WINDOW`; for linear attention the (hs, hs) state update and read,
    ``hs``) and the output layer.
    ``bytes_read``: the weights and the cache held at that point, each read once (on a GPU decoding is
    limited by these reads: Pope et al. 2023, sec. 2). Summed over t = 1..T, ``flops`` is
    :func:`lmlab.attention_cost.book_cost` ``(T).with_cache.flops``.
    """
    check_int("t", t, 1)
    w = _window_for(kind, window)
    keys = {"full": t, "sliding_window": min(w or t, t), "linear": shape.head_size}[kind]
    L, d = shape.n_layer, shape.n_embd
    flops = L * (layer_flops(1, shape)["dense"] + 4.0 * keys * d) + 2.0 * d * shape.vocab_size
    m = memory_bytes(t, shape, kind, w)
    return {"flops": float(flops), "bytes_read": m["weights"] + m["cache"]}


def plot_token_cost(
    shape: CostShape,
    *,
    hi: int = 1_000_000,
    window: int | None = None,
    bandwidth_bytes_per_second: float | None = None,
    ax: Any = None,
) -> Any:
    """Bytes read (or, given a bandwidth, the seconds those reads take) to generate the token at position t,
    against t, per kind: flat weights plus a cache that grows with t for full attention."""
    ax = new_axes(ax, (6.4, 3.4))
    ts = _log_lengths(1, hi)
    scale = 1.0 if bandwidth_bytes_per_second is None else 1.0 / bandwidth_bytes_per_second
    for kind in KINDS:
        w = _window_for(kind, window)
        color, style = KIND_STYLE[kind]
        ax.plot(ts, [token_cost(t, shape, kind, w)["bytes_read"] * scale for t in ts], color=color, ls=style,
                label=kind_label(kind, w))  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("position t of the generated token")
    ax.set_ylabel("bytes read per token" if bandwidth_bytes_per_second is None else "seconds per token (reads)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax


@dataclass(frozen=True)
class GenerationRow:
    """Seconds to generate ``new_tokens`` tokens greedily after the prompt, with and without the KV cache."""

    new_tokens: int
    seconds_cache: float
    seconds_no_cache: float

    @property
    def slowdown(self) -> float:
        return self.seconds_no_cache / self.seconds_cache


def generation_timing(
    model: nn.Module, prompt_ids: Sequence[int], lengths: Sequence[int], *, repeats: int = 1
) -> list[GenerationRow]:
    """Time :func:`lmlab.generation.greedy` for each number of new tokens, with ``use_cache`` True and False
    (median of ``repeats`` runs each). Both give the same tokens; without the cache every step runs the
    model on the whole prefix. ``len(prompt_ids) + max(lengths)`` must fit the model's context limit."""
    prompt = [int(t) for t in prompt_ids]
    check_int("repeats", repeats, 1)
    Ns = _check_lengths(lengths)
    limit = context_limit(model)
    if limit is not None and len(prompt) + max(Ns) > limit:
        raise ValueError(f"prompt ({len(prompt)}) + {max(Ns)} new tokens do not fit the context limit {limit}")
    rows = []
    for n in Ns:
        seconds = {}
        for use_cache in (True, False):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                greedy(model, prompt, max_new_tokens=n, use_cache=use_cache)
                times.append(time.perf_counter() - t0)
            seconds[use_cache] = statistics.median(times)
        rows.append(GenerationRow(n, seconds[True], seconds[False]))
    return rows


def plot_generation(rows: Sequence[GenerationRow], fits: Mapping[str, PowerLawFit] | None = None, *,
                    ax: Any = None) -> Any:  # fmt: skip
    """Seconds to generate n tokens against n on log-log axes, with and without the cache; ``fits``
    ({"cache": fit, "no cache": fit}) puts each fitted slope in the legend."""
    ax = new_axes(ax, (6.0, 3.4))
    fits = fits or {}
    n = [r.new_tokens for r in rows]
    for key, values, marker in (("cache", [r.seconds_cache for r in rows], "o-"),
                                ("no cache", [r.seconds_no_cache for r in rows], "s-")):  # fmt: skip
        label = "with KV cache" if key == "cache" else "without: re-read the prefix"
        if key in fits:
            label += f", slope {fits[key].exponent:.2f}"
        ax.plot(n, values, marker, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens generated")
    ax.set_ylabel("seconds in all")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax


# ---------------------------------------------------------------------------------------------- a whole book
def plot_book_memory(costs: Mapping[str, BookCost], *, ax: Any = None) -> Any:
    """For each model (``{name: book_cost(...)}``), the bytes of reading the book in one pass and of
    generating it with a KV cache, by part, as stacked bars on a log scale, with each GPU's memory as a line.

    One-pass bars hold the weights, one layer's activations and (for an explicit implementation) one
    layer's scores; cached bars the weights and the KV cache after the book.
    """
    if not costs:
        raise ValueError("costs must hold at least one BookCost")
    ax = new_axes(ax, (7.0, 3.8))
    colors = {"weights": "black", "activations": "tab:grey", "scores": "tab:red", "cache": "tab:orange"}
    labels, x, seen = [], 0, set()
    for name, cost in costs.items():
        for scenario, short in ((cost.one_pass, "one pass"), (cost.with_cache, "KV cache")):
            bottom = 1.0
            for part, value in scenario.memory.items():
                if value <= 0:
                    continue
                ax.bar(x, value, bottom=bottom, color=colors.get(part, "tab:purple"), width=0.7,
                       label=None if part in seen else part)  # fmt: skip
                seen.add(part)
                bottom += value
            labels.append(f"{name}\n{short}")
            x += 1
    gpus = next(iter(costs.values())).gpus
    for gpu, capacity in gpus.items():
        ax.axhline(capacity, color="grey", lw=0.8, ls="-.")
        ax.annotate(gpu, (x - 0.5, capacity), xytext=(2, 2), textcoords="offset points", fontsize=7, color="grey",
                    ha="right")  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e8)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("bytes")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3, which="both")
    return ax
