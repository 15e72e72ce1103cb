"""Lesson 03's widget: move the length and see what a model's attention costs, kind by kind, on a GPU.

:func:`context_cost_explorer` is a thin ipywidgets layer: a length slider (log scale), a model shape, a
GPU and the choice of a fused attention kernel. Its picture is :func:`show_context_cost`, its numbers
:func:`context_cost_rows`, both computed by :func:`lmlab.attention_cost.book_cost`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmlab.attention_cost import BOOK_GPUS, KINDS, SHAPES, CostShape, book_cost
from lmlab.checks import check_int
from lmlab.lessons.long_context.cost import DEFAULT_WINDOW, KIND_STYLE, kind_label
from lmlab.widgets import require_ipywidgets

__all__ = ["ContextCostRow", "context_cost_rows", "show_context_cost", "context_cost_explorer"]


@dataclass(frozen=True)
class ContextCostRow:
    """What one attention kind costs on ``tokens`` tokens, from :func:`lmlab.attention_cost.book_cost`:
    one forward pass over all of them (the prompt, or scoring a text) and generating them with a cache."""

    kind: str
    label: str
    one_pass_bytes: float  # weights + one layer's activations (+ one layer's scores unless fused)
    one_pass_flops: float
    one_pass_seconds: float
    cache_bytes: float  # weights + the KV cache (or the linear state) after the last token
    fits_one_pass: bool
    fits_cache: bool


def _shape(shape: CostShape | str, shapes: Mapping[str, CostShape]) -> CostShape:
    if isinstance(shape, CostShape):
        return shape
    if shape not in shapes:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(shapes)} or pass a CostShape")
    return shapes[shape]


def context_cost_rows(
    tokens: int,
    shape: CostShape | str = "gpt2-small",
    gpu: str = "H100 80 GB",
    *,
    window: int = DEFAULT_WINDOW,
    fused_attention: bool = False,
    shapes: Mapping[str, CostShape] = SHAPES,
    gpus: Mapping[str, float] = BOOK_GPUS,
) -> list[ContextCostRow]:
    """One :class:`ContextCostRow` per attention kind (full, a sliding window of ``window``, linear) for
    ``tokens`` tokens through ``shape`` (a CostShape or a name of ``shapes``), and whether each fits the
    memory of ``gpu`` (a name of ``gpus``, in GB). Times at book_cost's default throughput."""
    check_int("tokens", tokens, 1)
    cost_shape = _shape(shape, shapes)
    if gpu not in gpus:
        raise ValueError(f"unknown gpu {gpu!r}; choose one of {', '.join(gpus)}")
    rows = []
    for kind in KINDS:
        w = window if kind == "sliding_window" else None
        cost = book_cost(tokens, cost_shape, kind=kind, window=w, fused_attention=fused_attention, gpus=gpus)
        rows.append(ContextCostRow(
            kind=kind, label=kind_label(kind, w), one_pass_bytes=cost.one_pass.total_memory,
            one_pass_flops=cost.one_pass.flops, one_pass_seconds=cost.one_pass.seconds,
            cache_bytes=cost.with_cache.total_memory, fits_one_pass=cost.one_pass.fits[gpu],
            fits_cache=cost.with_cache.fits[gpu],
        ))  # fmt: skip
    return rows


def _size(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds * 1e3:.1f} ms"


