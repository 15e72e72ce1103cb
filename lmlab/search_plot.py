"""Drawing the record of a decoding search (:class:`lmlab.decoding.SearchTree`) with matplotlib.

matplotlib is imported inside the function, so ``import lmlab`` never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmlab.decoding import SearchTree

__all__ = ["plot_search_tree", "tree_layout"]

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
