"""matplotlib faces of the library: training curves, a live loss plot for the Trainer, and search trees.

Every ``plot_*`` function draws on the ``ax`` it is given (or on a new figure's axes, :func:`new_axes`) and
returns the axes, so a notebook cell can combine them and tests can read back what was drawn. The numbers
come from elsewhere in lmlab; nothing here computes more than an average for smoothing.

:class:`LiveLossPlot` is a Trainer callback: in a notebook it redraws one figure in place while training
runs (at most once per ``min_interval`` seconds); outside a notebook, or in grading mode, it draws once
at the end. :func:`plot_search_tree` draws a :class:`~lmlab.generation.tree.SearchTree`. matplotlib is
imported when a function is called, not when this module is imported. Each lesson's own figures live in
its module under :mod:`lmlab.lessons`.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lmlab.generation.tree import SearchTree
from lmlab.grading import grading_mode
from lmlab.train import Callback, History

__all__ = ["new_axes", "plot_history", "LiveLossPlot", "plot_search_tree", "tree_layout"]


def new_axes(ax: Any = None, figsize: tuple[float, float] = (6.0, 3.5)) -> Any:
    """``ax`` itself, or the axes of a new matplotlib figure of ``figsize`` inches."""
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
    ax = new_axes(ax)
    _draw_history(ax, train, val, floor, floor_label, smooth, title, lines)
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


# ---------------------------------------------------------------------------------------------- search trees
# status -> (face colour, marker size); finished hypotheses stand out, pruned ones recede
STYLE = {
    "expanded": ("#1f3b73", 40),
    "kept": ("#6a9bd8", 40),
    "pruned": ("#c7c7c7", 20),
    "finished": ("#55a868", 60),
}
MAX_LABELS = 150  # above this many nodes the token labels would overlap: draw markers only


def tree_layout(tree: SearchTree) -> dict[int, tuple[float, float]]:
    """(x, y) of every node: x is the step (tokens generated), y spreads the leaves 0, 1, 2, ... top to
    bottom in the order the search recorded them, and puts each parent at the mean of its children."""
    children: dict[int, list[int]] = {n.id: [] for n in tree.nodes}
    for n in tree.nodes:
        if n.parent is not None:
            children[n.parent].append(n.id)
    pos: dict[int, tuple[float, float]] = {}
    next_leaf = 0.0
    roots = [n.id for n in tree.nodes if n.parent is None]
    # iterative post-order walk (trees from long searches are deeper than Python's recursion limit)
    for root in roots:
        stack: list[tuple[int, bool]] = [(root, False)]
        while stack:
            node, seen = stack.pop()
            kids = children[node]
            if not kids:
                pos[node] = (float(tree.nodes[node].step), next_leaf)
                next_leaf += 1.0
            elif seen:
                ys = [pos[k][1] for k in kids]
                pos[node] = (float(tree.nodes[node].step), sum(ys) / len(ys))
            else:
                stack.append((node, True))
                stack.extend((k, False) for k in reversed(kids))
    return pos


def _token_text(token: int, tokenizer: Any | None) -> str:
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        return str(token)
    text = tokenizer.decode([token])
    return repr(text)[1:-1] if text.strip() == text and text else repr(text)  # show spaces and newlines


def plot_search_tree(tree: SearchTree, tokenizer: Any | None = None, ax: Any | None = None) -> Any:
    """Draw a search tree: one marker per recorded prefix, edges from each prefix to its extensions.

    x is the decoding step, colour the status (dark blue: expanded, light blue: kept, grey: pruned, green:
    finished);
    the returned hypotheses' paths are drawn thick. Each node is labelled with its token (decoded by
    ``tokenizer`` when given) and its log-probability, unless the tree has more than ``MAX_LABELS`` nodes.
    Returns the matplotlib Axes (a new figure's when ``ax`` is None).
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    new_figure = ax is None
    if new_figure:
        width = 2.0 + 1.4 * max((n.step for n in tree.nodes), default=0)
        leaves = len(tree.nodes) - len({n.parent for n in tree.nodes if n.parent is not None})
        _, ax = plt.subplots(figsize=(min(max(width, 5.0), 16.0), min(max(1.0 + 0.35 * leaves, 3.0), 12.0)))
    pos = tree_layout(tree)
    on_result = {node.id for r in tree.results for node in tree.path(r)}

    thin, thick = [], []
    for n in tree.nodes:
        if n.parent is not None:
            segment = [pos[n.parent], pos[n.id]]
            (thick if n.id in on_result else thin).append(segment)
    ax.add_collection(LineCollection(thin, colors="#bbbbbb", linewidths=0.8, zorder=1))
    ax.add_collection(LineCollection(thick, colors="#55a868", linewidths=2.5, zorder=2))
    for status, (colour, size) in STYLE.items():
        pts = [pos[n.id] for n in tree.nodes if n.status == status]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=size, c=colour, edgecolors="black", linewidths=0.4, zorder=3)

    if len(tree.nodes) <= MAX_LABELS:
        for n in tree.nodes:
            x, y = pos[n.id]
            if n.parent is None:
                label = "prompt"
            else:
                label = f"{_token_text(n.token, tokenizer)}  {n.logprob:.2f}"
            ax.annotate(label, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7, zorder=4)

    handles = [
        Line2D([], [], marker="o", linestyle="", markerfacecolor=c, markeredgecolor="black", label=s)
        for s, (c, _) in STYLE.items()
        if any(n.status == s for n in tree.nodes)
    ]
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.set_xlabel("step (tokens generated)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yticks([])
    ax.set_title(f"{tree.method} search: {len(tree.nodes)} nodes, {tree.expansions} expansions")
    ax.autoscale_view()
    xmax = max((p[0] for p in pos.values()), default=0.0)
    ax.set_xlim(-0.3, xmax + 0.9)
    ax.invert_yaxis()  # the first recorded branch on top
    if new_figure:
        ax.figure.tight_layout()
    return ax
