"""MarkovSource: exact quantities checked by brute-force enumeration, scipy and Monte-Carlo bounds."""

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

import lmlab.text.synthetic as synthetic
from lmlab.likelihood import evaluate_text
from lmlab.models import GPT, GPTConfig
from lmlab.text.synthetic import MarkovLM, MarkovSource, syllable_words

TINY = [(3, 1), (3, 2), (2, 3)]  # (vocab_size, order) small enough to enumerate every sequence


def all_sequences(V: int, n: int) -> np.ndarray:
    return np.array(list(itertools.product(range(V), repeat=n)), dtype=np.int64).reshape(V**n, n)


def block_entropy(src: MarkovSource, n: int) -> float:
    """H(X_1..X_n) in nats by enumerating all V**n sequences."""
    lp = src.sequence_logprob(all_sequences(src.vocab_size, n))
    return float(-(np.exp(lp) * lp).sum())


# ------------------------------------------------------------------ construction
def test_syllable_words_distinct_deterministic_and_prefix_stable():
    words = syllable_words(5000)
    assert len(set(words)) == 5000
    assert words[:3] == ["ba", "be", "bi"] and words[69] == "zu" and words[70] == "baba"
    assert syllable_words(100) == words[:100]
    assert all(w.isalpha() and w.islower() for w in words)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1, 1, 0), {}, "vocab_size"),
        ((True, 1, 0), {}, "vocab_size"),
        ((3, 0, 0), {}, "order"),
        ((3, 1, -1), {}, "seed"),
        ((64, 4, 0), {}, "2\\*\\*22"),
        ((3, 1, 0), {"concentration": 0.0}, "concentration"),
        ((3, 1, 0), {"concentration": float("inf")}, "concentration"),
        ((3, 1, 0), {"epsilon": 0.0}, "ergodic"),
        ((3, 1, 0), {"epsilon": 1.5}, "epsilon"),
        ((3, 1, 0), {"support": 0}, "support"),
        ((3, 1, 0), {"support": 4}, "support"),
        ((3, 1, 0), {"words": ["a", "b"]}, "words has 2"),
        ((3, 1, 0), {"words": ["a", "b", "a"]}, "distinct"),
        ((3, 1, 0), {"words": ["a", "b c", "d"]}, "whitespace"),
    ],
)
def test_bad_arguments_raise(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MarkovSource(*args, **kwargs)


def test_seed_fixes_the_language():
    a, b, c = MarkovSource(10, 2, 7), MarkovSource(10, 2, 7), MarkovSource(10, 2, 8)
    np.testing.assert_array_equal(a.transition_matrix(), b.transition_matrix())
    assert not np.allclose(a.transition_matrix(), c.transition_matrix())


@pytest.mark.parametrize("kwargs", [{}, {"concentration": 0.01}, {"support": 2, "epsilon": 0.001}])
def test_rows_are_distributions_with_uniform_floor(kwargs):
    src = MarkovSource(7, 2, 3, **kwargs)
    P = src.transition_matrix()
    assert P.shape == (49, 7)
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-12)
    assert P.min() >= src.epsilon / 7 * (1 - 1e-9)  # every transition possible: the chain is ergodic
    if "support" in kwargs:  # at most 2 tokens per row carry more than the uniform floor
        assert ((P > 2 * src.epsilon / 7).sum(1) <= 2).all()


def test_returned_arrays_are_copies():
    src = MarkovSource(4, 1, 0)
    src.transition_matrix()[0, 0] = 5.0
    src.stationary_distribution()[0] = 5.0
    assert src.transition_matrix()[0, 0] < 1 and src.stationary_distribution()[0] < 1


# ------------------------------------------------------------------ stationary distribution
@pytest.mark.parametrize("V, k", TINY + [(5, 2)])
def test_stationary_distribution_matches_scipy_eigenvector(V, k):
    src = MarkovSource(V, k, 11)
    P, n = src.transition_matrix(), V**k
    Q = np.zeros((n, n))  # context chain: (a_1..a_k) -> (a_2..a_k, x)
    for s in range(n):
        for x in range(V):
            Q[s, (s * V + x) % n] += P[s, x]
    w, vl = scipy.linalg.eig(Q, left=True, right=False)
    ref = np.real(vl[:, np.argmin(np.abs(w - 1))])
    ref /= ref.sum()
    np.testing.assert_allclose(src.stationary_distribution(), ref, atol=1e-12)


