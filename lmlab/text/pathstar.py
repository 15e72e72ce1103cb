"""Path-star graphs: a planning task on which next-token training is known to fail.

Bachmann & Nagarajan (2024), "The Pitfalls of Next-Token Prediction" (sec. 4): a star graph has a centre
and ``degree`` arms, each a path of ``arm_length`` nodes leading away from it. A sequence lists the graph's
edges in random order, then asks for the path from the centre to one arm's end (the goal), and the answer
is that path:

    u1 v1 u2 v2 ... uE vE | centre goal = centre p1 p2 ... goal

Node labels are drawn at random from ``0..num_nodes-1`` for every graph; ``|`` is token ``num_nodes`` and
``=`` token ``num_nodes + 1``. Only the answer is scored (targets are IGNORE_INDEX elsewhere).

With teacher forcing every answer token after p1 is easy: it is the one node the edge list gives after the
previous answer token (the "Clever Hans" shortcut of the paper). Only p1, which arm to take, needs a plan:
following the goal's arm backwards to the centre. A model that learns the shortcut and not the plan picks
an arm at random and finds the whole path with probability about 1/degree. With ``reverse=True`` the
answer is written goal first, ``goal ... p1 centre``, where every step is one backward lookup; the paper
shows that this order is learned easily.

Shapes: ``n`` sequences, ``L = seq_len`` tokens each (inputs and targets are the sequence shifted by one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn

from lmlab.checks import as_generator, check_count, model_device
from lmlab.lm import IGNORE_INDEX, eval_mode
from lmlab.text.tasks import SampledTaskData

__all__ = ["PathStar", "PathStarBatch", "PathStarData", "pathstar_accuracy", "PathStarAccuracy"]


class PathStarBatch(NamedTuple):
    """``inputs``/``targets`` (n, L - 1) int64, targets IGNORE_INDEX outside the answer; ``paths`` (n, arm_length
    + 1) the answer in the order it is written."""

    inputs: torch.Tensor
    targets: torch.Tensor
    paths: torch.Tensor


@dataclass(frozen=True)
class PathStar:
    """Path-star graphs with ``degree`` arms of ``arm_length`` nodes, labels from ``0..num_nodes-1``."""

    degree: int = 2
    arm_length: int = 4
    num_nodes: int = 30
    reverse: bool = False

    def __post_init__(self) -> None:
        check_count("degree", self.degree, 2)
        check_count("arm_length", self.arm_length, 1)
        check_count("num_nodes", self.num_nodes, 1)
        if self.num_nodes < self.graph_nodes:
            raise ValueError(f"num_nodes must be at least degree * arm_length + 1 = {self.graph_nodes} (every "
                             f"node of a graph has its own label), got {self.num_nodes}")
        if not isinstance(self.reverse, bool):
            raise TypeError(f"reverse must be a bool, got {type(self.reverse).__name__}")

    @property
    def graph_nodes(self) -> int:
        return self.degree * self.arm_length + 1

    @property
    def bar(self) -> int:
        """The token that ends the edge list."""
        return self.num_nodes

    @property
    def equals(self) -> int:
        """The token after the question, before the answer."""
        return self.num_nodes + 1

    @property
    def vocab_size(self) -> int:
        return self.num_nodes + 2

    @property
    def prompt_len(self) -> int:
        """Tokens before the answer: 2 per edge, ``|``, centre, goal, ``=``."""
        return 2 * self.degree * self.arm_length + 4

    @property
    def answer_len(self) -> int:
        return self.arm_length + 1

    @property
    def seq_len(self) -> int:
        """Length of the model's input (and targets): the whole sequence but its last token."""
        return self.prompt_len + self.answer_len - 1

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> PathStarBatch:
        """``n`` random graphs with their questions and answers (a fresh labelling and goal arm for each)."""
        n = check_count("n", n, 1)
        g = as_generator(generator)
        d, m = self.degree, self.arm_length
        labels = torch.rand(n, self.num_nodes, generator=g).argsort(dim=1)[:, : self.graph_nodes]  # (n, d*m+1)
        centre = labels[:, :1]  # (n, 1)
        arms = labels[:, 1:].reshape(n, d, m)  # (n, d, m): arm a's nodes, from the centre outwards
        starts = torch.cat([centre.expand(n, d)[:, :, None], arms[:, :, :-1]], dim=2)  # (n, d, m): edge sources
        edges = torch.stack([starts, arms], dim=3).reshape(n, d * m, 2)  # (n, E, 2)
        order = torch.rand(n, d * m, generator=g).argsort(dim=1)  # shuffle the edge list
        edges = edges.gather(1, order[:, :, None].expand(-1, -1, 2))
        goal_arm = torch.randint(d, (n,), generator=g)  # (n,)
        path = torch.cat([centre, arms[torch.arange(n), goal_arm]], dim=1)  # (n, m + 1): centre ... goal
        goal = path[:, -1]
        if self.reverse:
            path = path.flip(1)  # goal ... centre
        question = torch.stack([torch.full((n,), self.bar), centre[:, 0], goal, torch.full((n,), self.equals)],
                               dim=1)  # (n, 4): | centre goal =
        seq = torch.cat([edges.reshape(n, -1), question, path], dim=1)  # (n, L + 1)
        inputs, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
        targets[:, : self.prompt_len - 1] = IGNORE_INDEX  # scored: the answer only
        return PathStarBatch(inputs, targets, path)

    def decode(self, seq: torch.Tensor | list[int]) -> str:
        """A sequence as text: node labels, ``|`` and ``=``."""
        ids = seq.tolist() if isinstance(seq, torch.Tensor) else list(seq)
        return " ".join("|" if i == self.bar else "=" if i == self.equals else str(i) for i in ids)


