"""Thin matplotlib helpers for the lessons, and a live loss plot for :class:`lmlab.train.Trainer`.

Every ``plot_*`` function draws on the ``ax`` it is given (or on a new figure's axes) and returns the axes,
so a notebook cell can combine them and tests can read back what was drawn. The numbers come from
elsewhere in lmlab; nothing here computes more than an average for smoothing.

:class:`LiveLossPlot` is a Trainer callback: in a notebook it redraws one figure in place while training
runs (at most once per ``min_interval`` seconds); outside a notebook, or in grading mode, it draws once
at the end. matplotlib is imported when a function is called, not when this module is imported.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lmlab.train import Callback, History

__all__ = [
    "plot_history",
    "plot_next_tokens",
    "plot_bigram_fit",
    "plot_lr_sweep",
    "plot_running_product",
    "LiveLossPlot",
]


def _axes(ax: Any = None, figsize: tuple[float, float] = (6.0, 3.5)) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each point (fewer at the start)."""
    x = np.asarray(values, dtype=float)
    if window <= 1 or len(x) == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def _draw_history(
    ax: Any,
    train: Sequence[tuple[int, float]],
    val: Sequence[tuple[int, float]],
    floor: float | None,
    floor_label: str,
    smooth: int,
    title: str | None,
    lines: Mapping[str, float] | None = None,
) -> None:
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.8, label="train loss (each step)")
        if smooth > 1:
            ax.plot(steps, _moving_average(losses, smooth), color="tab:blue", lw=1.5,
                    label=f"train loss (mean of {smooth})")  # fmt: skip
    if val:
        steps, losses = zip(*val, strict=True)
        ax.plot(steps, losses, "o-", color="tab:orange", ms=3, lw=1.5, label="validation loss")
    if floor is not None:
        ax.axhline(floor, color="black", ls="--", lw=1, label=f"{floor_label} = {floor:.3f}")
    for i, (label, value) in enumerate((lines or {}).items()):
        ax.axhline(value, color=f"C{i + 2}", ls=":", lw=1.2, label=f"{label} = {value:.3f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per token)")
    if title:
        ax.set_title(title)
    if train or val or floor is not None or lines:
        ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)


def plot_history(
    history: History | Sequence[Mapping[str, Any]],
    *,
    floor: float | None = None,
    floor_label: str = "entropy rate",
    smooth: int = 20,
    ax: Any = None,
    title: str | None = None,
    lines: Mapping[str, float] | None = None,
) -> Any:
    """Train loss of every step (faint, and its moving average over ``smooth`` steps) and the validation
    loss of every evaluation, against the optimizer step; ``floor`` draws a dashed horizontal line (the
    best possible loss, say) and ``lines`` more dotted ones, ``{label: loss}``. ``history`` is what
    ``Trainer.fit()`` returns (or a list of its records)."""
    train = [(r["step"], r["train_loss"]) for r in history if r.get("kind") == "train"]
    val = [(r["step"], r["val_loss"]) for r in history if r.get("kind") == "eval"]
    ax = _axes(ax)
    _draw_history(ax, train, val, floor, floor_label, smooth, title, lines)
    return ax


def plot_next_tokens(
    labels: Sequence[str],
    probs: Mapping[str, Sequence[float]] | Sequence[float],
    *,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Bar chart of next-token probabilities: one group of bars per token in ``labels``, one bar per model.

    ``probs`` is one list of probabilities (one per label) or ``{model name: list}``; see
    :func:`lmlab.objective.compare_next_tokens` for a ready-made input.
    """
    series = dict(probs) if isinstance(probs, Mapping) else {"p": list(probs)}
    for name, p in series.items():
        if len(p) != len(labels):
            raise ValueError(f"{name!r} has {len(p)} probabilities for {len(labels)} labels")
    ax = _axes(ax, figsize=(max(4.0, 0.6 * len(labels) * max(1, len(series))), 3.0))
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
    ax = _axes(ax, figsize=(3.6, 3.6))
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
    """Training-loss curves of a learning-rate sweep (``{lr: losses}``, see :func:`lmlab.objective.lr_sweep`).

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
    ax = _axes(ax)
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
    ax = _axes(ax)
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


# ---------------------------------------------------------------------------------------------- live plot
def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _grading() -> bool:
    from lmlab.grading import grading_mode

    return grading_mode()


class LiveLossPlot(Callback):
    """A :class:`~lmlab.train.Trainer` callback that plots the train and validation loss as training runs.

    ``Trainer(model, data, callbacks=[LiveLossPlot(floor=h)], max_steps=500).fit()``

    Args:
        floor: draw a dashed line at this loss (for example the entropy rate of the data), or None.
        floor_label: the line's legend text.
        lines: more horizontal reference lines ``{label: loss}``, dotted (e.g. the entropy rate).
        smooth: moving-average window for the train loss.
        live: redraw during training (True), draw once at the end (False), or None: live in a notebook
            unless in grading mode (:func:`lmlab.grading.grading_mode`).
        min_interval: seconds between two redraws while live (drawing costs time; the end is always drawn).
        title: the figure's title.

    After the run ``figure`` is the matplotlib figure (also outside a notebook) and ``train``/``val`` hold
    the (step, loss) pairs that were drawn.
    """

    def __init__(
        self,
        *,
        floor: float | None = None,
        floor_label: str = "entropy rate",
        lines: Mapping[str, float] | None = None,
        smooth: int = 20,
        live: bool | None = None,
        min_interval: float = 1.0,
        title: str | None = None,
        figsize: tuple[float, float] = (6.0, 3.5),
    ) -> None:
        if floor is not None and not math.isfinite(float(floor)):
            raise ValueError(f"floor must be a finite number or None, got {floor!r}")
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0 seconds, got {min_interval!r}")
        self.floor, self.floor_label, self.smooth, self.title = floor, floor_label, int(smooth), title
        self.lines = dict(lines or {})
        self.live = live
        self.min_interval = float(min_interval)
        self.figsize = figsize
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.figure: Any = None
        self._handle: Any = None
        self._last_draw = -math.inf
        self._notebook: bool | None = None

    def _is_live(self) -> bool:
        if self._notebook is None:
            self._notebook = _in_notebook()
        return self.live if self.live is not None else (self._notebook and not _grading())

    def _render(self) -> None:
        from matplotlib.figure import Figure

        if self.figure is None:
            self.figure = Figure(figsize=self.figsize, layout="constrained")  # not registered with pyplot
        self.figure.clear()
        ax = self.figure.add_subplot()
        _draw_history(ax, self.train, self.val, self.floor, self.floor_label, self.smooth, self.title, self.lines)

    def _show(self) -> None:
        """Show the figure as a PNG in the notebook, replacing the previous one (one output, updated)."""
        if not (self._notebook if self._notebook is not None else _in_notebook()):
            return
        from IPython.display import Image, display

        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=90)
        image = Image(data=buf.getvalue(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)

    def _maybe_draw(self) -> None:
        if self._is_live() and time.perf_counter() - self._last_draw >= self.min_interval:
            self._render()
            self._show()
            self._last_draw = time.perf_counter()

    def on_step(self, trainer: Any, record: dict[str, Any]) -> None:
        self.train.append((record["step"], record["train_loss"]))
        self._maybe_draw()

    def on_eval(self, trainer: Any, record: dict[str, Any]) -> None:
        self.val.append((record["step"], record["val_loss"]))
        self._maybe_draw()

    def on_end(self, trainer: Any, history: History) -> None:
        self._render()
        self._show()