def test_power_iteration_agrees_with_dense_solve(monkeypatch):
    dense = MarkovSource(6, 3, 5)
    monkeypatch.setattr(synthetic, "_DENSE_STATES", 10)  # 216 contexts > 10: power iteration
    power = MarkovSource(6, 3, 5)
    np.testing.assert_allclose(power.stationary_distribution(), dense.stationary_distribution(), atol=1e-14)
    assert power.entropy_rate() == pytest.approx(dense.entropy_rate(), abs=1e-13)


# ------------------------------------------------------------------ brute force
@pytest.mark.parametrize("V, k", TINY)
def test_sequence_probabilities_sum_to_one_and_process_is_stationary(V, k):
    src = MarkovSource(V, k, 1)
    for n in range(1, 6):
        p = np.exp(src.sequence_logprob(all_sequences(V, n))).reshape((V,) * n)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        if n >= 2:  # consistency: summing out the last token gives the shorter sequence's probability
            shorter = np.exp(src.sequence_logprob(all_sequences(V, n - 1))).reshape((V,) * (n - 1))
            np.testing.assert_allclose(p.sum(axis=-1), shorter, atol=1e-14)
            # stationarity: summing out the FIRST token gives the same (shift-invariant) distribution
            np.testing.assert_allclose(p.sum(axis=0), shorter, atol=1e-14)


@pytest.mark.parametrize("V, k", TINY)
def test_entropy_rate_equals_block_entropy_differences(V, k):
    src = MarkovSource(V, k, 2)
    h = src.entropy_rate()
    for n in (k + 1, k + 2):  # exact for n > k: H(X_n | X_1..X_{n-1}) = H(X_n | X_{n-k}..X_{n-1})
        assert block_entropy(src, n) - block_entropy(src, n - 1) == pytest.approx(h, abs=1e-12)
    # before the order is reached, conditioning on less can only raise the entropy (Cover & Thomas 2.6.5)
    assert block_entropy(src, k) - block_entropy(src, k - 1 if k > 1 else 0) >= h - 1e-12
    assert src.entropy_rate("bits") == pytest.approx(h / math.log(2), rel=1e-15)


def test_entropy_rate_of_uniform_chain_is_log_v():
    src = MarkovSource(9, 2, 0, epsilon=1.0)  # epsilon = 1: i.i.d. uniform tokens
    assert src.entropy_rate() == pytest.approx(math.log(9), rel=1e-14)
    assert src.entropy_rate("bits") == pytest.approx(math.log2(9), rel=1e-14)
    with pytest.raises(ValueError, match="unit"):
        src.entropy_rate("bytes")


@pytest.mark.parametrize("V, k", TINY)
def test_token_logprobs_are_the_chain_rule_of_sequence_logprob(V, k):
    src = MarkovSource(V, k, 4)
    seqs = all_sequences(V, 5)
    full = src.token_logprobs(seqs, include_first=True)
    assert full.shape == (len(seqs), 5) and src.token_logprobs(seqs).shape == (len(seqs), 4)
    np.testing.assert_allclose(full.sum(1), src.sequence_logprob(seqs), atol=1e-13)
    for t in range(1, 5):  # conditional = ratio of brute-force prefix probabilities
        ratio = src.sequence_logprob(seqs[:, : t + 1]) - src.sequence_logprob(seqs[:, :t])
        np.testing.assert_allclose(full[:, t], ratio, atol=1e-12)
    x = seqs[17]
    for t in range(5):
        assert math.log(src.next_token_probs(x[:t])[x[t]]) == pytest.approx(full[17, t], abs=1e-14)
    assert src.sequence_logprob([]) == 0.0
    assert src.sequence_logprob(torch.tensor(x)) == pytest.approx(full[17].sum(), abs=1e-13)


