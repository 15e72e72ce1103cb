"""Lesson 05's figures, drawn with matplotlib from the experiments' results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["plot_equal_compute", "plot_pathstar", "plot_speculative"]


def plot_equal_compute(results: dict[str, Sequence[Any]], best: dict[str, float] | None = None,
                       axes: Any = None) -> Any:
    """One panel per data set: the next-token loss of each run (``HeadRun``) against its number of heads,
    with the best possible loss as a line where it is known (``best``: data set name -> nats per token)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.2), squeeze=False)
        axes = axes[0]
    for ax, (name, runs) in zip(axes, results.items(), strict=True):
        labels = [f"{r.n_future} head{'s' if r.n_future > 1 else ''}\n{r.steps} steps" for r in runs]
        ax.bar(labels, [r.next_token_loss for r in runs], color=["C0", *["C1"] * (len(runs) - 1)])
        if best and name in best:
            ax.axhline(best[name], color="k", ls="--", lw=1, label="best possible (entropy rate)")
            ax.legend(loc="lower right")
        low = min(r.next_token_loss for r in runs)
        ax.set_ylim(0.9 * min(low, (best or {}).get(name, low)), None)
        ax.set(title=f"{name}: equal training FLOPs", ylabel="next-token loss (nats per token)")
    return axes


def plot_pathstar(runs: Sequence[dict[str, Any]], degree: int, ax: Any = None) -> Any:
    """Accuracy of each path-star run's greedy answers (first step, whole path), with chance 1/degree."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    names = list(dict.fromkeys(r["name"] for r in runs))
    mean = {key: [np.mean([r[key] for r in runs if r["name"] == n]) for n in names]
            for key in ("first_step", "whole_path")}
    x = np.arange(len(names))
    ax.bar(x - 0.2, mean["first_step"], 0.4, label="first step right")
    ax.bar(x + 0.2, mean["whole_path"], 0.4, label="whole path right")
    ax.axhline(1 / degree, color="k", ls=":", lw=1, label=f"a random arm (1/{degree})")
    ax.set_xticks(x, names)
    ax.set(ylim=(0, 1.05), ylabel="share of new graphs", title="path-star graphs: greedy answers")
    ax.legend(loc="upper left", fontsize=8)
    return ax


def plot_speculative(runs: Sequence[Any], ax: Any = None) -> Any:
    """Tokens per forward pass and acceptance rate against the number of drafts (``SpeculativeRun``)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    drafts = [r.n_draft for r in runs]
    ax.plot(drafts, [r.tokens_per_pass for r in runs], "o-", label="tokens per forward pass")
    ax.plot(drafts, [1 + d for d in drafts], ":", color="0.6", label="every draft accepted")
    ax.set(xlabel="drafts per step", ylabel="tokens per forward pass", title="self-speculative decoding")
    ax.set_xticks(drafts)
    ax.legend(fontsize=8)
    return ax
