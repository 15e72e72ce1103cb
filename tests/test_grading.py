"""lmlab.grading.forbid: the shared rule that an exercise may not call the ready-made version."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch.nn.functional import cross_entropy as renamed_cross_entropy

from lmlab.generation import greedy
from lmlab.grading import forbid
from lmlab.likelihood import nll
from lmlab.text import MarkovSource

X = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 2, 5, 1])
BANNED = (F.cross_entropy, F.log_softmax, torch.logsumexp, torch.Tensor.logsumexp, torch.Tensor.log_softmax)


def by_hand(logits, targets):
    m = logits.max(dim=-1, keepdim=True).values
    lse = m.squeeze(-1) + torch.log(torch.exp(logits - m).sum(-1))
    return (lse - logits.gather(-1, targets[:, None]).squeeze(-1)).mean()


@pytest.mark.parametrize(
    ("shortcut", "name"),
    [
        (lambda x, y: F.cross_entropy(x, y), "torch.nn.functional.cross_entropy"),
        (lambda x, y: renamed_cross_entropy(x, y), "torch.nn.functional.cross_entropy"),
        (lambda x, y: torch.nn.CrossEntropyLoss()(x, y), "torch.nn.functional.cross_entropy"),
        (lambda x, y: -x.log_softmax(-1).gather(-1, y[:, None]).mean(), "torch.Tensor.log_softmax"),
        (lambda x, y: (torch.logsumexp(x, -1) - x.gather(-1, y[:, None])[:, 0]).mean(), "torch.logsumexp"),
        (lambda x, y: (x.logsumexp(-1) - x.gather(-1, y[:, None])[:, 0]).mean(), "torch.Tensor.logsumexp"),
        (lambda x, y: nll(x, y), "torch.nn.functional.cross_entropy"),  # through lmlab
    ],
)
def test_forbid_catches_the_ready_made_function_under_any_name(shortcut, name):
    with pytest.raises(AssertionError, match=f"{name} is not allowed here"):
        with forbid(*BANNED):
            shortcut(X, Y)


def test_forbid_lets_the_basic_operations_through_and_gives_the_same_result():
    with forbid(*BANNED) as calls:
        mine = by_hand(X, Y)
    assert calls == [] and torch.allclose(mine, F.cross_entropy(X, Y))


def test_a_caught_forbidden_call_still_fails_at_the_end_of_the_block():
    def sneaky(x, y):
        try:
            return F.cross_entropy(x, y)
        except AssertionError:
            return by_hand(x, y)

    with pytest.raises(AssertionError, match="cross_entropy is not allowed"):
        with forbid(F.cross_entropy):
            sneaky(X, Y)


def test_forbid_catches_python_functions_by_their_code():
    model = MarkovSource(5, 1, seed=0).as_model()
    alias = greedy

    def mine(m, prompt, n):
        return alias(m, prompt, max_new_tokens=n)

    with pytest.raises(AssertionError, match="greedy is not allowed here"):
        with forbid(greedy):
            mine(model, [1, 2], 3)
    assert sys.getprofile() is None, "the profile function is removed afterwards"
    assert mine(model, [1, 2], 3) == greedy(model, [1, 2], max_new_tokens=3)  # outside the block: allowed


def test_forbid_restores_everything_when_the_test_itself_fails():
    with pytest.raises(ZeroDivisionError):
        with forbid(greedy, F.cross_entropy):
            raise ZeroDivisionError
    assert sys.getprofile() is None
    F.cross_entropy(X, Y)


def test_forbid_refuses_nonsense():
    with pytest.raises(ValueError, match="at least one"):
        with forbid():
            pass
    with pytest.raises(TypeError, match="forbid takes functions"):
        with forbid("cross_entropy"):
            pass