def show_context_cost(
    tokens: int,
    shape: CostShape | str = "gpt2-small",
    gpu: str = "H100 80 GB",
    *,
    window: int = DEFAULT_WINDOW,
    fused_attention: bool = False,
    shapes: Mapping[str, CostShape] = SHAPES,
    gpus: Mapping[str, float] = BOOK_GPUS,
    lo: int = 1_000,
    hi: int = 2_000_000,
) -> None:
    """Two panels against the length (log-log), one line per kind, the chosen length marked: the memory of
    one pass (solid) and of generating with a cache (dashed) against the GPU's memory, and the time of one
    pass; then the table of :func:`context_cost_rows` at ``tokens``."""
    import matplotlib.pyplot as plt

    rows = context_cost_rows(tokens, shape, gpu, window=window, fused_attention=fused_attention, shapes=shapes,
                             gpus=gpus)  # fmt: skip
    Ts = sorted({int(round(x)) for x in np.geomspace(lo, hi, 40)} | {tokens})
    curves = [context_cost_rows(T, shape, gpu, window=window, fused_attention=fused_attention, shapes=shapes,
                                gpus=gpus) for T in Ts]  # fmt: skip
    fig, (mem_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 3.6))
    for i, row in enumerate(rows):
        color, _ = KIND_STYLE[row.kind]
        mem_ax.plot(Ts, [c[i].one_pass_bytes for c in curves], color=color, label=f"{row.label}, one pass")
        mem_ax.plot(Ts, [c[i].cache_bytes for c in curves], color=color, ls="--", label=f"{row.label}, KV cache")
        time_ax.plot(Ts, [c[i].one_pass_seconds for c in curves], color=color, label=row.label)
    capacity = gpus[gpu] * 1e9
    mem_ax.axhline(capacity, color="black", lw=1, ls="-.")
    mem_ax.annotate(gpu, (Ts[0], capacity), xytext=(2, 3), textcoords="offset points", fontsize=8)
    for ax in (mem_ax, time_ax):
        ax.axvline(tokens, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens read")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    mem_ax.set_ylabel("bytes")
    time_ax.set_ylabel("seconds, one pass")
    name = shape if isinstance(shape, str) else "model"
    fig.suptitle(f"{name}, {tokens:,} tokens" + (", fused attention kernel" if fused_attention else ""), fontsize=10)
    fig.tight_layout()
    plt.show()
    print(f"{'':20}{'one pass: memory':>17}{'FLOPs':>10}{'time':>10}{'fits':>6}   {'KV cache: memory':>17}{'fits':>6}")
    for r in rows:
        print(
            f"{r.label:20}{_size(r.one_pass_bytes):>17}{r.one_pass_flops:10.2e}{_duration(r.one_pass_seconds):>10}"
            f"{'yes' if r.fits_one_pass else 'no':>6}   {_size(r.cache_bytes):>17}{'yes' if r.fits_cache else 'no':>6}"
        )
    print(f"fits: in the {gpus[gpu]:g} GB of one {gpu.split()[0]}, batch 1, nothing else counted")


def context_cost_explorer(
    shapes: Mapping[str, CostShape] = SHAPES,
    gpus: Mapping[str, float] = BOOK_GPUS,
    *,
    tokens: int = 150_000,
    window: int = DEFAULT_WINDOW,
) -> Any:
    """A length slider (1,000 to 2 million tokens, log scale), a model shape, a GPU and a "fused kernel"
    box: the picture and table of :func:`show_context_cost`, redrawn when a control is released."""
    w = require_ipywidgets()
    if not shapes or not gpus:
        raise ValueError("shapes and gpus must each name at least one entry")
    check_int("tokens", tokens, 1)
    style = {"description_width": "initial"}

    def draw(log10_tokens: float, shape: str, gpu: str, fused_attention: bool) -> None:
        show_context_cost(int(round(10**log10_tokens)), shape, gpu, window=window, fused_attention=fused_attention,
                          shapes=shapes, gpus=gpus)  # fmt: skip

    return w.interactive(
        draw,
        log10_tokens=w.FloatSlider(value=round(math.log10(tokens), 2), min=3.0, max=6.3, step=0.05,
                                   description="log10(tokens)", continuous_update=False, style=style),
        shape=w.Dropdown(options=list(shapes), value=next(iter(shapes)), description="model", style=style),
        gpu=w.Dropdown(options=list(gpus), value=list(gpus)[min(1, len(gpus) - 1)], description="GPU", style=style),
        fused_attention=w.Checkbox(value=False, description="fused attention kernel (no T x T scores)", style=style),
    )  # fmt: skip
