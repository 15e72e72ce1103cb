"""Path-star graphs (lmlab.text.pathstar) checked by walking each graph's edge list by brute force."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from lmlab.lm import IGNORE_INDEX, LMOutput
from lmlab.models import GPT, GPTConfig
from lmlab.text.pathstar import PathStar, PathStarData, pathstar_accuracy
from lmlab.train import TrainConfig, Trainer


def parse(task: PathStar, row: torch.Tensor, last: int) -> tuple[dict[int, int], int, int, list[int]]:
    """(edges as child -> parent, centre, goal, answer) of one full sequence (inputs + the last target)."""
    seq = [*row.tolist(), last]
    E = task.degree * task.arm_length
    pairs = [(seq[2 * i], seq[2 * i + 1]) for i in range(E)]
    bar, centre, goal, eq = seq[2 * E: 2 * E + 4]
    assert (bar, eq) == (task.bar, task.equals)
    parent = {v: u for u, v in pairs}
    assert len(parent) == E, "every node but the centre has exactly one incoming edge"
    return parent, centre, goal, seq[2 * E + 4:]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("degree, arm_length, num_nodes", [(2, 1, 3), (2, 4, 9), (3, 3, 20), (5, 2, 30)])
def test_each_sequence_is_a_star_and_its_answer_the_goal_path(degree, arm_length, num_nodes, reverse):
    task = PathStar(degree, arm_length, num_nodes, reverse=reverse)
    batch = task.sample(64, generator=3)
    assert batch.inputs.shape == batch.targets.shape == (64, task.seq_len)
    assert batch.paths.shape == (64, arm_length + 1)
    goals = []
    for i in range(64):
        parent, centre, goal, answer = parse(task, batch.inputs[i], int(batch.targets[i, -1]))
        labels = set(parent) | {centre}
        assert len(labels) == task.graph_nodes and labels <= set(range(num_nodes))
        # walking back from every leaf reaches the centre in arm_length steps: a star of equal arms
        leaves = set(parent) - set(parent.values())
        assert len(leaves) == degree and goal in leaves
        for leaf in leaves:
            node, steps = leaf, 0
            while node != centre:
                node, steps = parent[node], steps + 1
            assert steps == arm_length
        walk = [goal]
        while walk[-1] != centre:
            walk.append(parent[walk[-1]])
        assert answer == (walk if reverse else walk[::-1]) == batch.paths[i].tolist()
        scored = batch.targets[i] != IGNORE_INDEX
        assert scored.sum() == arm_length + 1 and scored[-(arm_length + 1):].all()
        inside = scored[:-1]  # targets are the inputs shifted by one, where scored
        assert torch.equal(batch.inputs[i, 1:][inside], batch.targets[i, :-1][inside])
        goals.append(sorted(leaves).index(goal))
    assert len(set(goals)) == degree, "the goal arm varies"


def test_sampling_is_seeded_and_labels_vary():
    task = PathStar(2, 3, 12)
    a, b = task.sample(8, generator=1), task.sample(8, generator=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.inputs, task.sample(8, generator=2).inputs)
    assert task.decode(a.inputs[0]).count("|") == 1 and task.decode([task.equals]) == "="


@pytest.mark.parametrize("kwargs, error, message", [
    ({"degree": 1}, ValueError, "degree"), ({"arm_length": 0}, ValueError, "arm_length"),
    ({"num_nodes": 8}, ValueError, "degree \\* arm_length \\+ 1 = 9"), ({"degree": 2.0}, TypeError, "int"),
    ({"reverse": 1}, TypeError, "bool")])
def test_bad_settings_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        PathStar(**{"degree": 2, "arm_length": 4, "num_nodes": 9, **kwargs})


class Oracle(nn.Module):
    """Reads the edge list and answers: the true path, or (`clever_hans`) a random arm's path, which is
    what a model that only learned "the node after the previous one" does."""

    def __init__(self, task: PathStar, clever_hans: bool = False):
        super().__init__()
        self.task, self.clever_hans = task, clever_hans
        self.g = torch.Generator().manual_seed(0)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, idx: torch.Tensor) -> LMOutput:
        t = self.task
        logits = torch.zeros(*idx.shape, t.vocab_size)
        E = t.degree * t.arm_length
        for i, row in enumerate(idx.tolist()):
            child = {row[2 * k]: [] for k in range(E)}
            parent = {}
            for k in range(E):
                child.setdefault(row[2 * k], []).append(row[2 * k + 1])
                parent[row[2 * k + 1]] = row[2 * k]
            centre, goal = row[2 * E + 1], row[2 * E + 2]
            answer = row[2 * E + 4:]
            if not answer:
                nxt = goal if t.reverse else centre
            elif t.reverse:
                nxt = parent.get(answer[-1], centre)
            elif len(answer) == 1 and self.clever_hans:
                arms = child[centre]
                nxt = arms[int(torch.randint(len(arms), (1,), generator=self.g))]
            elif len(answer) == 1:
                nxt = goal
                while parent[nxt] != centre:
                    nxt = parent[nxt]
            else:
                nxt = (child.get(answer[-1]) or [goal])[0]
            logits[i, -1, nxt] = 1.0
        return LMOutput(logits, None)


@pytest.mark.parametrize("reverse", [False, True])
def test_accuracy_of_a_perfect_reader_is_one(reverse):
    task = PathStar(3, 3, 15, reverse=reverse)
    assert pathstar_accuracy(Oracle(task), task, 200) == (1.0, 1.0, 200)


def test_accuracy_of_the_clever_hans_reader_is_one_over_the_degree():
    task = PathStar(4, 3, 20)
    acc = pathstar_accuracy(Oracle(task, clever_hans=True), task, 2000, generator=5)
    assert acc.first == acc.path  # after the first step it follows the arm it chose without a mistake
    assert abs(acc.path - 1 / 4) < 0.03  # 2000 draws: the binomial sd is about 0.01


def test_the_trainer_trains_a_gpt_on_fresh_graphs():
    task = PathStar(2, 2, 8)
    data = PathStarData(task, n_val=64, seed=0)
    with pytest.raises(ValueError, match="block_size"):
        data.get_batch("train", 4, task.seq_len + 1)
    with pytest.raises(ValueError, match="afresh"):
        data.iter_split("train", 4, task.seq_len)
    x1, _ = data.get_batch("train", 4, task.seq_len, generator=torch.Generator().manual_seed(0))
    x2, _ = data.get_batch("train", 4, task.seq_len, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x1, x2)
    model = GPT(GPTConfig(vocab_size=task.vocab_size, block_size=task.seq_len, n_layer=1, n_head=2, n_embd=32))
    history = Trainer(model, data, TrainConfig(max_steps=60, batch_size=32, lr=3e-3, eval_interval=30,
                                               progress=False)).fit()
    losses = [r["val_loss"] for r in history if r["kind"] == "eval"]
    assert losses[-1] < losses[0]
