"""Interactive widgets for the lessons: thin ipywidgets layers over plain lmlab functions.

- :func:`next_token_viewer`: type a context, see the next-token distributions of one or more models
  (logic: :func:`lmlab.objective.compare_next_tokens`, picture: :func:`lmlab.plots.plot_next_tokens`);
- :func:`lr_explorer`: pick a learning rate from a sweep and see its loss curve among the others
  (logic: :func:`lmlab.objective.lr_sweep` and :func:`lmlab.objective.diagnose_run`, picture:
  :func:`lmlab.plots.plot_lr_sweep`);
- :func:`warp_explorer`: move the sampling knobs (temperature, top-k, top-p, min-p) and see the next-token
  distribution after each of them, and draws from the result (logic: :func:`lmlab.decoding_lab.warp_stages`
  and :func:`lmlab.decoding.sample`, picture: :func:`lmlab.decoding_plots.plot_warp_stages`).

Each returns an ``ipywidgets.interactive``: the last expression of a cell shows it. Nothing waits for the
front end: the widget draws once when it is built, and again when a control changes. ipywidgets is a
course extra, imported only when a widget is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from lmlab.objective import compare_next_tokens, diagnose_run
from lmlab.plots import plot_lr_sweep, plot_next_tokens

__all__ = ["next_token_viewer", "lr_explorer", "describe_lr_run", "warp_explorer", "show_warp"]


def _ipywidgets() -> Any:
    try:
        import ipywidgets
    except ImportError as err:
        raise ImportError(
            "lmlab.widgets needs ipywidgets, which comes with the course extras: "
            "pip install ipywidgets (and run the notebook in JupyterLab or Jupyter Notebook)"
        ) from err
    return ipywidgets


def _show_next_tokens(models: Mapping[str, nn.Module], tokenizer: Any, text: str, k: int) -> None:
    import matplotlib.pyplot as plt

    try:
        labels, probs = compare_next_tokens(models, tokenizer, text, k)
    except ValueError as err:  # empty context, unknown word or character: say what to type instead
        print(f"cannot score this context: {err}")
        return
    ax = plot_next_tokens(labels, probs, title=f"next token after {text[-40:]!r}")
    ax.figure.tight_layout()
    plt.show()


def next_token_viewer(
    models: nn.Module | Mapping[str, nn.Module], tokenizer: Any, *, text: str = "", k: int = 8
) -> Any:
    """A text box and a slider: the ``k`` most likely next tokens after the text, for each model.

    ``models``: one model or ``{name: model}`` (bars are ranked by the first); ``tokenizer`` has
    ``encode``/``decode`` (a CharTokenizer, or a MarkovSource, whose tokens are words separated by
    spaces). The distribution is recomputed when you press Enter or leave the box.
    """
    w = _ipywidgets()
    if isinstance(models, nn.Module):
        models = {"model": models}
    if not isinstance(models, Mapping) or not models:
        raise TypeError("models must be a model or a non-empty dict {name: model}")
    models = dict(models)
    return w.interactive(
        lambda text, k: _show_next_tokens(models, tokenizer, text, k),
        text=w.Text(value=text, description="context", continuous_update=False,
                    layout=w.Layout(width="60%")),
        k=w.IntSlider(value=k, min=1, max=20, description="top k", continuous_update=False),
    )  # fmt: skip


def describe_lr_run(results: Mapping[float, Sequence[float]], lr: float) -> str:
    """One line about the run at ``lr`` of a sweep: the verdict of :func:`diagnose_run`, first and last loss."""
    if lr not in results:
        raise ValueError(f"{lr!r} is not one of the learning rates {list(results)}")
    losses = list(results[lr])
    verdict = diagnose_run(losses)
    last = f"{losses[-1]:.3f}" if losses else "-"
    return f"lr = {lr:g}: {verdict} (first loss {losses[0]:.3f}, last {last}, highest {max(losses):.3g})"


def _show_lr(results: Mapping[float, Sequence[float]], lr: float) -> None:
    import matplotlib.pyplot as plt

    print(describe_lr_run(results, lr))
    ax = plot_lr_sweep(results, highlight=lr)
    ax.figure.tight_layout()
    plt.show()


def lr_explorer(results: Mapping[float, Sequence[float]]) -> Any:
    """A slider over the learning rates of a sweep ``{lr: losses}``: the chosen curve in bold among the
    others, and a one-line verdict (:func:`describe_lr_run`)."""
    w = _ipywidgets()
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty dict {lr: losses}, as lmlab.objective.lr_sweep returns")
    lrs = sorted(results)
    middle = lrs[len(lrs) // 2]
    return w.interactive(
        lambda lr: _show_lr(results, lr),
        lr=w.SelectionSlider(options=[(f"{lr:g}", lr) for lr in lrs], value=middle, description="learning rate",
                             continuous_update=False, style={"description_width": "initial"}),
    )  # fmt: skip


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
    """Draw the stages of :func:`lmlab.decoding_lab.warp_stages` after ``prompt_ids``, ``draws`` tokens drawn
    from the last stage next to its probabilities, and three sampled continuations (seeded by ``seed``)."""
    import matplotlib.pyplot as plt

    from lmlab.decoding import _device, sample
    from lmlab.decoding_lab import warp_stages
    from lmlab.decoding_plots import plot_draws, plot_warp_stages

    with torch.inference_mode():
        logits = model(torch.tensor([list(prompt_ids)], device=_device(model))).logits[0, -1].cpu()
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
    w = _ipywidgets()
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
