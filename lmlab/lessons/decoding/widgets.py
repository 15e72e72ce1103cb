"""Lesson 02's widget: move the sampling knobs and watch the next-token distribution change.

:func:`warp_explorer` shows the next-token distribution after each knob (temperature, top-k, top-p,
min-p), draws from the result and three sampled continuations (logic:
:func:`~lmlab.lessons.decoding.experiments.warp_stages` and :func:`lmlab.generation.sample`, picture:
:func:`~lmlab.lessons.decoding.plots.plot_warp_stages`); :func:`show_warp` is its picture without controls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from lmlab.checks import model_device
from lmlab.generation import sample
from lmlab.lessons.decoding.experiments import warp_stages
from lmlab.lessons.decoding.plots import plot_draws, plot_warp_stages
from lmlab.widgets import require_ipywidgets

__all__ = ["show_warp", "warp_explorer"]


def show_warp(
    model: nn.Module,
    tokenizer: Any,
    prompt_ids: Sequence[int],
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    draws: int = 200,
    seed: int = 0,
) -> None:
    """Draw the stages of :func:`~lmlab.lessons.decoding.experiments.warp_stages` after ``prompt_ids``,
    ``draws`` tokens drawn from the last stage next to its probabilities, and three sampled continuations
    (seeded by ``seed``)."""
    import matplotlib.pyplot as plt

    with torch.inference_mode():
        logits = model(torch.tensor([list(prompt_ids)], device=model_device(model))).logits[0, -1].cpu()
    options = {"temperature": temperature, "top_k": top_k or None, "top_p": top_p, "min_p": min_p or None}
    stages = warp_stages(logits, **options)
    labels = [tokenizer.decode([i]) for i in range(logits.numel())]
    fig = plt.figure(figsize=(12, 5.6))
    grid = fig.add_gridspec(2, len(stages), height_ratios=[1, 0.9], hspace=0.65)
    axes = [fig.add_subplot(grid[0, i]) for i in range(len(stages))]
    for ax in axes[1:]:
        ax.sharey(axes[0])
    plot_warp_stages(stages, labels, axes=np.array(axes))
    g = torch.Generator().manual_seed(seed)
    final = stages["min-p"]
    drawn = torch.multinomial(final, draws, replacement=True, generator=g)
    plot_draws(final, drawn, labels, ax=fig.add_subplot(grid[1, :]))
    plt.show()
    print(f"after {tokenizer.decode(list(prompt_ids))!r}, three continuations sampled with these settings:")
    for i in range(3):
        out = sample(model, prompt_ids, max_new_tokens=12, generator=torch.Generator().manual_seed(seed + i), **options)
        print("  ...", tokenizer.decode(out[len(prompt_ids):]))


def warp_explorer(model: nn.Module, tokenizer: Any, prompt_ids: Sequence[int], *, draws: int = 200) -> Any:
    """Sliders for temperature, top-k (0: off), top-p (1: off), min-p (0: off) and a seed: the picture of
    :func:`show_warp` for the next token after ``prompt_ids``, redrawn when a slider is released."""
    w = require_ipywidgets()
    V = getattr(model, "vocab_size", None) or 50
    style = {"description_width": "initial"}
    return w.interactive(
        lambda temperature, top_k, top_p, min_p, seed: show_warp(
            model, tokenizer, prompt_ids, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
            draws=draws, seed=seed),
        temperature=w.FloatSlider(value=1.0, min=0.1, max=3.0, step=0.05, description="temperature",
                                  continuous_update=False, style=style),
        top_k=w.IntSlider(value=0, min=0, max=V, description="top-k (0: off)", continuous_update=False, style=style),
        top_p=w.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p (1: off)",
                            continuous_update=False, style=style),
        min_p=w.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05, description="min-p (0: off)",
                            continuous_update=False, style=style),
        seed=w.IntSlider(value=0, min=0, max=99, description="seed", continuous_update=False, style=style),
    )  # fmt: skip