@pytest.mark.parametrize("V, k", TINY)
@pytest.mark.parametrize("prefix_len", [0, 1, 2, 4])
def test_most_likely_continuation_equals_brute_force_argmax(V, k, prefix_len):
    src = MarkovSource(V, k, 5)
    prefix = [int(t) for t in np.random.default_rng(prefix_len).integers(0, V, prefix_len)]
    base = src.sequence_logprob(prefix)
    for n in range(0, 5):
        conts = all_sequences(V, n)
        full = np.concatenate([np.tile(prefix, (len(conts), 1)).astype(np.int64), conts], axis=1)
        cond = src.sequence_logprob(full) - base if n else np.zeros(1)
        tokens, logprob = src.most_likely_continuation(prefix, n)
        assert logprob == pytest.approx(cond.max(), abs=1e-12)
        assert tokens == conts[int(np.argmax(cond))].tolist()  # random probabilities: a unique maximum


def test_most_likely_continuation_breaks_ties_by_lowest_id():
    src = MarkovSource(4, 2, 0, epsilon=1.0)  # every continuation equally likely
    tokens, logprob = src.most_likely_continuation([3, 2, 1], 6)
    assert tokens == [0] * 6 and logprob == pytest.approx(-6 * math.log(4), rel=1e-14)
    with pytest.raises(ValueError, match="n must be"):
        src.most_likely_continuation([1], -1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        src.most_likely_continuation([4], 2)


# ------------------------------------------------------------------ sampling
def test_sampling_is_deterministic_and_shaped():
    src = MarkovSource(20, 2, 0)
    a = src.sample(300, generator=123)
    assert a.shape == (300,) and a.dtype == torch.int64
    assert torch.equal(a, src.sample(300, torch.Generator().manual_seed(123)))
    assert torch.equal(a, src.sample(300, 123, batch_size=1)[0])  # the scalar and batched paths agree
    assert not torch.equal(a, src.sample(300, 124))
    b = src.sample(50, 7, batch_size=4)
    assert b.shape == (4, 50) and int(b.min()) >= 0 and int(b.max()) < 20
    torch.manual_seed(0)
    c = src.sample(10)
    torch.manual_seed(0)
    assert torch.equal(c, src.sample(10))  # None: torch's global generator
    assert src.sample(0, 1).shape == (0,)
    with pytest.raises(TypeError, match="generator"):
        src.sample(5, generator="seed")
    with pytest.raises(ValueError, match="batch_size"):
        src.sample(5, 1, batch_size=0)


def test_monte_carlo_entropy_within_five_standard_errors():
    src = MarkovSource(20, 2, 3)
    x = src.sample(1000, generator=0, batch_size=200)  # 200 independent stationary sequences
    # From t = order on every token has its full context, so E[-log p(x_t | x_<t)] equals the entropy rate
    # exactly; the 200 per-sequence means are i.i.d., so their standard error is std / sqrt(200). A fair
    # test fails |mean - H| > 5 SE with probability about 6e-7 (normal approximation).
    per_seq = -src.token_logprobs(x)[:, src.order - 1 :].mean(axis=1)
    se = per_seq.std(ddof=1) / math.sqrt(len(per_seq))
    assert abs(per_seq.mean() - src.entropy_rate()) < 5 * se


def test_transition_frequencies_pass_chi_square():
    src = MarkovSource(4, 2, 9, concentration=1.0, epsilon=0.2)
    x = src.sample(1000, generator=1, batch_size=200).numpy()
    k, V = src.order, src.vocab_size
    ctx = x[:, :-k] * V + x[:, 1:-1]  # context index of the two tokens before each target
    counts = np.zeros((V**k, V))
    np.add.at(counts, (ctx.ravel(), x[:, k:].ravel()), 1)
    expected = counts.sum(1, keepdims=True) * src.transition_matrix()
    assert expected.min() >= 5  # the chi-square approximation needs enough expected counts per cell
    # Pearson's statistic summed over contexts is asymptotically chi-square with V**k (V - 1) degrees of
    # freedom (Anderson & Goodman 1957, "Statistical inference about Markov chains"); a correct sampler
    # fails at alpha = 1e-4 once in ten thousand runs.
    stat = ((counts - expected) ** 2 / expected).sum()
    assert scipy.stats.chi2.sf(stat, V**k * (V - 1)) > 1e-4


def test_first_tokens_follow_the_stationary_distribution():
    src = MarkovSource(3, 2, 6, concentration=1.0, epsilon=0.2)
    x = src.sample(2, generator=2, batch_size=20000).numpy()
    counts = np.bincount(x[:, 0] * 3 + x[:, 1], minlength=9)
    expected = 20000 * src.stationary_distribution()
    # chi-square goodness of fit, 8 degrees of freedom; a correct sampler fails at alpha = 1e-4 rarely
    assert scipy.stats.chisquare(counts, expected).pvalue > 1e-4


def test_text_encode_decode_round_trip():
    src = MarkovSource(30, 1, 0)
    text = src.text(25, generator=3, words_per_line=10)
    assert text.count("\n") == 2 and len(text.split()) == 25
    ids = src.encode(text)
    assert ids == src.sample(25, 3).tolist()
    assert src.decode(ids) == " ".join(text.split())
    assert src.encode(["ba", "be"]) == [0, 1]
    with pytest.raises(ValueError, match="unknown word 'xyzzy'"):
        src.encode("ba xyzzy")
    with pytest.raises(TypeError, match="encode"):
        src.token_logprobs("ba be")
    with pytest.raises(TypeError, match="integer"):
        src.sequence_logprob([0.5, 1.0])
    with pytest.raises(ValueError, match="dimension"):
        src.sequence_logprob(np.zeros((1, 2, 3), dtype=int))


# ------------------------------------------------------------------ the exact model
@pytest.mark.parametrize("V, k", [(5, 1), (4, 3)])
def test_adapter_logits_are_exact_conditionals(V, k):
    src = MarkovSource(V, k, 8)
    model = src.as_model()
    assert isinstance(model, MarkovLM) and model.context_limit is None and model.vocab_size == V
    idx = src.sample(12, 0, batch_size=3)
    logits, loss = model(idx)
    assert logits.shape == (3, 12, V) and logits.dtype == torch.float64 and loss is None
    np.testing.assert_allclose(logits.exp().sum(-1).numpy(), 1.0, atol=1e-12)
    for b in range(3):
        for t in range(12):
            ref = np.log(src.next_token_probs(idx[b, : t + 1]))
            np.testing.assert_allclose(logits[b, t].numpy(), ref, atol=1e-14)
    gathered = logits[:, :-1].gather(-1, idx[:, 1:, None])[..., 0]
    np.testing.assert_allclose(gathered.numpy(), src.token_logprobs(idx), atol=1e-14)
    _, loss = model(idx[:, :-1], idx[:, 1:])
    assert float(loss) == pytest.approx(-src.token_logprobs(idx).mean(), rel=1e-6)  # lm_loss is float32


def test_adapter_rejects_bad_input():
    model = MarkovSource(5, 2, 0).as_model()
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="vocabulary"):
        model(torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point"):
        MarkovSource(5, 2, 0).as_model(dtype=torch.long)


@pytest.mark.slow
def test_gpt_trained_on_samples_approaches_the_entropy_rate():
    src = MarkovSource(8, 1, 0, concentration=0.5)
    train = src.sample(33, generator=0, batch_size=4000)  # 4000 windows of 33 tokens
    held_out = src.sample(20_000, generator=1)
    model = GPT(GPTConfig.preset("micro", vocab_size=8, block_size=32))
    untrained = evaluate_text(model, held_out).nats_per_token
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        batch = train[torch.randint(0, len(train), (32,), generator=g)]
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    gpt = evaluate_text(model, held_out).nats_per_token
    exact = evaluate_text(src.as_model(), held_out).nats_per_token  # ~ entropy rate on this sample
    assert abs(exact - src.entropy_rate()) < 0.03
    assert untrained - exact > 0.5  # near log 8 = 2.08 nats before training, against H = 1.37
    assert -0.02 < gpt - exact < 0.05  # a held-out cross-entropy cannot beat the true model by much
