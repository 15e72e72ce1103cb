"""Thin matplotlib pictures of lesson 02's experiments (the numbers come from :mod:`lmlab.lessons.decoding`).

Every function draws on the ``ax`` (or ``axes``) it is given, or on a new figure, and returns what it drew
on, so a notebook cell can combine them and tests can read back what was drawn. matplotlib is imported
when a function is called. The search tree itself is drawn by :func:`lmlab.generation.plot_search_tree`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lmlab.lessons.decoding.experiments import BeamWidthRow, CacheTimingRow, ErrorRecord, LengthRow, QualityRow
from lmlab.plots import new_axes

__all__ = [
    "plot_warp_stages",
    "plot_draws",
    "plot_beam_sweep",
    "plot_search_and_model_errors",
    "plot_lengths",
    "plot_quality_diversity",
    "plot_cache_timing",
]


def plot_warp_stages(
    stages: Mapping[str, torch.Tensor], labels: Sequence[str], *, axes: Any = None, top: int = 12
) -> Any:
    """One bar chart per stage of :func:`lmlab.lessons.decoding.warp_stages`, tokens ranked by the first stage.

    ``labels`` names the V tokens; only the ``top`` most probable under the first stage are drawn. Removed
    tokens (probability 0) are drawn as a grey tick. Returns the array of axes.
    """
    import matplotlib.pyplot as plt

    if not stages:
        raise ValueError("stages must hold at least one distribution")
    names = list(stages)
    first = stages[names[0]]
    if len(labels) != first.numel():
        raise ValueError(f"labels has {len(labels)} names for {first.numel()} tokens")
    order = torch.argsort(first, descending=True, stable=True)[:top].tolist()
    if axes is None:
        _, axes = plt.subplots(1, len(names), figsize=(2.3 * len(names), 2.6), sharey=True)
    axes = np.atleast_1d(axes)
    x = np.arange(len(order))
    for ax, name in zip(axes, names, strict=True):
        p = stages[name][order].double().numpy()
        removed = p == 0
        ax.bar(x[~removed], p[~removed], color="tab:blue")
        ax.plot(x[removed], np.zeros(removed.sum()), "|", color="grey", ms=8)
        ax.set_xticks(x, [labels[i] for i in order], rotation=90, fontsize=7)
        ax.set_title(f"{name}\n{int((~removed).sum())} of {len(order)} kept", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("probability")
    return axes


def plot_draws(
    probs: torch.Tensor, draws: torch.Tensor, labels: Sequence[str], *, ax: Any = None, top: int = 12
) -> Any:
    """Observed frequency of each token in ``draws`` (N,) next to the probability ``probs`` (V,) it was drawn from."""
    ax = new_axes(ax, (6.0, 2.6))
    V = probs.numel()
    order = torch.argsort(probs, descending=True, stable=True)[:top].tolist()
    counts = torch.bincount(draws.flatten(), minlength=V).double() / max(draws.numel(), 1)
    x = np.arange(len(order))
    ax.bar(x - 0.2, probs[order].double().numpy(), width=0.4, label="probability")
    ax.bar(x + 0.2, counts[order].numpy(), width=0.4, label=f"share of {draws.numel()} draws")
    ax.set_xticks(x, [labels[i] for i in order], rotation=90, fontsize=7)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_beam_sweep(rows: Sequence[BeamWidthRow], *, axes: Any = None) -> Any:
    """Left: mean gap to the exact optimum (nats) against beam width; right: the cost (next-token
    distributions computed per prompt) against width, on log-log axes."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    k = [r.num_beams for r in rows]
    axes[0].plot(k, [r.mean_gap for r in rows], "o-")
    for r in rows:
        axes[0].annotate(f"{100 * r.found_optimum:.0f}% optimal", (r.num_beams, r.mean_gap), fontsize=7,
                         textcoords="offset points", xytext=(4, 4))  # fmt: skip
    axes[0].set_ylabel("log p(optimum) - log p(found), nats")
    axes[0].set_title("search error: how far below the most probable")
    axes[1].plot(k, [r.expansions for r in rows], "o-", color="tab:orange")
    axes[1].set_ylabel("next-token distributions per prompt")
    axes[1].set_yscale("log")
    axes[1].set_title("cost (grows in proportion to the width)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(k, [str(v) for v in k])
        ax.set_xlabel("beam width")
        ax.grid(alpha=0.3)
    return axes


def plot_search_and_model_errors(records: Sequence[ErrorRecord], *, axes: Any = None) -> Any:
    """The two kinds of error of :func:`lmlab.lessons.decoding.error_records`, one point per prompt.

    Left, judged by the model: each decoder's output (up) against the model's most probable continuation
    (across); a point below the diagonal is a search error. Right, judged by the truth: exact search's output,
    the model's best (up), against the truth's most probable continuation (across); a point below the
    diagonal is a model error. Legends count the points below. Returns the two axes.
    """
    import matplotlib.pyplot as plt

    records = list(records)
    if not records:
        raise ValueError("records must hold at least one record")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 4))
    decoders = list(dict.fromkeys(r.decoder for r in records))
    searchers = [d for d in decoders if d != "exact"]
    for d, marker in zip(searchers, "o^sDv<>p" * len(searchers), strict=False):
        rs = [r for r in records if r.decoder == d]
        below = sum(r.search_error for r in rs)
        axes[0].scatter([r.model_best for r in rs], [r.model_logprob for r in rs], marker=marker, alpha=0.6,
                        label=f"{d}: {below} of {len(rs)} below")  # fmt: skip
    exact = [r for r in records if r.decoder == "exact"]
    wrong = sum(not r.truth_best for r in exact)
    axes[1].scatter([r.true_best for r in exact], [r.true_logprob for r in exact], color="tab:red", alpha=0.7,
                    label=f"exact search: {wrong} of {len(exact)} below")  # fmt: skip
    titles = ["search error: judged by the model", "model error: judged by the truth"]
    xlabels = ["log p_model of the model's best (nats)", "log p_true of the truth's best (nats)"]
    ylabels = ["log p_model of the decoder's output", "log p_true of the model's best"]
    for ax, title, xl, yl in zip(axes, titles, xlabels, ylabels, strict=True):
        lo = min(min(c.get_offsets()[:, 1].min(), c.get_offsets()[:, 0].min()) for c in ax.collections)
        hi = max(max(c.get_offsets()[:, 1].max(), c.get_offsets()[:, 0].max()) for c in ax.collections)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="no error (the diagonal)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return axes


