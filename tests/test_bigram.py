"""lmlab.models.bigram and markov_token_data: against loops over the data, exact tables and the likelihood."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch

from lmlab.likelihood import token_logprobs
from lmlab.models import BigramLM, bigram_counts
from lmlab.text.synthetic import MarkovSource, markov_token_data


@pytest.fixture(scope="module")
def source() -> MarkovSource:
    return MarkovSource(6, 1, seed=4)


def mle(ids, vocab_size, smoothing=0.0):
    """The count-based model's table in float64."""
    return BigramLM.from_counts(bigram_counts(ids, vocab_size), smoothing=smoothing, dtype=torch.float64).probs()


def test_bigram_counts_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (300,), generator=g)
    counts = bigram_counts(ids, 7)
    expected = Counter(zip(ids[:-1].tolist(), ids[1:].tolist(), strict=True))
    for a, b in itertools.product(range(7), repeat=2):
        assert int(counts[a, b]) == expected[(a, b)]
    assert int(counts.sum()) == 299


def test_bigram_counts_do_not_cross_rows():
    counts = bigram_counts(torch.tensor([[0, 1], [2, 3]]), 4)
    assert int(counts.sum()) == 2 and counts[1, 2] == 0 and counts[0, 1] == 1 and counts[2, 3] == 1


def test_bigram_counts_input_checks():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        bigram_counts([0, 5], 5)
    with pytest.raises(TypeError):
        bigram_counts([0.5, 1.0], 3)
    with pytest.raises(ValueError, match="vocab_size"):
        bigram_counts([0, 1], 0)


def test_from_counts_is_the_relative_frequency():
    ids = [0, 1, 0, 1, 1, 0, 2]
    P = mle(ids, 4)
    assert P.dtype == torch.float64
    assert BigramLM.from_counts(bigram_counts(ids, 4)).logits.dtype == torch.float32  # the default
    torch.testing.assert_close(P[0], torch.tensor([0, 2 / 3, 1 / 3, 0], dtype=torch.float64))
    torch.testing.assert_close(P[1], torch.tensor([2 / 3, 1 / 3, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(P[2], torch.full((4,), 0.25, dtype=torch.float64))  # never followed: uniform
    torch.testing.assert_close(P[3], torch.full((4,), 0.25, dtype=torch.float64))  # never seen: uniform
    torch.testing.assert_close(P.sum(1), torch.ones(4, dtype=torch.float64))


def test_from_counts_add_k_smoothing():
    ids = [0, 1, 0, 1, 1, 0, 2]
    P = mle(ids, 4, smoothing=1.0)
    torch.testing.assert_close(P[0], torch.tensor([1, 3, 2, 1], dtype=torch.float64) / 7)
    torch.testing.assert_close(P[3], torch.full((4,), 0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="smoothing"):
        mle(ids, 4, smoothing=-1)


def test_from_counts_maximises_the_likelihood(source):
    ids = source.sample(3000, generator=1)
    P = mle(ids, 6)

    def loglik(table):
        return float(torch.log(table[ids[:-1], ids[1:]]).sum())

    best = loglik(P)
    assert best >= loglik(torch.tensor(source.transition_matrix()))  # beats even the true table on its data
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        noisy = P * torch.exp(0.1 * torch.randn(P.shape, generator=g, dtype=torch.float64))
        assert best > loglik(noisy / noisy.sum(1, keepdim=True))


def test_bigram_lm_from_probs_scores_like_the_table(source):
    ids = source.sample(50, generator=2)
    P = mle(source.sample(2000, generator=3), 6, smoothing=0.5)
    model = BigramLM.from_probs(P)  # float32 logits
    expected = torch.log(P[ids[:-1], ids[1:]]).float()
    torch.testing.assert_close(token_logprobs(model, ids), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.probs().double(), P, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="probability distribution"):
        BigramLM.from_probs(torch.ones(3, 3))


def test_bigram_lm_zero_probability_means_infinite_loss():
    model = BigramLM.from_probs(mle([0, 1, 0, 1], 3))  # 1 -> 1 never seen: probability 0
    lp = token_logprobs(model, [0, 1, 1])
    assert lp[0] == 0.0 and lp[1] == -math.inf



def test_markov_token_data(source):
    data = markov_token_data(source, 500, 100, seed=7)
    assert data.num_tokens("train") == 500 and data.num_tokens("val") == 100 and data.vocab_size == 6
    again = markov_token_data(source, 500, 100, seed=7)
    assert np.array_equal(data.train, again.train) and not np.array_equal(data.train[:100], data.val)


