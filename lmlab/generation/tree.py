"""Records of a search: the hypotheses a decoder returns and the tree of prefixes it looked at.

A search strategy (:mod:`lmlab.generation.search`) writes a :class:`SearchTree` as it goes, when asked
for one: the recording sits beside the algorithm and never changes what it returns. :func:`lmlab.plots.plot_search_tree`
draws a tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["STATUSES", "Hypothesis", "SearchNode", "SearchTree", "SearchBudgetExceeded", "TreeRecorder"]

STATUSES = ("expanded", "kept", "pruned", "finished")


@dataclass(frozen=True)
class Hypothesis:
    """One finished sequence: ``tokens`` (prompt + generated, EOS included), its ``score`` and ``logprob``.

    ``logprob`` is the natural-log probability of the generated tokens given the prompt. ``score`` is what the
    search ranked by: ``logprob`` itself for greedy and exact search, ``logprob / generated_length **
    length_penalty`` for beam search.
    """

    tokens: list[int]
    score: float
    logprob: float


@dataclass
class SearchNode:
    """One prefix a search looked at. ``tokens`` are the generated tokens only (the prompt is in the tree)."""

    id: int  # index in SearchTree.nodes
    parent: int | None  # id of the prefix this one extends (None for the root: the prompt alone)
    token: int | None  # the token this node appends (None for the root)
    tokens: tuple[int, ...]  # generated tokens so far
    logprob: float  # log p(tokens | prompt), nats
    score: float  # what the search ranks by (logprob, or the length-penalised score once finished)
    step: int  # len(tokens): the decoding step that produced this node
    status: str  # "expanded", "kept", "pruned" or "finished" (see SearchTree)


@dataclass
class SearchTree:
    """The record of a search: every candidate prefix it considered, in the order it considered them.

    Statuses: ``"expanded"``: the model was run on this prefix (the root, and every node exact search pops);
    ``"kept"``: chosen to continue (greedy's token, beam search's running beams); ``"pruned"``: considered
    and dropped (greedy's runner-up, beam candidates outside the beam); ``"finished"``: a complete hypothesis
    (EOS or the length limit) that entered the result set. ``results`` lists the node ids of the returned
    hypotheses, best first; ``expansions`` counts next-token distributions computed (model calls).
    """

    method: str  # "greedy", "beam" or "exact"
    prompt: list[int]
    nodes: list[SearchNode] = field(default_factory=list)
    results: list[int] = field(default_factory=list)
    expansions: int = 0

    def add(
        self, parent: int | None, token: int | None, tokens: tuple[int, ...], logprob: float, score: float,
        status: str,
    ) -> int:
        """Append a node and return its id."""
        node = SearchNode(len(self.nodes), parent, token, tokens, logprob, score, len(tokens), status)
        self.nodes.append(node)
        return node.id

    def children(self, node_id: int) -> list[SearchNode]:
        """The recorded nodes that extend ``node_id`` by one token."""
        return [n for n in self.nodes if n.parent == node_id]

    def by_status(self, status: str) -> list[SearchNode]:
        """Every node with this status (one of ``STATUSES``)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        return [n for n in self.nodes if n.status == status]

    def path(self, node_id: int) -> list[SearchNode]:
        """The nodes from the root to ``node_id``, root first."""
        out = []
        current: int | None = node_id
        while current is not None:
            out.append(self.nodes[current])
            current = self.nodes[current].parent
        return out[::-1]


class SearchBudgetExceeded(RuntimeError):
    """Exact search ran out of ``max_expansions`` before it could prove which continuation is best.

    ``expansions`` and ``tree`` (the partial record) say how far it got.
    """

    def __init__(self, message: str, expansions: int, tree: SearchTree) -> None:
        super().__init__(message)
        self.expansions = expansions
        self.tree = tree


class TreeRecorder:
    """Writes a :class:`SearchTree` beside a search: the search reports each candidate it looks at.

    A search calls :meth:`add`, :meth:`mark` and :meth:`expanded` whether or not a tree is wanted; with
    ``enabled=False`` these calls keep nothing (``add`` returns -1), so the algorithm is the same either way
    and recording never changes what it returns.
    """

    def __init__(self, method: str, prompt: list[int], *, enabled: bool = True) -> None:
        self.tree: SearchTree | None = SearchTree(method, prompt) if enabled else None

    def add(
        self, parent: int | None, token: int | None, tokens: tuple[int, ...], logprob: float, score: float,
        status: str,
    ) -> int:
        """Record a candidate; returns its node id (-1 when not recording)."""
        return -1 if self.tree is None else self.tree.add(parent, token, tokens, logprob, score, status)

    def mark(self, node: int, status: str) -> None:
        """Change a recorded node's status (for example to "finished")."""
        if self.tree is not None:
            self.tree.nodes[node].status = status

    def expanded(self, n: int = 1) -> None:
        """Count ``n`` next-token distributions computed (model calls)."""
        if self.tree is not None:
            self.tree.expansions += n

    def finish(self, results: list[int]) -> SearchTree | None:
        """Set the returned hypotheses' node ids, best first; returns the tree (None when not recording)."""
        if self.tree is not None:
            self.tree.results = list(results)
        return self.tree
