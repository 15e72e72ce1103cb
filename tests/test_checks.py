"""lmlab.checks.check_count and lmlab.text.tasks.SampledTaskData, the pieces RecallData and PathStarData share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.checks import check_count
from lmlab.text import AssociativeRecall, PathStar, PathStarData, RecallData
from lmlab.text.tasks import SampledTaskData


@pytest.mark.parametrize("value, minimum, expected", [(3, 1, 3), (np.int64(5), 0, 5), (0, 0, 0)])
def test_check_count_returns_a_plain_int(value, minimum, expected):
    out = check_count("n", value, minimum)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value, error, message", [
    (True, TypeError, "n must be an integer, got bool True"),
    (3.0, TypeError, "n must be an integer, got float 3.0"),
    ("3", TypeError, "n must be an integer, got str '3'"),
    (0, ValueError, "n must be an integer >= 1, got 0"),
])
def test_check_count_says_what_is_wrong(value, error, message):
    with pytest.raises(error) as info:
        check_count("n", value, 1)
    assert str(info.value) == message


class Counting(SampledTaskData):
    """A task whose every sequence is one number: the position of the draw in the generator's stream."""

    class Task:
        vocab_size, seq_len = 1000, 4

    task_type, val_salt = Task, 3

    def sample_pairs(self, n, generator):
        x = torch.randint(1000, (n, 4), generator=generator)  # (n, L)
        return x, x.roll(-1, dims=1)


def test_the_base_gives_fresh_train_batches_and_a_fixed_val_set():
    data = Counting(Counting.Task(), n_val=10, seed=5)
    a, b = data.get_batch("train", 3, 4), data.get_batch("train", 3, 4)
    assert a[0].shape == (3, 4) and not torch.equal(a[0], b[0]), "every train batch is new"
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(data.get_batch("train", 3, 4, g1)[0], data.get_batch("train", 3, 4, g2)[0])
    again = Counting(Counting.Task(), n_val=10, seed=5)
    assert torch.equal(again.val[0], data.val[0]) and again.val[0].shape == (10, 4)
    walked = torch.cat([x for x, _ in data.iter_split("val", 4, 4)])
    assert torch.equal(walked, data.val[0]) and [len(x) for x, _ in data.iter_split("val", 4, 4)] == [4, 4, 2]
    rows = data.get_batch("val", 6, 4, torch.Generator().manual_seed(0))[0]
    assert all(any(torch.equal(r, v) for v in data.val[0]) for r in rows), "val batches are rows of the val set"
    # the val set is not the stream a trainer seeded like the data draws its train batches from
    assert not torch.equal(data.val[0][:3], Counting(Counting.Task(), n_val=3, seed=5).get_batch("train", 3, 4)[0])


@pytest.mark.parametrize("call, error, message", [
    (lambda d: d.get_batch("test", 2, 4), ValueError, "split must be 'train' or 'val'"),
    (lambda d: d.get_batch("train", 2, 5), ValueError, "block_size 5 differs from the task's seq_len 4"),
    (lambda d: d.get_batch("train", 0, 4), ValueError, "batch_size must be an integer >= 1"),
    (lambda d: d.iter_split("train", 2, 4), ValueError, "sampled afresh"),
    (lambda d: d.get_batch("train", 2.0, 4), TypeError, "batch_size must be an integer"),
])
def test_the_base_refuses_bad_requests(call, error, message):
    with pytest.raises(error, match=message):
        call(Counting(Counting.Task(), n_val=4))


def test_the_base_needs_its_task_and_a_sampler():
    with pytest.raises(TypeError, match="task must be a Task, got str"):
        Counting("task")
    with pytest.raises(TypeError, match="abstract"):
        SampledTaskData(Counting.Task())
    with pytest.raises(ValueError, match="n_val must be an integer >= 1"):
        Counting(Counting.Task(), n_val=0)


def test_recall_and_pathstar_data_keep_their_val_sets():
    """The val sets are the ones the committed lesson results were computed with (each class's own salt)."""
    recall = AssociativeRecall(vocab_size=16, num_pairs=2)
    val_seed = (0 * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) % 2**63
    assert torch.equal(RecallData(recall, n_val=8).val[0], recall.sample(8, generator=val_seed)[0])
    star = PathStar(2, 3, 12)
    val_seed = (2 * 0x9E3779B97F4A7C15 + 7) % 2**63
    assert torch.equal(PathStarData(star, n_val=8, seed=2).val[1], star.sample(8, generator=val_seed).targets)