class PathStarAccuracy(NamedTuple):
    """Greedy answers of a model: ``first`` the share with the first step right (the arm: p1, or the node
    before the goal when reversed), ``path`` the share with the whole answer right, ``n`` graphs."""

    first: float
    path: float
    n: int


@torch.no_grad()
def pathstar_accuracy(model: nn.Module, task: PathStar, n: int = 512, *,
                      generator: torch.Generator | int | None = 1234) -> PathStarAccuracy:
    """Decode the answers of ``n`` fresh graphs greedily (no teacher forcing: each answer token is the
    model's own) and score them against the true paths."""
    batch = task.sample(n, generator=generator)
    device = model_device(model)
    seq = batch.inputs[:, : task.prompt_len].to(device)  # (n, prompt_len): the question, up to "="
    with eval_mode(model):
        for _ in range(task.answer_len):
            logits = model(seq).logits[:, -1]  # (n, V)
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    answer = seq[:, task.prompt_len:].cpu()  # (n, answer_len)
    step = 1  # the answer's first token is given by the question (centre, or goal when reversed)
    first = (answer[:, step] == batch.paths[:, step]).float().mean().item()
    whole = (answer == batch.paths).all(dim=1).float().mean().item()
    return PathStarAccuracy(first, whole, n)


class PathStarData(SampledTaskData):
    """Training data for :class:`lmlab.train.Trainer`: fresh graphs at every train step (from the trainer's
    generator), a fixed val set of ``n_val`` graphs from ``seed`` (see
    :class:`~lmlab.text.tasks.SampledTaskData`). ``block_size`` must be ``task.seq_len``."""

    task_type = PathStar
    val_salt = 7

    def __init__(self, task: PathStar, n_val: int = 512, *, seed: int = 0) -> None:
        super().__init__(task, n_val, seed=seed)

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fresh graphs' ``(inputs, targets)``, each (n, L) int64."""
        batch = self.task.sample(n, generator=generator)
        return batch.inputs, batch.targets
