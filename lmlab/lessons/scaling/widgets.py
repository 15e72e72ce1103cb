"""Lesson 04's widget: move a compute budget and see the compute-optimal model under each law.

:func:`budget_explorer` is a thin ipywidgets layer over :func:`show_budget`, whose numbers come from
:func:`lmlab.lessons.scaling.experiments.allocation_rows` (each law's closed form, Hoffmann et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from lmlab.lessons.scaling.experiments import allocation_rows
from lmlab.scaling import PUBLISHED, ChinchillaLaw
from lmlab.widgets import require_ipywidgets

__all__ = ["show_budget", "budget_explorer"]


def _count(x: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def show_budget(C: float, fits: Mapping[str, ChinchillaLaw] | None = None, *, lo: float = 1e12,
                hi: float = 1e25) -> None:  # fmt: skip
    """N_opt and D_opt against C (log-log) for each published law and each of ``fits``, the budget ``C``
    marked; then each law's N_opt, D_opt, tokens per parameter and predicted loss at ``C``."""
    import matplotlib.pyplot as plt

    laws: dict[str, Any] = {law.name: law for law in PUBLISHED.values()}
    laws.update(fits or {})
    span = np.geomspace(lo, hi, 60)
    fig, (n_ax, d_ax) = plt.subplots(1, 2, figsize=(11, 3.4))
    for i, (label, law) in enumerate(laws.items()):
        n, d = law.compute_optimal(span)
        style = "-" if i < len(PUBLISHED) else "--"
        n_ax.plot(span, n, style, label=label)
        d_ax.plot(span, d, style, label=label)
    for ax, what in ((n_ax, "N_opt, parameters"), (d_ax, "D_opt, tokens")):
        ax.axvline(C, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("C, training FLOPs")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"compute-optimal allocation at C = {C:.2e} FLOPs", fontsize=10)
    fig.tight_layout()
    plt.show()
    print(f"{'law':48} {'N_opt':>8} {'D_opt':>8} {'D/N':>7} {'loss':>7}  N counted")
    for r in allocation_rows(C, laws):
        print(f"{r['law'][:48]:48} {_count(r['N_opt']):>8} {_count(r['D_opt']):>8} {r['tokens_per_param']:7.1f} "
              f"{r['loss']:7.3f}  {r['N']}")  # fmt: skip
    print("Each law predicts loss in its own data and tokens: compare the allocations, and losses within a law.")


def budget_explorer(fits: Mapping[str, ChinchillaLaw] | None = None, *, C: float = 1e21) -> Any:
    """A compute-budget slider (1e12 to 1e25 FLOPs, log scale) redrawing :func:`show_budget` for the
    published laws and ``fits`` (label -> your fitted law)."""
    w = require_ipywidgets()
    if not isinstance(C, int | float) or not math.isfinite(C) or not 1e12 <= C <= 1e25:
        raise ValueError(f"C must be a number of FLOPs in [1e12, 1e25], got {C!r}")

    def draw(log10_C: float) -> None:
        show_budget(10**log10_C, fits)

    return w.interactive(
        draw,
        log10_C=w.FloatSlider(value=round(math.log10(C), 1), min=12.0, max=25.0, step=0.1,
                              description="log10(C / FLOPs)", continuous_update=False,
                              style={"description_width": "initial"}),
    )  # fmt: skip
