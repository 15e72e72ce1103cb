"""Lesson 01's figures: next-token distributions, a bigram fit, a learning-rate sweep, a running product,
an attention map.

Each draws on the ``ax`` it is given (or a new one) and returns it; the numbers come from the lesson's
experiments (:mod:`lmlab.lessons.objective.experiments`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lmlab.plots import new_axes

__all__ = ["plot_next_tokens", "plot_bigram_fit", "plot_lr_sweep", "plot_running_product", "plot_attention"]


def plot_next_tokens(
    labels: Sequence[str],
    probs: Mapping[str, Sequence[float]] | Sequence[float],
    *,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Bar chart of next-token probabilities: one group of bars per token in ``labels``, one bar per model.

    ``probs`` is one list of probabilities (one per label) or ``{model name: list}``; see
    :func:`lmlab.lessons.objective.compare_next_tokens` for a ready-made input.
    """
    series = dict(probs) if isinstance(probs, Mapping) else {"p": list(probs)}
    for name, p in series.items():
        if len(p) != len(labels):
            raise ValueError(f"{name!r} has {len(p)} probabilities for {len(labels)} labels")
    ax = new_axes(ax, figsize=(max(4.0, 0.6 * len(labels) * max(1, len(series))), 3.0))
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for i, (name, p) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [float(v) for v in p], width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels([repr(s)[1:-1] if s.isprintable() and s.strip() else repr(s) for s in labels])
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    if len(series) > 1:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_bigram_fit(
    reference: torch.Tensor,
    fitted: torch.Tensor,
    *,
    ax: Any = None,
    xlabel: str = "count-based MLE",
    ylabel: str = "gradient descent",
) -> Any:
    """Scatter of two (V, V) bigram tables entry by entry against the diagonal y = x: on the line, the two
    give every next-token probability the same value."""
    a = torch.as_tensor(reference).detach().double().flatten().cpu().numpy()
    b = torch.as_tensor(fitted).detach().double().flatten().cpu().numpy()
    if a.shape != b.shape:
        raise ValueError(f"the tables have different sizes: {a.size} and {b.size} entries")
    ax = new_axes(ax, figsize=(3.6, 3.6))
    ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", label="y = x")
    ax.scatter(a, b, s=12, alpha=0.7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    return ax


def plot_lr_sweep(
    results: Mapping[float, Sequence[float]],
    *,
    highlight: float | None = None,
    ax: Any = None,
    ymax: float | None = None,
) -> Any:
    """Training-loss curves of a learning-rate sweep (``{lr: losses}``, see :func:`lmlab.lessons.objective.lr_sweep`).

    The ``highlight``-ed run is drawn bold and the others faint. Losses above ``ymax`` (default: twice the
    first loss) are drawn at the top edge, marked with a triangle, so one diverging run does not squash the
    others.
    """
    if not results:
        raise ValueError("results is empty")
    if highlight is not None and highlight not in results:
        raise ValueError(f"highlight {highlight!r} is not one of the learning rates {list(results)}")
    first = [v[0] for v in results.values() if len(v)]
    top = ymax if ymax is not None else 2.0 * max(first) if first else 10.0
    ax = new_axes(ax)
    cmap = _cmap(len(results))
    for i, (lr, losses) in enumerate(results.items()):
        y = np.asarray(losses, dtype=float)
        y = np.where(np.isfinite(y), y, np.inf)
        clipped = np.minimum(y, top)
        bold = highlight is None or lr == highlight
        steps = np.arange(1, len(y) + 1)
        style = dict(color=cmap(i), lw=2.0 if bold else 1.0, alpha=1.0 if bold else 0.3)
        ax.plot(steps, clipped, label=f"lr = {lr:g}", **style)
        over = y > top
        if over.any():
            ax.plot(steps[over], np.full(over.sum(), top), "^", color=cmap(i), ms=4, alpha=1.0 if bold else 0.3)
    ax.set_ylim(top=top * 1.03)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss (nats per token)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return ax


def _cmap(n: int) -> Any:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return lambda i: cmap(0.9 * i / max(1, n - 1))


def plot_running_product(probs: Any, *, ax: Any = None) -> Any:
    """log10 of the running product of ``probs`` computed three ways: multiplied in float32, in float64,
    and as a running sum of logs (float64). Where a product underflows to exactly 0 its curve stops."""
    p = torch.as_tensor(probs, dtype=torch.float64).flatten()
    if p.numel() == 0 or bool(((p <= 0) | (p > 1)).any()):
        raise ValueError("probs must be a non-empty list of probabilities in (0, 1]")
    ax = new_axes(ax)
    n = np.arange(1, p.numel() + 1)
    for dtype, width in ((torch.float64, 2.0), (torch.float32, 4.0)):  # float32 on top: it stops first
        prod = torch.cumprod(p.to(dtype), 0).double().numpy()
        with np.errstate(divide="ignore"):
            y = np.where(prod > 0, np.log10(np.where(prod > 0, prod, 1.0)), np.nan)
        first_zero = int(np.argmax(prod == 0)) + 1 if (prod == 0).any() else None
        label = f"product in {str(dtype).split('.')[-1]}" + (f" (0.0 from token {first_zero})" if first_zero else "")
        ax.plot(n, y, lw=width, alpha=0.8, label=label)
    log_sum = torch.cumsum(torch.log(p), 0).numpy() / math.log(10)
    ax.plot(n, log_sum, "k--", lw=1.2, label="sum of logs (float64)")
    ax.set_xlabel("number of tokens n")
    ax.set_ylabel("log10 p(x_1 .. x_n)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def _label(token: str) -> str:
    return {"\n": "\\n", " ": "␣", "\t": "\\t"}.get(token, token)


def plot_attention(labels: Sequence[str], weights: Any, *, ax: Any = None, title: str | None = None) -> Any:
    """Heatmap of one head's attention weights (T, T): row t = where position t looks, column s = position s.

    ``labels`` are the T tokens (spaces drawn as ␣); :func:`lmlab.lessons.objective.attention_map` gives
    both. Weights are on a 0 to 1 colour scale; the empty upper triangle is the causal mask.
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] != len(labels):
        raise ValueError(f"weights must have shape (T, T) with T = len(labels) = {len(labels)}, got {w.shape}")
    T = len(labels)
    size = min(7.0, max(3.0, 0.28 * T + 1.5))
    ax = new_axes(ax, figsize=(size + 0.8, size))
    image = ax.imshow(np.where(np.triu(np.ones_like(w), 1) > 0, np.nan, w), vmin=0.0, vmax=1.0, cmap="viridis")
    ticks = [_label(t) for t in labels]
    ax.set_xticks(range(T))
    ax.set_xticklabels(ticks, fontsize=7)
    ax.set_yticks(range(T))
    ax.set_yticklabels(ticks, fontsize=7)
    ax.set_xlabel("position looked at (key)")
    ax.set_ylabel("position looking (query)")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    if title:
        ax.set_title(title)
    return ax