def plot_lengths(
    rows: Sequence[LengthRow],
    *,
    reference: str = "sampling",
    reference_label: str | None = None,
    axes: Any = None,
    bin_width: int = 2,
    max_length: int | None = None,
) -> Any:
    """Histograms of the output lengths of :func:`lmlab.lessons.decoding.length_study`: one panel per decoder.

    Every panel draws the row named ``reference`` (by default "sampling": with the true model, the language's
    own sentence endings) as grey bars, labelled ``reference_label``, and one other row in colour, each as the
    share of its outputs in bins of ``bin_width`` tokens up to ``max_length`` (by default the longest output).
    Returns the array of axes, one per row other than the reference, in the rows' order.
    """
    import matplotlib.pyplot as plt

    rows = list(rows)
    names = [r.decoder for r in rows]
    if reference not in names:
        raise ValueError(f"no row named {reference!r}; the rows are {names}")
    if any(not r.lengths for r in rows):
        raise ValueError("every row needs its lengths (rows from length_study)")
    if not isinstance(bin_width, int) or bin_width < 1:
        raise ValueError(f"bin_width must be an integer >= 1, got {bin_width!r}")
    ref = rows[names.index(reference)]
    others = [r for r in rows if r is not ref]
    if axes is None:
        _, axes = plt.subplots(1, len(others), figsize=(3.2 * len(others), 2.8), sharex=True, squeeze=False)
        axes = axes[0]
    axes = np.atleast_1d(axes)
    top = max_length or max(max(r.lengths) for r in rows)
    bins = np.arange(0.5, top + bin_width + 0.5, bin_width)

    def share(r: LengthRow) -> np.ndarray:
        return np.full(len(r.lengths), 1 / len(r.lengths))

    label = reference_label or reference
    for ax, r, color in zip(axes, others, plt.rcParams["axes.prop_cycle"].by_key()["color"] * len(others),
                            strict=False):  # fmt: skip
        ax.hist(ref.lengths, bins=bins, weights=share(ref), color="lightgrey",
                label=f"{label}: mean {ref.mean_length:.1f}")  # fmt: skip
        ax.hist(r.lengths, bins=bins, weights=share(r), color=color, alpha=0.6,
                label=f"{r.decoder}: mean {r.mean_length:.1f}")  # fmt: skip
        ax.set_title(r.decoder, fontsize=9)
        ax.set_xlabel("generated tokens, end included", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of the outputs")
    return axes


def plot_quality_diversity(
    rows: Sequence[QualityRow], *, reference: tuple[float, float] | None = None, ax: Any = None,
    n: int = 3,
) -> Any:
    """Each setting as a point: diversity (distinct-n) across, quality (true log-prob per token) up.

    Rows whose setting names share a first word ("temperature 0.5", "temperature 1.0") are joined by a line.
    ``reference`` = (quality, diversity) of samples of the true source, drawn as a star.
    """
    ax = new_axes(ax, (6.5, 4.0))
    groups: dict[str, list[QualityRow]] = {}
    for r in rows:
        groups.setdefault(r.setting.split()[0], []).append(r)
    for name, rs in groups.items():
        line = ax.plot([r.distinct for r in rs], [r.true_logprob_per_token for r in rs], "o-", label=name)[0]
        for r in rs:
            ax.annotate(r.setting.split(maxsplit=1)[-1], (r.distinct, r.true_logprob_per_token), fontsize=7,
                        color=line.get_color(), textcoords="offset points", xytext=(4, -8))  # fmt: skip
    if reference is not None:
        ax.plot(reference[1], reference[0], "*", ms=14, color="black", label="the true source's own samples")
    ax.set_xlabel(f"diversity: distinct {n}-grams / all {n}-grams")
    ax.set_ylabel("quality: true log p per token (nats)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_cache_timing(rows: Sequence[CacheTimingRow], *, ax: Any = None) -> Any:
    """Milliseconds per generated token against the number of new tokens, with and without the KV cache."""
    ax = new_axes(ax, (6.0, 3.4))
    n = [r.new_tokens for r in rows]
    ax.plot(n, [r.ms_per_token_cache for r in rows], "o-", label="with KV cache")
    ax.plot(n, [r.ms_per_token_no_cache for r in rows], "s-", label="without: re-read the prefix")
    ax.set_xlabel("new tokens generated")
    ax.set_ylabel("ms per generated token")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax
