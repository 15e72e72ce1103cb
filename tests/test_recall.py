"""Multi-query associative recall (lmlab.text.synthetic.AssociativeRecall): layout and answers checked by brute
force from the tokens, distances measured, oracle and random predictors, and a GPT trained on it."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from lmlab.lm import IGNORE_INDEX, LMOutput
from lmlab.models import GPT, GPTConfig
from lmlab.text import AssociativeRecall, RecallData, recall_accuracy, recall_accuracy_by_distance
from lmlab.text.synthetic import RECALL_FILLER, RecallOracle, recall_sources
from lmlab.train import TrainConfig, Trainer

TASKS = [
    AssociativeRecall(vocab_size=16, num_pairs=3),
    AssociativeRecall(vocab_size=40, num_pairs=8, num_queries=5, min_distance=6, seq_len=50),
    AssociativeRecall(vocab_size=30, num_pairs=4, num_queries=4, min_distance=1, seq_len=20, num_keys=4),
    AssociativeRecall(vocab_size=4, num_pairs=1),  # the smallest task: one key, two values
    AssociativeRecall(vocab_size=24, num_pairs=5, num_queries=4, min_distance=3, show_answers=True),
]


def brute_force(inputs: torch.Tensor, task: AssociativeRecall) -> list[dict[int, tuple[int, int]]]:
    """Per row, {query position t: (answer, distance)} read from the tokens alone with plain loops: a key seen
    for the second time is a query; its answer is the token after its first occurrence."""
    out = []
    for row in inputs.tolist():
        first_seen: dict[int, int] = {}
        asked = {}
        for t, tok in enumerate(row):
            if tok in task.key_ids:
                if tok in first_seen:
                    p = first_seen[tok]
                    asked[t] = (row[p + 1], t - (p + 1))
                else:
                    first_seen[tok] = t
        out.append(asked)
    return out


class RandomGuesser(nn.Module):
    """Guesses a value id uniformly at random (seeded) at every position: expected accuracy 1 / num_values."""

    def __init__(self, task: AssociativeRecall, seed: int) -> None:
        super().__init__()
        self.task, self.vocab_size = task, task.vocab_size
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, idx, targets=None, **kwargs):
        B, T = idx.shape
        logits = torch.full((B, T, self.vocab_size), float("-inf"))
        ids = list(self.task.value_ids)
        logits[:, :, ids] = torch.rand(B, T, len(ids), generator=self.generator)
        return LMOutput(logits)


class WindowedOracle(nn.Module):
    """Answers exactly when the pair's value lies within the last ``window`` positions, else says the filler."""

    def __init__(self, task: AssociativeRecall, window: int) -> None:
        super().__init__()
        self.oracle, self.window, self.vocab_size = task.as_model(), window, task.vocab_size

    def forward(self, idx, targets=None, **kwargs):
        logits = self.oracle(idx).logits.clone()
        far = (torch.arange(idx.shape[1]) - recall_sources(idx)) >= self.window  # (B, T)
        logits[far] = 0.0
        logits[..., RECALL_FILLER][far] = 1.0
        return LMOutput(logits)


# ------------------------------------------------------------------ layout
@pytest.mark.parametrize("task", TASKS, ids=repr)
def test_shapes_ranges_and_layout(task):
    n, P, Q, L, K = 64, task.num_pairs, task.num_queries, task.seq_len, task.num_keys
    batch = task.sample_batch(n, generator=1)
    x, y = batch.inputs, batch.targets
    assert x.shape == y.shape == (n, L) and x.dtype == y.dtype == torch.int64
    assert batch.answers.shape == batch.distances.shape == (n, Q) and batch.positions.tolist() == task.query_positions
    assert int(x.min()) >= 0 and int(x.max()) < task.vocab_size
    keys, values = x[:, 0 : 2 * P : 2], x[:, 1 : 2 * P : 2]
    assert bool(((keys >= 1) & (keys <= K)).all()) and bool(((values > K) & (values < task.vocab_size)).all())
    assert list(task.key_ids) == list(range(1, K + 1)) and list(task.value_ids) == list(range(K + 1, task.vocab_size))
    assert task.num_values == len(task.value_ids) >= 2
    pos = batch.positions
    assert bool((x[:, 2 * P : 2 * P + task.gap] == RECALL_FILLER).all())  # the gap
    assert bool((x[:, 2 * P + task.gap + 2 * Q :] == RECALL_FILLER).all())  # the padding at the end
    assert bool(((x[:, pos] >= 1) & (x[:, pos] <= K)).all())  # a key at each query position ...
    after = batch.answers if task.show_answers else torch.zeros_like(batch.answers)  # ... its answer or a filler next
    assert torch.equal(x[:, pos + 1], after) and torch.equal(y[:, pos], batch.answers)
    scored = y != IGNORE_INDEX
    assert scored.sum(dim=1).tolist() == [Q] * n and bool(scored[:, pos].all())
    if task.show_answers:  # then the input is a text whose next tokens are the targets
        assert torch.equal(y[scored], x[:, 1:][scored[:, :-1]])


@pytest.mark.parametrize("task", TASKS, ids=repr)
def test_keys_and_queries_are_distinct_within_a_sequence(task):
    x = task.sample(200, generator=2)[0]
    P, pos = task.num_pairs, task.query_positions
    for row in x.tolist():
        assert len(set(row[0 : 2 * P : 2])) == P
        assert len({row[t] for t in pos}) == len(pos)
        assert {row[t] for t in pos} <= set(row[0 : 2 * P : 2])


@pytest.mark.parametrize("task", TASKS, ids=repr)
def test_every_target_is_the_value_of_the_queried_key_by_brute_force(task):
    batch = task.sample_batch(100, generator=3)
    truth = brute_force(batch.inputs, task)
    for r, asked in enumerate(truth):
        scored = {t: a for t, a in enumerate(batch.targets[r].tolist()) if a != IGNORE_INDEX}
        assert scored == {t: answer for t, (answer, _) in asked.items()}
        assert sorted(scored) == task.query_positions
        assert batch.distances[r].tolist() == [asked[t][1] for t in task.query_positions]
    src = recall_sources(batch.inputs)
    for r, asked in enumerate(truth):
        assert {t: t - int(src[r, t]) for t in asked} == {t: d for t, (_, d) in asked.items()}


def test_recall_sources_on_a_hand_made_sequence():
    """The source of position t is one after the first p <= t - 2 holding the same token, else -1."""
    x = torch.tensor([[3, 3, 9, 0, 0, 3, 0]])
    assert recall_sources(x).tolist() == [[-1, -1, -1, -1, -1, 1, 4]]
    with pytest.raises(ValueError, match="2-D"):
        recall_sources(x[0])


@pytest.mark.parametrize("min_distance", [1, 2, 5, 12])
def test_min_distance_controls_the_measured_distances(min_distance):
    task = AssociativeRecall(vocab_size=20, num_pairs=4, num_queries=3, min_distance=min_distance, seq_len=40)
    batch = task.sample_batch(400, generator=4)
    measured = torch.tensor([[d for _, (_, d) in sorted(a.items())] for a in brute_force(batch.inputs, task)])
    assert torch.equal(measured, batch.distances)
    assert int(measured.min()) == min_distance  # reached (the last pair asked first happens often)
    assert int(measured.max()) == task.max_distance == min_distance + 2 * 3 + 2 * 2
    assert bool(((measured - min_distance) % 2 == 0).all())  # one parity, as documented
    assert task.gap == min_distance - 1 and task.seq_len == 40  # the padding absorbs the rest


def test_min_distance_puts_every_value_outside_a_sliding_window():
    """A 1-layer sliding-window GPT with window w: with min_distance >= w, the first query's logits do not
    depend on any pair (the pairs are out of its window); with min_distance = w - 1 they do."""
    w = 4
    for min_distance, independent in ((w, True), (w + 3, True), (w - 1, False)):
        task = AssociativeRecall(vocab_size=20, num_pairs=3, min_distance=min_distance, seq_len=20)
        torch.manual_seed(0)
        config = GPTConfig.preset(
            "micro", vocab_size=20, block_size=20, n_layer=1, attention="sliding_window", window=w
        )
        gpt = GPT(config)
        gpt.eval()
        x = task.sample(8, generator=5)[0]
        changed = x.clone()
        changed[:, 0 : 2 * task.num_pairs] = torch.roll(changed[:, 0 : 2 * task.num_pairs], 1, dims=0)  # other pairs
        t = task.query_positions[0]
        with torch.no_grad():
            same = torch.allclose(gpt(x).logits[:, t], gpt(changed).logits[:, t], atol=1e-6)
        assert same == independent, min_distance


def test_decode_shows_the_layout():
    task = AssociativeRecall(vocab_size=12, num_pairs=2, min_distance=2, seq_len=10)
    x = task.sample(1, generator=0)[0][0]
    text = task.decode(x)
    words = text.split()
    assert len(words) == 10 and words[4] == "." and words[-1] == "."
    assert words[0].startswith("k") and words[1].startswith("v") and words[5] in (words[0], words[2])
    assert task.decode([0, 1, 5, 6, 11]) == ". k1 k5 v0 v5"
    with pytest.raises(ValueError, match="outside"):
        task.decode([12])


# ------------------------------------------------------------------ seeds
def test_deterministic_by_seed_and_different_across_seeds():
    task = TASKS[1]
    a, b = task.sample(16, generator=7), task.sample(16, generator=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    g = torch.Generator().manual_seed(7)
    assert torch.equal(task.sample(16, generator=g)[0], a[0])
    assert not torch.equal(task.sample(16, generator=g)[0], a[0])  # the generator moved on
    c = task.sample(16, generator=8)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    assert torch.equal(task.sample_batch(16, generator=7).inputs, a[0])


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(vocab_size=3, num_pairs=1), ValueError, "vocab_size must be an integer >= 4"),
        (dict(vocab_size=16.0, num_pairs=1), TypeError, "vocab_size must be an integer, got float"),
        (dict(vocab_size=16, num_pairs=0), ValueError, "num_pairs must be an integer >= 1"),
        (dict(vocab_size=16, num_pairs=True), TypeError, "num_pairs must be an integer"),
        (dict(vocab_size=16, num_pairs=8), ValueError, r"num_keys is 7 but num_pairs is 8.*vocab_size >= 17"),
        (dict(vocab_size=16, num_pairs=3, num_keys=2), ValueError, "use num_keys >= 3"),
        (dict(vocab_size=16, num_pairs=3, num_keys=14), ValueError, "leaves 1 value id.*num_keys <= 13"),
        (dict(vocab_size=16, num_pairs=3, num_queries=4), ValueError,
         r"num_queries must be in \[1, num_pairs\] = \[1, 3\]"),
        (dict(vocab_size=16, num_pairs=3, num_queries=0), ValueError, "num_queries must be an integer >= 1"),
        (dict(vocab_size=16, num_pairs=3, min_distance=0), ValueError, "min_distance must be an integer >= 1"),
        (dict(vocab_size=16, num_pairs=3, min_distance=4, seq_len=14), ValueError,
         r"seq_len 14 is too short.*3 fillers.*need seq_len >= 15"),
        (dict(vocab_size=16, num_pairs=3, seq_len="20"), TypeError, "seq_len must be an integer, got str"),
    ],
)  # fmt: skip
def test_bad_arguments_say_what_is_allowed(kwargs, error, match):
    with pytest.raises(error, match=match):
        AssociativeRecall(**kwargs)


def test_defaults_and_frozen():
    task = AssociativeRecall(vocab_size=16, num_pairs=3, min_distance=4)
    assert (task.num_queries, task.num_keys, task.seq_len) == (3, 7, 6 + 3 + 6)  # minimal length
    assert task.min_seq_len == task.seq_len and task.chance_accuracy == 1 / 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.num_pairs = 4
    assert dataclasses.replace(task, min_distance=1).seq_len == 15  # seq_len was resolved: it stays fixed
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        task.sample(0)
    with pytest.raises(TypeError, match="generator"):
        task.sample(2, generator="seed")


# ------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("task", TASKS, ids=repr)
def test_the_oracle_is_perfect(task):
    oracle = task.as_model()
    assert isinstance(oracle, RecallOracle)
    assert recall_accuracy(oracle, task, n=300) == 1.0
    x, y = task.sample(50, generator=9)
    assert float(oracle(x, y).loss) == 0.0
    assert recall_accuracy(oracle, (x, y)) == 1.0
    wrong = y.clone()
    wrong[wrong != IGNORE_INDEX] = RECALL_FILLER  # ask for an id no query has as answer
    assert recall_accuracy(oracle, (x, wrong)) == 0.0
    by = recall_accuracy_by_distance(oracle, task, n=200)
    assert (by.accuracy == 1.0).all() and by.count.sum() == 200 * task.num_queries
    assert by.distance.min() == task.min_distance


@pytest.mark.parametrize("task", TASKS[:3], ids=repr)
def test_random_guesses_score_chance_within_a_binomial_band(task):
    n = 2000
    acc = recall_accuracy(RandomGuesser(task, seed=11), task, n=n, generator=12)
    N, p = n * task.num_queries, task.chance_accuracy
    half_width = 4.0 * math.sqrt(p * (1 - p) / N)  # 4 standard deviations of a Binomial(N, p) proportion
    assert abs(acc - p) < half_width, (acc, p, half_width)


def test_accuracy_by_distance_sees_a_window():
    task = AssociativeRecall(vocab_size=30, num_pairs=6, num_queries=4, min_distance=2, seq_len=30)
    w = 9
    model = WindowedOracle(task, window=w)
    batch = task.sample_batch(300, generator=13)
    by = recall_accuracy_by_distance(model, batch)
    assert ((by.accuracy == 1.0) == (by.distance < w)).all() and set(by.accuracy) == {0.0, 1.0}
    assert by.distance.tolist() == list(range(task.min_distance, task.max_distance + 1, 2))
    expected = float((batch.distances < w).double().mean())
    assert recall_accuracy(model, batch) == pytest.approx(expected, abs=1e-12)
    binned = recall_accuracy_by_distance(model, batch, bin_width=4)
    assert binned.distance.tolist() == [0, 4, 8, 12, 16] and binned.count.sum() == 1200
    assert binned.accuracy[0] == 1.0 and binned.accuracy[-1] == 0.0


def test_accuracy_rejects_bad_input():
    task = TASKS[0]
    with pytest.raises(TypeError, match="data must be an AssociativeRecall"):
        recall_accuracy(task.as_model(), [1, 2, 3])
    x, y = task.sample(4, generator=0)
    with pytest.raises(ValueError, match="score no position"):
        recall_accuracy(task.as_model(), (x, torch.full_like(y, IGNORE_INDEX)))
    small = GPT(GPTConfig.preset("micro", vocab_size=16, block_size=task.seq_len - 1))
    with pytest.raises(ValueError, match=f"block_size >= {task.seq_len}"):
        recall_accuracy(small, task)
    with pytest.raises(TypeError, match="model must be"):
        recall_accuracy("gpt", task)


# ------------------------------------------------------------------ training
def test_recall_data_feeds_the_trainer_protocol():
    task = AssociativeRecall(vocab_size=16, num_pairs=2, seq_len=10)
    data = RecallData(task, n_val=10, seed=0)
    assert data.vocab_size == 16
    g = torch.Generator().manual_seed(0)
    x1, y1 = data.get_batch("train", 5, 10, generator=g)
    x2, _ = data.get_batch("train", 5, 10, generator=g)
    assert x1.shape == y1.shape == (5, 10) and not torch.equal(x1, x2)  # fresh sequences every step
    assert not torch.equal(data.get_batch("train", 5, 10)[0], data.get_batch("train", 5, 10)[0])
    assert not torch.equal(x1[:, 0:4:2], data.val[0][:5, 0:4:2])  # a trainer seeded like the data: other keys
    assert torch.equal(RecallData(task, n_val=10, seed=0).val[0], data.val[0])  # the val set is fixed by seed
    batches = list(data.iter_split("val", 4, 10))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), data.val[1])
    xv, yv = data.get_batch("val", 6, 10, generator=torch.Generator().manual_seed(1))
    val_rows = {tuple(r) for r in data.val[0].tolist()}
    assert all(tuple(r) in val_rows for r in xv.tolist())
    with pytest.raises(ValueError, match=r"block_size 8 differs from the task's seq_len 10.*block_size=10"):
        data.get_batch("train", 4, 8)
    with pytest.raises(ValueError, match="no end"):
        data.iter_split("train", 4, 10)
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        data.get_batch("test", 4, 10)
    with pytest.raises(TypeError, match="AssociativeRecall"):
        RecallData("task")


def test_a_micro_gpt_learns_easy_recall_well_above_chance():
    """200 steps of 16 fresh sequences (about 3 s on one core): 0.57 to 0.73 accuracy for model seeds 0..3."""
    task = AssociativeRecall(vocab_size=16, num_pairs=2)  # 8 tokens, 8 values: chance 1/8
    data = RecallData(task, n_val=256, seed=0)
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("micro", vocab_size=task.vocab_size, block_size=task.seq_len))
    before = recall_accuracy(model, data.val)
    config = TrainConfig(
        max_steps=200, batch_size=16, lr=5e-3, min_lr=5e-4, warmup_steps=20, weight_decay=0.0,
        eval_interval=100, device="cpu", progress=False,
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a micro model: one thread is faster, and is not slowed by a busy second core
    try:
        history = Trainer(model, data, config).fit()
    finally:
        torch.set_num_threads(threads)
    evals = history.evals
    assert evals[-1]["val_tokens"] == 256 * task.num_queries  # the loss is on the answers only
    assert evals[-1]["val_loss"] < math.log(task.num_values) - 0.5  # far below guessing a value
    after = recall_accuracy(model, task, n=512, generator=99)
    assert before < 0.3 and after > 3 * task.chance_accuracy, (before, after)


class _Elimination(torch.nn.Module):
    """Remembers only which values occurred, and guesses one not yet named in the input (no recall)."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def forward(self, idx, targets=None, **_):
        from lmlab.lm import LMOutput

        n, L = idx.shape
        V, P = self.task.vocab_size, self.task.num_pairs
        logits = torch.zeros(n, L, V)
        for b, row in enumerate(idx.tolist()):
            pool = list(dict.fromkeys(row[1 : 2 * P : 2]))  # the values, in order of first occurrence
            named = set()
            for t in range(2 * P, L):
                if row[t] > self.task.num_keys:
                    named.add(row[t])
                left = [v for v in pool if v not in named] or pool
                logits[b, t, left[0]] = 1.0
        return LMOutput(logits)


@pytest.mark.parametrize("P", [2, 4])
def test_hidden_answers_close_the_elimination_shortcut(P):
    shown = AssociativeRecall(vocab_size=200, num_pairs=P, show_answers=True)
    hidden = AssociativeRecall(vocab_size=200, num_pairs=P)
    harmonic = sum(1 / k for k in range(1, P + 1)) / P  # 0.75 at P = 2: (1 + 1/2) / 2
    # with ~100 values, pairs almost always hold distinct values; 2000 sequences: standard error < 0.01
    assert recall_accuracy(_Elimination(shown), shown, n=2000, generator=0) == pytest.approx(harmonic, abs=0.04)
    assert recall_accuracy(_Elimination(hidden), hidden, n=2000, generator=0) == pytest.approx(1 / P, abs=0.04)
