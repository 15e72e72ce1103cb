"""Lesson 01's widgets: thin ipywidgets layers over the lesson's tested functions.

- :func:`next_token_viewer`: type a context, see the next-token distributions of one or more models
  (logic: :func:`~lmlab.lessons.objective.experiments.compare_next_tokens`, picture:
  :func:`~lmlab.lessons.objective.plots.plot_next_tokens`);
- :func:`lr_explorer`: pick a learning rate from a sweep and see its loss curve among the others (logic:
  :func:`~lmlab.lessons.objective.experiments.lr_sweep` and
  :func:`~lmlab.lessons.objective.experiments.diagnose_run`, picture:
  :func:`~lmlab.lessons.objective.plots.plot_lr_sweep`).

- :func:`attention_viewer`: pick a layer, a head and a text, see where each position looks (logic:
  :func:`~lmlab.lessons.objective.experiments.attention_map`, picture:
  :func:`~lmlab.lessons.objective.plots.plot_attention`).

Each returns an ``ipywidgets.interactive``: the last expression of a cell shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn as nn

from lmlab.lessons.objective.experiments import attention_map, compare_next_tokens, diagnose_run
from lmlab.lessons.objective.plots import plot_attention, plot_lr_sweep, plot_next_tokens
from lmlab.widgets import require_ipywidgets

__all__ = ["next_token_viewer", "lr_explorer", "describe_lr_run", "attention_viewer", "show_attention"]


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
    w = require_ipywidgets()
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
    w = require_ipywidgets()
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty dict {lr: losses}, as lmlab.lessons.objective.lr_sweep returns")
    lrs = sorted(results)
    middle = lrs[len(lrs) // 2]
    return w.interactive(
        lambda lr: _show_lr(results, lr),
        lr=w.SelectionSlider(options=[(f"{lr:g}", lr) for lr in lrs], value=middle, description="learning rate",
                             continuous_update=False, style={"description_width": "initial"}),
    )  # fmt: skip


def show_attention(model: Any, tokenizer: Any, text: str, layer: int = 0, head: int = 0) -> None:
    """Draw one head's attention map of ``text`` (or say why it cannot be drawn)."""
    import matplotlib.pyplot as plt

    try:
        labels, weights = attention_map(model, tokenizer, text, layer=layer, head=head)
    except ValueError as err:  # empty text, unknown character
        print(f"cannot show this text: {err}")
        return
    ax = plot_attention(labels, weights, title=f"layer {layer}, head {head}")
    ax.figure.tight_layout()
    plt.show()


def attention_viewer(model: Any, tokenizer: Any, *, text: str = "", layer: int = 0, head: int = 0) -> Any:
    """A text box and layer/head sliders over :func:`show_attention` for an lmlab GPT."""
    w = require_ipywidgets()
    n_layer, n_head = model.config.n_layer, model.config.n_head
    return w.interactive(
        lambda text, layer, head: show_attention(model, tokenizer, text, layer, head),
        text=w.Text(value=text, description="text", continuous_update=False, layout=w.Layout(width="60%")),
        layer=w.IntSlider(value=layer, min=0, max=n_layer - 1, description="layer", continuous_update=False),
        head=w.IntSlider(value=head, min=0, max=n_head - 1, description="head", continuous_update=False),
    )
