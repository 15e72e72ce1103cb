"""Lesson 04's figures: a grid's loss against N, D and C on log-log axes, IsoFLOP curves, the mixture run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lmlab.lessons.scaling.experiments import MixtureRow, frontier, grid_arrays
from lmlab.scaling import ChinchillaLaw, IsoflopResult, PowerLaw, SweepRecord

__all__ = ["plot_grid", "plot_isoflop", "plot_mixture"]


def _log_axes(ax: Any, xlabel: str, ylabel: str | None = None) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")


def plot_grid(
    records: Sequence[SweepRecord],
    *,
    params: str = "non-embedding",
    live: Sequence[SweepRecord] = (),
    entropy: float | None = None,
    fit: PowerLaw | None = None,
    title: str = "",
) -> None:
    """Three log-log panels of validation loss (nats per token): against N at each budget, against D for
    each shape, and against the compute C with the frontier (the best run of each budget) marked. ``live``:
    the student's own runs, drawn as black crosses; ``entropy``: the floor, dashed; ``fit``: a power law of C
    drawn over the frontier."""
    import matplotlib.pyplot as plt

    cols = grid_arrays(records, params)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    budgets = sorted(set(cols["budget"]))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(budgets)))
    for b, c in zip(budgets, colors, strict=True):
        m = cols["budget"] == b
        order = np.argsort(cols["N"][m])
        axes[0].plot(cols["N"][m][order], cols["loss"][m][order], "o-", color=c, ms=4, label=f"C = {b:.0e}")
    shapes = sorted({(r.n_layer, r.n_embd, r.n_head) for r in records}, key=lambda s: (s[1], s[0]))
    shape_colors = plt.cm.plasma(np.linspace(0, 0.85, len(shapes)))
    for s, c in zip(shapes, shape_colors, strict=True):
        rs = sorted((r for r in records if (r.n_layer, r.n_embd, r.n_head) == s), key=lambda r: r.tokens)
        n = rs[0].n_params if params == "non-embedding" else rs[0].n_params_total
        label = f"L{s[0]}-d{s[1]} ({n / 1e3:.0f}k)"
        axes[1].plot([r.tokens for r in rs], [r.loss for r in rs], "o-", color=c, ms=4, label=label)
        axes[2].plot([r.flops for r in rs], [r.loss for r in rs], "o-", color=c, ms=3, alpha=0.6, label=label)
    best = frontier(records)
    axes[2].plot([r.flops for r in best], [r.loss for r in best], "k*", ms=10, label="frontier")
    if fit is not None:
        cs = np.geomspace(min(r.flops for r in best) / 2, max(r.flops for r in best) * 2, 50)
        axes[2].plot(cs, fit.predict(cs), "k--", lw=1, label=f"fit, slope {fit.exponent:.3f}")
    if live:
        lc = grid_arrays(live, params)
        axes[0].plot(lc["N"], lc["loss"], "kx", ms=7, label="your runs")
        axes[1].plot(lc["D"], lc["loss"], "kx", ms=7, label="your runs")
        axes[2].plot(lc["C"], lc["loss"], "kx", ms=7, label="your runs")
    if entropy is not None:
        for ax in axes:
            ax.axhline(entropy, color="red", ls=":", lw=1)
        axes[0].annotate("entropy rate", (axes[0].get_xlim()[0], entropy), xytext=(3, 3),
                         textcoords="offset points", fontsize=8, color="red")  # fmt: skip
    _log_axes(axes[0], f"N, {params} parameters", "validation loss (nats/token)")
    _log_axes(axes[1], "D, training tokens")
    _log_axes(axes[2], "C, training FLOPs")
    for ax in axes:
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.show()


def plot_isoflop(records: Sequence[SweepRecord], result: IsoflopResult, *, params: str = "non-embedding",
                 laws: Sequence[ChinchillaLaw] = ()) -> None:  # fmt: skip
    """Left: loss against N at each budget (an IsoFLOP curve each) with the best N marked. Right: those N_opt
    against C, the fitted line ``N_opt ~ C^a`` and, for each of ``laws``, its own N_opt(C)."""
    import matplotlib.pyplot as plt

    cols = grid_arrays(records, params)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    budgets = sorted(set(cols["budget"]))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(budgets)))
    for b, c in zip(budgets, colors, strict=True):
        m = cols["budget"] == b
        order = np.argsort(cols["N"][m])
        left.plot(cols["N"][m][order], cols["loss"][m][order], "o-", color=c, ms=4, label=f"C = {b:.0e}")
    for p in result.points:
        left.plot(p.n_opt, p.loss_opt, "k*", ms=10)
    _log_axes(left, f"N, {params} parameters", "validation loss (nats/token)")
    left.legend(fontsize=7)
    cs = np.array([p.budget for p in result.points])
    span = np.geomspace(cs.min() / 3, cs.max() * 3, 50)
    right.plot(cs, [p.n_opt for p in result.points], "k*", ms=10, label="best N of each budget")
    right.plot(span, result.n_fit.predict(span), "k--", lw=1, label=f"fit: N_opt ~ C^{result.n_fit.exponent:.2f}")
    for law in laws:
        right.plot(span, law.compute_optimal(span)[0], lw=1, label=f"{law.name}: C^{law.a:.2f}")
    _log_axes(right, "C, training FLOPs", "N_opt")
    right.legend(fontsize=7)
    fig.tight_layout()
    plt.show()


def plot_mixture(rows: Sequence[MixtureRow]) -> None:
    """Loss on each domain, and on a half-and-half mix, against the share of domain A in training."""
    import matplotlib.pyplot as plt

    w = [r.weight_a for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(w, [r.loss_a for r in rows], "o-", color="tab:blue", label="loss on A")
    ax.plot(w, [r.loss_b for r in rows], "s-", color="tab:orange", label="loss on B")
    ax.plot(w, [r.mean_loss for r in rows], "^--", color="grey", label="mean of the two")
    ax.axhline(rows[0].entropy_a, color="tab:blue", ls=":", lw=1, label="entropy of A")
    ax.axhline(rows[0].entropy_b, color="tab:orange", ls=":", lw=1, label="entropy of B")
    ax.set_xlabel("share of domain A in the training data")
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()
