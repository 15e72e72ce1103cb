"""lmlab.lessons.decoding (experiments, figures, the warp widget) and lmlab.generation's batched sampler and
distinct-n, against independent references.

References: brute-force enumeration of every continuation of a tiny MarkovSource (itertools.product), exact
formulas (V ** T, softmax(logits / T), the context distribution of a Markov chain propagated step by step),
and lmlab functions with their own tests (greedy, sample, beam_search, warp_logits, MarkovSource's exact
log-probabilities). Statistical checks use fixed seeds and state their bounds.
"""

import itertools
import math
import statistics

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lmlab.generation import beam_search, distinct_n, greedy, sample, sample_batch, warp_logits  # noqa: E402
from lmlab.lessons.decoding import (  # noqa: E402  # noqa: E402
    BeamWidthRow,
    CacheTimingRow,
    ErrorRecord,
    LengthRow,
    QualityRow,
    beam_search_cost,
    beam_width_sweep,
    cache_timing,
    error_records,
    find_loop,
    kv_cache_size,
    length_study,
    lesson_source,
    plot_beam_sweep,
    plot_cache_timing,
    plot_draws,
    plot_lengths,
    plot_quality_diversity,
    plot_search_and_model_errors,
    plot_warp_stages,
    quality_diversity,
    search_and_model_errors,
    search_space_size,
    summarize_errors,
    train_on_source,
    warp_stages,
)
from lmlab.lm import LMOutput  # noqa: E402
from lmlab.models import GPT, GPTConfig  # noqa: E402
from lmlab.text.synthetic import MarkovSource  # noqa: E402

STAGES = ["model", "temperature", "top-k", "top-p", "min-p"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tiny_gpt() -> GPT:
    """A random GPT whose weights are drawn wider than the default init, so that its next-token distributions
    are far from uniform and greedy decoding does not just repeat one token."""
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=12, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model


@pytest.fixture(scope="module")
def source() -> MarkovSource:
    return MarkovSource(4, 1, seed=0)


# ---------------------------------------------------------------------------------------------- brute force
def _continuation_logprobs(src: MarkovSource, prompt, conts) -> np.ndarray:
    """log p(cont | prompt) under ``src`` for every continuation in ``conts`` (all of the same length)."""
    full = np.array([list(prompt) + list(c) for c in conts], dtype=np.int64)
    return src.token_logprobs(full)[:, len(prompt) - 1 :].sum(axis=1)


def _brute_best(src: MarkovSource, prompt, n: int) -> tuple[list[int], float, float]:
    """The most probable n-token continuation by listing all V**n: (tokens, log-prob, runner-up's log-prob)."""
    conts = list(itertools.product(range(src.vocab_size), repeat=n))
    lp = _continuation_logprobs(src, prompt, conts)
    order = np.argsort(-lp, kind="stable")
    return list(conts[order[0]]), float(lp[order[0]]), float(lp[order[1]])


def _complete_outputs(V: int, eos: int, n: int):
    """Every output a decoder with EOS can return: ends with eos (no earlier eos), or has n tokens without eos."""
    for length in range(1, n + 1):
        for body in itertools.product([t for t in range(V) if t != eos], repeat=length - 1):
            yield (*body, eos)
            if length == n:
                for last in range(V):
                    if last != eos:
                        yield (*body, last)


def _logprob_of(src: MarkovSource, prompt, cont) -> float:
    return float(_continuation_logprobs(src, prompt, [cont])[0])


# ---------------------------------------------------------------------------------------------- the space
def test_search_space_size_counts_every_sequence():
    for V in range(1, 5):
        for T in range(0, 5):
            assert search_space_size(V, T) == len(list(itertools.product(range(V), repeat=T)))
    assert search_space_size(7, 0) == 1  # one sequence of length 0: the empty one
    assert search_space_size(50257, 20) == 50257**20  # exact Python integer, no overflow
    assert len(str(search_space_size(50257, 20))) == 95  # "about 10**94"


@pytest.mark.parametrize("args", [(-1, 2), (0, 2), (3, -1), (True, 2), (3, True), (2.0, 3), (3, 2.0), (None, 1)])
def test_search_space_size_rejects_bad_input(args):
    with pytest.raises(ValueError):
        search_space_size(*args)


# ---------------------------------------------------------------------------------------------- loops
def _brute_loop(tokens, max_period, min_repeats):
    """The definition of find_loop, checked position by position: smallest period, earliest start."""
    n = len(tokens)
    for p in range(1, max_period + 1):
        for start in range(n):
            if n - start >= min_repeats * p and all(tokens[i] == tokens[i - p] for i in range(start + p, n)):
                return p, start
    return None


def test_find_loop_hand_examples():
    assert find_loop([5, 1, 2, 3, 1, 2, 3, 1, 2, 3]) == (3, 1)
    assert find_loop([1, 2, 1, 2, 1, 2]) == (2, 0)
    assert find_loop([4, 4, 4]) == (1, 0)
    assert find_loop([4, 4]) is None  # two repeats are fewer than the default three
    assert find_loop([4, 4], min_repeats=2) == (1, 0)
    assert find_loop([1, 2, 3, 1, 2, 3, 1, 2, 3], max_period=2) is None  # its period 3 is over the limit
    assert find_loop([1, 2, 3, 4, 5, 6]) is None and find_loop([]) is None
    assert find_loop(torch.tensor([0, 7, 7, 7, 7])) == (1, 1)  # a tensor works too
    assert find_loop([1, 2, 1, 2, 1, 2, 1, 2, 3]) is None  # the loop must last to the end


def test_find_loop_against_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(300):
        head = rng.integers(0, 3, size=int(rng.integers(0, 6))).tolist()
        cycle = rng.integers(0, 3, size=int(rng.integers(1, 5))).tolist()
        tokens = head + cycle * int(rng.integers(0, 5)) + cycle[: int(rng.integers(0, len(cycle) + 1))]
        for max_period, min_repeats in [(16, 3), (3, 2), (1, 4)]:
            expected = _brute_loop(tokens, max_period, min_repeats)
            assert find_loop(tokens, max_period=max_period, min_repeats=min_repeats) == expected, tokens


def test_find_loop_on_greedy_and_sampled_text():
    src = lesson_source()
    out = greedy(src.as_model(), [1, 2], max_new_tokens=60)  # order 2: the choice depends on 2 words only
    loop = find_loop(out)
    assert loop is not None and loop[0] <= 144
    assert find_loop(src.sample(200, generator=0)) is None


@pytest.mark.parametrize("kwargs", [{"max_period": 0}, {"min_repeats": 1}, {"max_period": 2.0}])
def test_find_loop_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        find_loop([1, 1, 1], **kwargs)


# ---------------------------------------------------------------------------------------------- greedy
# ---------------------------------------------------------------------------------------------- beam step
# ---------------------------------------------------------------------------------------------- top-p
# ---------------------------------------------------------------------------------------------- warp stages
def test_warp_stages_one_knob_after_another():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(10, generator=g, dtype=torch.float64) * 2
    T, k, top_p, min_p = 0.7, 6, 0.8, 0.1
    stages = warp_stages(logits, temperature=T, top_k=k, top_p=top_p, min_p=min_p)
    assert list(stages) == STAGES
    for probs in stages.values():
        assert probs.shape == (10,) and float(probs.sum()) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(stages["model"].numpy(), torch.softmax(logits, -1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(stages["temperature"].numpy(), torch.softmax(logits / T, -1).numpy(), rtol=1e-12)
    # top-k: the k largest logits, renormalised
    top = torch.zeros(10, dtype=torch.bool)
    top[torch.argsort(logits, descending=True)[:k]] = True
    ref = torch.where(top, stages["temperature"], 0.0)
    np.testing.assert_allclose(stages["top-k"].numpy(), (ref / ref.sum()).numpy(), rtol=1e-12, atol=1e-15)
    # top-p: the nucleus of the top-k stage (checked against _nucleus, an independent implementation)
    np.testing.assert_allclose(stages["top-p"].numpy(), _nucleus(stages["top-k"], top_p).numpy(), atol=1e-12)
    # min-p: tokens with probability >= min_p * the top one, renormalised
    prev = stages["top-p"]
    ref = torch.where(prev >= min_p * prev.max(), prev, 0.0)
    np.testing.assert_allclose(stages["min-p"].numpy(), (ref / ref.sum()).numpy(), rtol=1e-12, atol=1e-15)
    # what sampling draws from
    last = torch.softmax(warp_logits(logits, temperature=T, top_k=k, top_p=top_p, min_p=min_p), -1)
    np.testing.assert_allclose(stages["min-p"].numpy(), last.numpy(), rtol=1e-12, atol=1e-15)
    assert (stages["top-k"] > 0).sum() == k
    assert (stages["min-p"] > 0).sum() <= (stages["top-p"] > 0).sum() <= k  # each knob only removes


def test_warp_stages_float32_logits_and_final_stage():
    logits = torch.randn(16, generator=torch.Generator().manual_seed(5))  # float32 in
    opts = {"temperature": 1.3, "top_k": 9, "top_p": 0.7, "min_p": 0.05}
    stages = warp_stages(logits, **opts)
    assert all(p.dtype == torch.float64 for p in stages.values())
    np.testing.assert_allclose(stages["min-p"].numpy(), torch.softmax(warp_logits(logits, **opts).double(), -1),
                               atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    "neutral", [{}, {"top_k": 0, "top_p": 1.0, "min_p": 0.0}, {"top_k": None, "top_p": None, "min_p": None}]
)
def test_warp_stages_neutral_knobs_change_nothing(neutral):
    logits = torch.randn(7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    stages = warp_stages(logits, **neutral)
    for name in STAGES[1:]:
        np.testing.assert_allclose(stages[name].numpy(), stages["model"].numpy(), rtol=1e-12)
    stages = warp_stages(logits, temperature=0.5, **neutral)  # only temperature moves
    for name in STAGES[2:]:
        np.testing.assert_allclose(stages[name].numpy(), stages["temperature"].numpy(), rtol=1e-12)
    assert not np.allclose(stages["temperature"].numpy(), stages["model"].numpy())


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0}, {"temperature": 0.0}, {"temperature": -1.0}, {"top_k": -1}, {"top_p": 0.0},
               {"min_p": 1.5}, {"temperature": float("inf")}]
)  # fmt: skip
def test_warp_stages_rejects_bad_knobs(kwargs):
    with pytest.raises(ValueError):
        warp_stages(torch.zeros(4), **kwargs)


def test_warp_stages_rejects_bad_logits():
    with pytest.raises(TypeError):
        warp_stages(torch.zeros(2, 4))
    with pytest.raises(TypeError):
        warp_stages([0.0, 1.0])


def _nucleus(probs, p):
    """An independent nucleus filter: add tokens best first until their mass reaches p, renormalise."""
    order = sorted(range(len(probs)), key=lambda i: -float(probs[i]))
    kept, mass = [], 0.0
    for i in order:
        kept.append(i)
        mass += float(probs[i])
        if mass >= p:
            break
    out = torch.zeros_like(probs)
    out[kept] = probs[kept]
    return out / out.sum()


# ---------------------------------------------------------------------------------------------- sample_batch
def test_sample_batch_shape_seed_and_greedy(source, tiny_gpt):
    lm = source.as_model()
    out = sample_batch(lm, [1], num_samples=6, max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 5) and out.dtype == torch.long
    assert int(out.min()) >= 0 and int(out.max()) < 4
    again = sample_batch(lm, [1], num_samples=6, max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    other = sample_batch(lm, [1], num_samples=6, max_new_tokens=5, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)
    assert len({tuple(r) for r in out.tolist()}) > 1  # the rows are not copies of one another
    for model, prompt, n in ((lm, [2, 3], 6), (tiny_gpt, [3, 1, 4], 9)):  # the GPT goes past block_size 8
        expected = greedy(model, prompt, max_new_tokens=n)[len(prompt) :]
        for kwargs in ({"temperature": 0}, {"temperature": 1.0, "top_k": 1}, {"temperature": 2.0, "top_k": 1}):
            rows = sample_batch(model, prompt, num_samples=3, max_new_tokens=n,
                                generator=torch.Generator().manual_seed(3), **kwargs)  # fmt: skip
            assert rows.tolist() == [expected] * 3, kwargs


class _NearTie(torch.nn.Module):
    """A float64 model whose next-token logits are always [1, 1 + 1e-12, -5]: token 1 is the argmax in float64,
    but the two top logits are the same number in float32."""

    block_size = None
    vocab_size = 3

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1, dtype=torch.float64))

    def forward(self, idx):
        logits = torch.tensor([1.0, 1.0 + 1e-12, -5.0], dtype=torch.float64)
        return LMOutput(logits.expand(*idx.shape, 3).clone(), None)


def test_sample_batch_at_temperature_zero_is_greedy_for_float64_logits():
    model = _NearTie()
    assert greedy(model, [0], max_new_tokens=3) == [0, 1, 1, 1]
    rows = sample_batch(model, [0], num_samples=2, max_new_tokens=3, temperature=0)
    assert rows.tolist() == [[1, 1, 1]] * 2


def _assert_frequencies(counts: np.ndarray, probs: np.ndarray, n: int) -> None:
    """Each empirical frequency within 4 binomial standard deviations (+1e-3) of its probability."""
    freq = counts / n
    bound = 4 * np.sqrt(probs * (1 - probs) / n) + 1e-3
    assert np.all(np.abs(freq - probs) < bound), (freq, probs)


def test_sample_batch_draws_from_the_true_distribution():
    src = MarkovSource(5, 1, seed=2)
    n, prompt = 4000, [3]
    out = sample_batch(src.as_model(), prompt, num_samples=n, max_new_tokens=2,
                       generator=torch.Generator().manual_seed(0)).numpy()  # fmt: skip
    p1 = src.next_token_probs(prompt)
    _assert_frequencies(np.bincount(out[:, 0], minlength=5), p1, n)
    joint = p1[:, None] * src.transition_matrix()  # p(x1, x2 | prompt) = p(x1 | 3) p(x2 | x1)
    counts = np.zeros((5, 5))
    np.add.at(counts, (out[:, 0], out[:, 1]), 1)
    _assert_frequencies(counts.ravel(), joint.ravel(), n)


@pytest.mark.parametrize("prompt", [[3, 1, 4], [3, 1, 4, 1, 5, 9, 2, 6]], ids=["cache", "sliding"])
def test_sample_batch_second_token_with_a_gpt(tiny_gpt, prompt):
    """The prompt's KV cache copied to 3000 rows gives the right distribution of the second token (the second
    prompt fills block_size 8, so the second step slides the window)."""
    n, block = 3000, tiny_gpt.block_size
    with torch.no_grad():
        p1 = torch.softmax(tiny_gpt(torch.tensor([prompt[-block:]])).logits[0, -1].double(), -1)
        ctx = torch.tensor([(prompt + [x])[-block:] for x in range(12)])
        p2_given = torch.softmax(tiny_gpt(ctx).logits[:, -1].double(), -1)  # (12, 12)
    p2 = (p1[:, None] * p2_given).sum(0).numpy()
    out = sample_batch(tiny_gpt, prompt, num_samples=n, max_new_tokens=2,
                       generator=torch.Generator().manual_seed(1)).numpy()  # fmt: skip
    _assert_frequencies(np.bincount(out[:, 0], minlength=12), p1.numpy(), n)
    _assert_frequencies(np.bincount(out[:, 1], minlength=12), p2, n)


def test_sample_batch_rejects_bad_input(source):
    lm = source.as_model()
    with pytest.raises(ValueError):
        sample_batch(lm, [1], num_samples=0, max_new_tokens=2)
    with pytest.raises(ValueError):
        sample_batch(lm, [1], num_samples=2, max_new_tokens=0)
    with pytest.raises(ValueError):
        sample_batch(lm, [1], num_samples=2, max_new_tokens=2, temperature=-1.0)
    with pytest.raises(ValueError):
        sample_batch(lm, [4], num_samples=2, max_new_tokens=2)  # outside the vocabulary of 4


# ---------------------------------------------------------------------------------------------- distinct-n
def test_distinct_ngrams_hand_examples():
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)  # (1,2) (2,1) (1,2)
    assert distinct_n([[1, 2, 1, 2]], 1) == 0.5
    assert distinct_n([[1, 2, 3, 4]], 3) == 1.0
    assert distinct_n([[5, 5, 5, 5, 5]], 2) == 0.25
    # n-grams do not cross sequences: pooled they would be (1,2) (2,1) (1,2) = 2/3, (1,1) = 1.0
    assert distinct_n([[1, 2], [1, 2]], 2) == 0.5
    assert distinct_n([[1], [1]], 2) == 0.0
    assert distinct_n([[1, 2, 3], [9], [2, 3, 4]], 2) == 0.75  # (1,2) (2,3) (2,3) (3,4)
    assert distinct_n([], 2) == 0.0
    assert distinct_n([[], [1]], 1) == 1.0
    assert distinct_n(torch.tensor([[1, 2, 1, 2], [1, 2, 1, 2]]), 2) == pytest.approx(2 / 6)
    assert distinct_n((range(4), (0, 1)), 2) == pytest.approx(3 / 4)
    for n in (0, -1, 1.0, True):
        with pytest.raises(ValueError):
            distinct_n([[1, 2]], n)


# ---------------------------------------------------------------------------------------------- beam width
def _expected_expansions(K: int, V: int, T: int) -> int:
    """Without EOS every step runs each running beam once; step t has min(K, V**t) beams."""
    return sum(min(K, V**t) for t in range(T))


def test_beam_width_sweep_against_brute_force():
    src, T = MarkovSource(4, 1, seed=0), 4
    prompts = [[0], [1], [2], [3], [1, 2]]
    widths = [1, 2, 3, 64]  # 64 = 4**3: every prefix of T - 1 tokens survives, so the search is exhaustive
    rows = beam_width_sweep(src, prompts, widths, max_new_tokens=T)
    assert [r.num_beams for r in rows] == widths and all(isinstance(r, BeamWidthRow) for r in rows)
    best = [_brute_best(src, p, T) for p in prompts]
    optimum = statistics.fmean(lp for _, lp, _ in best)
    greedy_lps = [_logprob_of(src, p, greedy(src.as_model(), p, max_new_tokens=T)[len(p) :]) for p in prompts]
    # beam search scores in float32: agreement to 1e-5 nats
    assert rows[0].mean_logprob == pytest.approx(statistics.fmean(greedy_lps), abs=1e-5)
    assert rows[0].mean_gap == pytest.approx(optimum - statistics.fmean(greedy_lps), abs=1e-5)
    assert rows[0].mean_gap > 0.01  # greedy misses the optimum on some prompt of this language
    assert rows[-1].mean_logprob == pytest.approx(optimum, abs=1e-5)
    assert rows[-1].mean_gap == pytest.approx(0.0, abs=1e-5)
    for r in rows:
        assert r.mean_gap >= 0 and r.mean_logprob <= optimum + 1e-5
        assert r.mean_logprob + r.mean_gap == pytest.approx(optimum, abs=1e-5)  # gaps are never clipped here
        assert 0.0 <= r.found_optimum <= 1.0 and r.seconds >= 0
        assert r.expansions == _expected_expansions(r.num_beams, 4, T)
    assert [r.expansions for r in rows] == [4, 7, 10, 85]


def test_beam_width_sweep_found_optimum_counts_optimal_outputs():
    src, T = MarkovSource(4, 1, seed=2), 4
    prompts = [[0], [1], [2], [3]]
    lm = src.as_model()
    rows = beam_width_sweep(src, prompts, [1, 64], max_new_tokens=T)
    for r in rows:
        found = [beam_search(lm, p, num_beams=r.num_beams, max_new_tokens=T, length_penalty=0.0,
                             early_stopping="never")[0].tokens[len(p) :] for p in prompts]  # fmt: skip
        expected = statistics.fmean(f == _brute_best(src, p, T)[0] for f, p in zip(found, prompts, strict=True))
        assert r.found_optimum == expected
    assert rows[-1].found_optimum == 1.0


@pytest.mark.parametrize("V", [2, 3, 5])
def test_beam_search_cost_counts_the_model_calls(V):
    src = MarkovSource(V, 1, seed=V)
    for K in (1, 2, 3, 4, 7, 12):
        for n in (1, 2, 3, 5):
            [_], tree = beam_search(src.as_model(), [0], num_beams=K, max_new_tokens=n, length_penalty=0.0,
                                    early_stopping="never", return_tree=True)  # fmt: skip
            assert beam_search_cost(K, n, V) == tree.expansions, (K, n, V)
            if K <= V:
                assert beam_search_cost(K, n, V) == 1 + K * (n - 1)


def test_beam_search_cost_rejects_bad_input():
    for args in [(0, 3, 4), (2, 0, 4), (2, 3, 0), (2.0, 3, 4)]:
        with pytest.raises(ValueError):
            beam_search_cost(*args)


def test_beam_width_sweep_cost_is_beam_search_cost():
    src = MarkovSource(3, 1, seed=1)
    rows = beam_width_sweep(src, [[0], [2]], [1, 2, 5], max_new_tokens=4)
    assert [r.expansions for r in rows] == [beam_search_cost(k, 4, 3) for k in (1, 2, 5)]


def test_beam_width_sweep_rejects_bad_input(source):
    with pytest.raises(ValueError):
        beam_width_sweep(source, [], [1], max_new_tokens=2)
    with pytest.raises(ValueError):
        beam_width_sweep(source, [[1]], [0], max_new_tokens=2)
    with pytest.raises(ValueError):
        beam_width_sweep(source, [[1]], [1], max_new_tokens=0)
    with pytest.raises(TypeError):
        beam_width_sweep(source.as_model(), [[1]], [1], max_new_tokens=2)


# ---------------------------------------------------------------------------------------------- search vs model error
PROMPTS = [[0], [1], [2], [3], [1, 2]]


def test_search_and_model_errors_with_the_true_model(source):
    """MarkovSource(4, 1, seed=0), 4 tokens: on every prompt the best continuation beats the runner-up by more
    than 1e-6 nats (checked below), so there are no ties and exact search must return the truth's optimum."""
    T = 4
    rows = search_and_model_errors(source.as_model(), source, PROMPTS, max_new_tokens=T)
    assert [r.decoder for r in rows] == ["greedy", "beam 2", "beam 4", "exact"]
    best = [_brute_best(source, p, T) for p in PROMPTS]
    assert all(lp - second > 1e-6 for _, lp, second in best)
    exact = rows[-1]
    assert exact.search_errors == 0.0 and exact.true_optimum == 1.0  # no model error with the true model
    assert exact.model_logprob == pytest.approx(statistics.fmean(lp for _, lp, _ in best), abs=1e-9)
    assert exact.true_logprob == pytest.approx(exact.model_logprob, abs=1e-9)
    # greedy, recomputed independently
    outs = [greedy(source.as_model(), p, max_new_tokens=T)[len(p) :] for p in PROMPTS]
    lps = [_logprob_of(source, p, o) for p, o in zip(PROMPTS, outs, strict=True)]
    g = rows[0]
    assert g.search_errors == statistics.fmean(lp < b[1] - 1e-6 for lp, b in zip(lps, best, strict=True))
    assert g.search_errors > 0  # greedy misses the optimum on some prompt
    assert g.true_optimum == statistics.fmean(o == b[0] for o, b in zip(outs, best, strict=True))
    assert g.model_logprob == pytest.approx(statistics.fmean(lps), abs=1e-9)
    for r in rows:
        assert r.model_logprob <= exact.model_logprob + 1e-9
        assert r.true_logprob == pytest.approx(r.model_logprob, abs=1e-9)  # model == truth
        assert r.true_optimum == pytest.approx(1.0 - r.search_errors)


def test_search_and_model_errors_with_a_wrong_model(source):
    T, wrong = 3, MarkovSource(4, 1, seed=10)
    rows = search_and_model_errors(wrong.as_model(), source, PROMPTS, max_new_tokens=T, beam_widths=(3,))
    assert [r.decoder for r in rows] == ["greedy", "beam 3", "exact"]
    model_best = [_brute_best(wrong, p, T) for p in PROMPTS]
    true_best = [_brute_best(source, p, T) for p in PROMPTS]
    assert all(lp - second > 1e-6 for _, lp, second in model_best + true_best)  # no ties in either
    exact = rows[-1]
    assert exact.search_errors == 0.0  # exact search never makes a search error ...
    assert exact.model_logprob == pytest.approx(statistics.fmean(lp for _, lp, _ in model_best), abs=1e-9)
    # ... but the model's optimum is not the truth's: a model error
    assert exact.true_optimum == statistics.fmean(m[0] == t[0] for m, t in zip(model_best, true_best, strict=True))
    assert exact.true_optimum < 1.0
    true_lps = [_logprob_of(source, p, m[0]) for p, m in zip(PROMPTS, model_best, strict=True)]
    assert exact.true_logprob == pytest.approx(statistics.fmean(true_lps), abs=1e-9)
    assert exact.true_logprob < statistics.fmean(lp for _, lp, _ in true_best)


def test_error_records_prompt_by_prompt(source):
    T, wrong = 3, MarkovSource(4, 1, seed=10)
    records = error_records(wrong.as_model(), source, PROMPTS, max_new_tokens=T, beam_widths=(3,))
    assert all(isinstance(r, ErrorRecord) for r in records)
    assert [(r.prompt, r.decoder) for r in records] == [
        (tuple(p), d) for p in PROMPTS for d in ("greedy", "beam 3", "exact")
    ]
    for r in records:
        p = list(r.prompt)
        model_best, model_best_lp, _ = _brute_best(wrong, p, T)
        truth_best, true_best_lp, _ = _brute_best(source, p, T)
        assert len(r.generated) == T
        assert r.model_logprob == pytest.approx(_logprob_of(wrong, p, r.generated), abs=1e-9)
        assert r.true_logprob == pytest.approx(_logprob_of(source, p, r.generated), abs=1e-9)
        assert r.model_best == pytest.approx(model_best_lp, abs=1e-9)
        assert r.true_best == pytest.approx(true_best_lp, abs=1e-9)
        assert r.truth_best == (list(r.generated) == truth_best)
        assert r.search_error == (r.model_logprob < model_best_lp - 1e-6)
        if r.decoder == "exact":
            assert list(r.generated) == model_best and not r.search_error
        if r.decoder == "greedy":
            assert list(r.generated) == greedy(wrong.as_model(), p, max_new_tokens=T)[len(p) :]
    # the summary is the mean of the records, and what search_and_model_errors returns
    rows = summarize_errors(records)
    assert rows == search_and_model_errors(wrong.as_model(), source, PROMPTS, max_new_tokens=T, beam_widths=(3,))
    for row in rows:
        mine = [r for r in records if r.decoder == row.decoder]
        assert row.search_errors == statistics.fmean(r.search_error for r in mine)
        assert row.true_optimum == statistics.fmean(r.truth_best for r in mine)
        assert row.true_logprob == pytest.approx(statistics.fmean(r.true_logprob for r in mine))
    with pytest.raises(ValueError):
        summarize_errors([])
    with pytest.raises(TypeError):
        summarize_errors(rows)


def test_search_and_model_errors_rejects_bad_input(source):
    with pytest.raises(ValueError):
        search_and_model_errors(source.as_model(), source, [], max_new_tokens=2)
    with pytest.raises(ValueError):
        search_and_model_errors(source.as_model(), source, [[1]], max_new_tokens=0)
    with pytest.raises(TypeError):
        search_and_model_errors(source.as_model(), source.as_model(), [[1]], max_new_tokens=2)


# ---------------------------------------------------------------------------------------------- length
LENGTH_NAMES = ["exact search", "beam 3, length_penalty 0", "beam 3, length_penalty 1", "beam 3, length_penalty 2",
                "sampling"]  # fmt: skip


def _length_rows(seed: int, T: int = 5):
    src = MarkovSource(4, 1, seed=seed)
    prompts = [[1], [2], [3], [1, 2]]
    rows = length_study(src.as_model(), prompts, eos_token_id=0, max_new_tokens=T, num_beams=3, samples_per_prompt=3)
    return src, prompts, rows


@pytest.mark.parametrize("seed", [0, 2])
def test_length_study_exact_is_the_most_probable_complete_output(seed):
    T = 5
    src, prompts, rows = _length_rows(seed, T)
    assert [r.decoder for r in rows] == LENGTH_NAMES
    best = []
    for p in prompts:  # brute force over every complete output of <= T tokens
        outs = list(_complete_outputs(4, 0, T))
        lp = [_logprob_of(src, p, o) for o in outs]
        best.append(outs[int(np.argmax(lp))])
    exact = rows[0]
    best_lps = [_logprob_of(src, p, b) for p, b in zip(prompts, best, strict=True)]
    assert exact.mean_logprob == pytest.approx(statistics.fmean(best_lps), abs=1e-9)
    assert exact.mean_length == statistics.fmean(len(b) for b in best)
    assert exact.hit_limit == statistics.fmean(b[-1] != 0 for b in best)
    for r in rows:
        assert 1 <= r.mean_length <= T and 0.0 <= r.hit_limit <= 1.0
        assert r.mean_logprob <= exact.mean_logprob + 1e-5  # beam rows are float32 sums
    assert rows[1:4] != rows[4:]  # the rows differ: not one decoder copied


def test_length_study_keeps_every_length():
    src, prompts, rows = _length_rows(0)
    for r in rows:
        per_prompt = 3 if r.decoder == "sampling" else 1
        assert isinstance(r, LengthRow) and len(r.lengths) == per_prompt * len(prompts)
        assert all(type(n) is int and 1 <= n <= 5 for n in r.lengths)
        assert r.mean_length == pytest.approx(statistics.fmean(r.lengths))
    exact = rows[0]
    for p, n in zip(prompts, exact.lengths, strict=True):
        outs = list(_complete_outputs(4, 0, 5))
        assert n == len(outs[int(np.argmax([_logprob_of(src, p, o) for o in outs]))])


def test_length_study_no_row_beats_exact_search():
    _, _, rows = _length_rows(0)
    assert all(r.mean_logprob <= rows[0].mean_logprob + 1e-9 for r in rows)


def test_length_study_is_reproducible_and_checks_input(source):
    _, _, a = _length_rows(3, T=3)
    _, _, b = _length_rows(3, T=3)
    assert a == b
    with pytest.raises(ValueError):
        length_study(source.as_model(), [], eos_token_id=0, max_new_tokens=3)
    with pytest.raises(ValueError):
        length_study(source.as_model(), [[1]], eos_token_id=0, max_new_tokens=0)
    with pytest.raises(ValueError):
        length_study(source.as_model(), [[1]], eos_token_id=4, max_new_tokens=3)


# ---------------------------------------------------------------------------------------------- quality
def _expected_logprob_per_token(src: MarkovSource, last_token: int, T: int) -> float:
    """E[(1/T) sum_t log p(x_t | x_{t-1})] for T tokens sampled from an order-1 source after ``last_token``.

    The distribution d_t of the token before x_t starts at ``last_token`` and moves by d_{t+1} = d_t P.
    """
    P = src.transition_matrix()
    per_context = (P * np.log(P)).sum(axis=1)  # E[log p(x | s)] for each previous token s
    d = np.zeros(src.vocab_size)
    d[last_token] = 1.0
    total = 0.0
    for _ in range(T):
        total += float(d @ per_context)
        d = d @ P
    return total / T


def test_quality_diversity_at_temperature_one_scores_the_entropy_rate():
    src, prompt, n, T = MarkovSource(5, 1, seed=3), [1], 300, 40
    rows = quality_diversity(src.as_model(), src, prompt, {"temperature 1": {"temperature": 1.0}},
                             num_samples=n, max_new_tokens=T, n=3, seed=0)  # fmt: skip
    [row] = rows
    assert isinstance(row, QualityRow) and row.setting == "temperature 1" and row.options == {"temperature": 1.0}
    expected = _expected_logprob_per_token(src, prompt[-1], T)
    # The n rows are independent, so the quality (the mean of n row means) has standard error sd(row) / sqrt(n);
    # sd(row) is estimated from the same seeded draws. 4 standard errors: a false alarm under 1e-4.
    samples = sample_batch(src.as_model(), prompt, num_samples=n, max_new_tokens=T,
                           generator=torch.Generator().manual_seed(0)).numpy()  # fmt: skip
    full = np.concatenate([np.full((n, 1), prompt[-1]), samples], axis=1)
    row_means = src.token_logprobs(full).mean(axis=1)
    se = row_means.std(ddof=1) / math.sqrt(n)
    assert abs(row.true_logprob_per_token - expected) < 4 * se
    # After a few steps the chain forgets the prompt: averaged over 40 tokens the expectation is within 0.02 nats
    # of -H (exact numbers: 0.011), so the sampled quality is close to the negative entropy rate.
    assert abs(expected + src.entropy_rate()) < 0.02
    assert abs(row.true_logprob_per_token + src.entropy_rate()) < 4 * se + 0.02
    assert row.distinct == pytest.approx(distinct_n(samples, 3))  # the same seeded draws


def test_quality_diversity_temperature_trades_quality_for_diversity():
    src = lesson_source()
    settings = {"temperature 0.25": {"temperature": 0.25}, "temperature 2": {"temperature": 2.0},
                "top-p 0.5": {"top_p": 0.5}}  # fmt: skip
    kwargs = {"num_samples": 16, "max_new_tokens": 16, "n": 3, "seed": 4}
    rows = quality_diversity(src.as_model(), src, [0, 1], settings, **kwargs)
    assert [r.setting for r in rows] == list(settings)
    assert [r.options for r in rows] == list(settings.values())
    cold, hot = rows[0], rows[1]
    assert cold.true_logprob_per_token > hot.true_logprob_per_token
    assert cold.distinct < hot.distinct
    assert all(0 < r.distinct <= 1 and r.true_logprob_per_token < 0 for r in rows)
    # reproducible, and each setting independent of the others and of their order
    assert quality_diversity(src.as_model(), src, [0, 1], settings, **kwargs) == rows
    reversed_rows = quality_diversity(src.as_model(), src, [0, 1], dict(reversed(settings.items())), **kwargs)
    assert reversed_rows == rows[::-1]
    other_seed = quality_diversity(src.as_model(), src, [0, 1], settings, **{**kwargs, "seed": 5})
    assert other_seed != rows
    with pytest.raises(TypeError):
        quality_diversity(src.as_model(), src.as_model(), [0, 1], settings, **kwargs)


# ---------------------------------------------------------------------------------------------- the lesson's language
def test_lesson_source_is_the_documented_language():
    src = lesson_source()
    words = src.words
    assert words[0] == "." and len(words) == 12 and len(set(words)) == 12
    assert src.vocab_size == 12 and src.order == 2
    np.testing.assert_array_equal(src.transition_matrix(), MarkovSource(12, 2, seed=0).transition_matrix())
    assert src.encode(". ba") == [0, 1]


def test_train_on_source_is_deterministic():
    src = lesson_source()
    a = train_on_source(src, steps=5, n_train=2000, block_size=8, seed=1)
    b = train_on_source(src, steps=5, n_train=2000, block_size=8, seed=1)
    assert isinstance(a, GPT) and not a.training
    assert a.vocab_size == 12 and a.block_size == 8
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.manual_seed(1)  # the same init, untrained: training moved the weights
    fresh = GPT(GPTConfig.preset("micro", vocab_size=12, block_size=8))
    assert not torch.equal(fresh.state_dict()["lm_head.weight"], sa["lm_head.weight"])
    with pytest.raises(TypeError):
        train_on_source(src.as_model(), steps=1)


# ---------------------------------------------------------------------------------------------- plots
def test_plot_warp_stages_draws_each_stage():
    logits = torch.randn(9, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2
    stages = warp_stages(logits, temperature=0.8, top_k=6, top_p=0.8, min_p=0.1)
    labels = [f"w{i}" for i in range(9)]
    axes = plot_warp_stages(stages, labels, top=7)
    assert len(axes) == 5
    order = np.argsort(-stages["model"].numpy(), kind="stable")[:7]
    for ax, name in zip(axes, STAGES, strict=True):
        p = stages[name].numpy()[order]
        heights = [patch.get_height() for patch in ax.patches]
        assert heights == pytest.approx(p[p > 0].tolist())  # one bar per kept token, in rank order
        [ticks] = ax.get_lines()  # the removed tokens: grey ticks at height 0
        np.testing.assert_array_equal(ticks.get_xdata(), np.flatnonzero(p == 0))
        assert [t.get_text() for t in ax.get_xticklabels()] == [labels[i] for i in order]
        assert ax.get_title().startswith(name)
    assert len(axes[0].patches) == 7 and len(axes[-1].patches) < 6
    with pytest.raises(ValueError, match="labels"):
        plot_warp_stages(stages, labels[:-1])
    with pytest.raises(ValueError):
        plot_warp_stages({}, labels)
    _, given = plt.subplots(1, 5)
    assert plot_warp_stages(stages, labels, axes=given)[2] is given[2]


def test_plot_draws_bars():
    probs = torch.tensor([0.1, 0.5, 0.15, 0.25])
    draws = torch.tensor([1, 1, 3, 0, 1, 2, 1, 3])
    ax = plot_draws(probs, draws, ["a", "b", "c", "d"], top=3)
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 6
    assert heights[:3] == pytest.approx([0.5, 0.25, 0.15])  # probabilities, ranked
    assert heights[3:] == pytest.approx([4 / 8, 2 / 8, 1 / 8])  # shares of the draws of the same tokens
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "d", "c"]


def test_plot_beam_sweep_lines():
    rows = [BeamWidthRow(1, -3.0, 0.5, 0.25, 4.0, 0.1), BeamWidthRow(2, -2.8, 0.3, 0.5, 7.0, 0.1),
            BeamWidthRow(8, -2.5, 0.0, 1.0, 25.0, 0.2)]  # fmt: skip
    axes = plot_beam_sweep(rows)
    [gap] = axes[0].get_lines()
    [cost] = axes[1].get_lines()
    np.testing.assert_array_equal(gap.get_xdata(), [1, 2, 8])
    np.testing.assert_array_equal(gap.get_ydata(), [0.5, 0.3, 0.0])
    np.testing.assert_array_equal(cost.get_ydata(), [4.0, 7.0, 25.0])
    assert [t.get_text() for t in axes[0].texts] == ["25% optimal", "50% optimal", "100% optimal"]


def test_plot_search_and_model_errors_points():
    def rec(decoder, model_lp, true_lp, model_best, true_best, truth_best):
        return ErrorRecord(decoder, (1,), (2, 3), model_lp, true_lp, model_best, true_best, truth_best)

    records = [rec("greedy", -3.0, -3.5, -2.0, -2.5, False), rec("exact", -2.0, -2.5, -2.0, -2.5, True),
               rec("greedy", -1.0, -1.2, -1.0, -1.1, False), rec("exact", -1.0, -1.3, -1.0, -1.1, False)]  # fmt: skip
    left, right = plot_search_and_model_errors(records)
    [greedy_points] = left.collections
    np.testing.assert_array_equal(greedy_points.get_offsets(), [[-2.0, -3.0], [-1.0, -1.0]])
    assert greedy_points.get_label() == "greedy: 1 of 2 below"
    [exact_points] = right.collections
    np.testing.assert_array_equal(exact_points.get_offsets(), [[-2.5, -2.5], [-1.1, -1.3]])
    assert exact_points.get_label() == "exact search: 1 of 2 below"
    for ax in (left, right):
        [diagonal] = ax.get_lines()
        np.testing.assert_array_equal(diagonal.get_xdata(), diagonal.get_ydata())
    with pytest.raises(ValueError):
        plot_search_and_model_errors([])


def test_plot_lengths_panels():
    rows = [LengthRow("exact search", 1.5, -1.0, 0.0, (1, 2, 1, 2)), LengthRow("beam", 4.0, -3.0, 0.5, (4, 4)),
            LengthRow("sampling", 2.5, -2.0, 0.0, (1, 2, 3, 4))]  # fmt: skip
    axes = plot_lengths(rows, bin_width=1, reference_label="the truth")
    assert len(axes) == 2 and [ax.get_title() for ax in axes] == ["exact search", "beam"]
    heights = [p.get_height() for p in axes[0].patches]
    assert heights[:4] == pytest.approx([0.25, 0.25, 0.25, 0.25])  # the reference: one length of four in each bin
    assert heights[4:] == pytest.approx([0.5, 0.5, 0.0, 0.0])  # exact search: half 1, half 2
    assert [p.get_height() for p in axes[1].patches][4:] == pytest.approx([0.0, 0.0, 0.0, 1.0])
    assert axes[0].get_legend().get_texts()[0].get_text() == "the truth: mean 2.5"
    with pytest.raises(ValueError, match="no row named"):
        plot_lengths(rows[:2])
    with pytest.raises(ValueError):
        plot_lengths([*rows, LengthRow("no lengths", 1.0, -1.0, 0.0)])


def test_plot_quality_diversity_groups_settings():
    rows = [QualityRow("temperature 0.5", {}, -1.0, 0.2), QualityRow("temperature 1", {}, -1.5, 0.5),
            QualityRow("top-p 0.9", {}, -1.2, 0.4), QualityRow("temperature 2", {}, -2.5, 0.9)]  # fmt: skip
    ax = plot_quality_diversity(rows, reference=(-1.6, 0.55))
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["temperature", "top-p", "the true source's own samples"]
    np.testing.assert_array_equal(lines[0].get_xdata(), [0.2, 0.5, 0.9])
    np.testing.assert_array_equal(lines[0].get_ydata(), [-1.0, -1.5, -2.5])
    np.testing.assert_array_equal(lines[1].get_ydata(), [-1.2])
    np.testing.assert_array_equal(lines[2].get_xdata(), [0.55])
    np.testing.assert_array_equal(lines[2].get_ydata(), [-1.6])
    assert [t.get_text() for t in ax.texts] == ["0.5", "1", "2", "0.9"]
    assert len(plot_quality_diversity(rows).get_lines()) == 2  # no reference star


def test_plot_cache_timing_lines():
    rows = [CacheTimingRow(4, 1.0, 2.0, 7, 18), CacheTimingRow(8, 1.1, 3.5, 11, 52)]
    ax = plot_cache_timing(rows)
    cached, uncached = ax.get_lines()
    np.testing.assert_array_equal(cached.get_xdata(), [4, 8])
    np.testing.assert_array_equal(cached.get_ydata(), [1.0, 1.1])
    np.testing.assert_array_equal(uncached.get_ydata(), [2.0, 3.5])
    assert ax.get_ylim()[0] == 0


# ---------------------------------------------------------------------------------------------- widgets
def test_show_warp_draws_and_prints_three_continuations(monkeypatch, capsys):
    from lmlab.lessons import decoding as widgets

    src = MarkovSource(5, 1, seed=0)
    lm = src.as_model()
    monkeypatch.setattr(plt, "show", lambda: None)
    opts = {"temperature": 0.8, "top_k": 3, "top_p": 0.9, "min_p": 0.05}
    widgets.show_warp(lm, src, [1, 2], draws=50, seed=4, **opts)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0].startswith(f"after {src.decode([1, 2])!r}")
    for i, line in enumerate(lines[1:]):
        out = sample(lm, [1, 2], max_new_tokens=12, generator=torch.Generator().manual_seed(4 + i), **opts)
        assert line == "  ... " + src.decode(out[2:])
    fig = plt.gcf()
    assert len(fig.axes) == 6  # five stages and the draws
    stages = warp_stages(lm(torch.tensor([[1, 2]])).logits[0, -1], **opts)
    final = sorted(stages["min-p"].tolist(), reverse=True)
    draws_ax = fig.axes[-1]
    heights = [p.get_height() for p in draws_ax.patches]
    assert heights[:5] == pytest.approx(final, abs=1e-7)
    assert sum(heights[5:]) == pytest.approx(1.0)  # every one of the 50 draws is counted once
    assert all(h == 0 for h, p in zip(heights[5:], final, strict=True) if p == 0)  # removed tokens never drawn


def test_show_warp_with_knobs_off(monkeypatch, capsys):
    from lmlab.lessons import decoding as widgets

    src = MarkovSource(5, 1, seed=0)
    monkeypatch.setattr(plt, "show", lambda: None)
    widgets.show_warp(src.as_model(), src, [3], draws=20)  # top_k 0, top_p 1, min_p 0: all off
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(len(line.split()) == 13 for line in out[1:])  # "..." and 12 words


def test_warp_explorer_controls(monkeypatch, capsys):
    ipywidgets = pytest.importorskip("ipywidgets")
    from lmlab.lessons import decoding as widgets

    src = MarkovSource(5, 1, seed=0)
    monkeypatch.setattr(plt, "show", lambda: None)
    explorer = widgets.warp_explorer(src.as_model(), src, [1], draws=30)
    assert isinstance(explorer, ipywidgets.interactive)
    assert list(explorer.kwargs) == ["temperature", "top_k", "top_p", "min_p", "seed"]
    assert explorer.kwargs == {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 0}
    controls = explorer.children[:5]
    assert [c.description.split()[0] for c in controls] == ["temperature", "top-k", "top-p", "min-p", "seed"]
    assert controls[1].max == 5  # top-k up to the vocabulary size
    out = capsys.readouterr().out  # drawn once when built (ipywidgets adds terminal clear-line codes)
    assert out.count("three continuations") == 1 and out.count("\n  ... ") == 3
    controls[4].value = 7  # moving a slider reruns show_warp
    assert explorer.kwargs["seed"] == 7
    out = capsys.readouterr().out
    assert out.count("three continuations") == 1 and out.count("\n  ... ") == 3


# ---------------------------------------------------------------------------------------------- KV cache
def test_cache_timing_counts_the_tokens_read(tiny_gpt):
    prompt, P = [1, 2, 3], 3
    reads: list[int] = []
    hook = tiny_gpt.register_forward_pre_hook(lambda module, args: reads.append(args[0].shape[1]))
    try:
        for n in (1, 2, 5):
            reads.clear()
            [row] = cache_timing(tiny_gpt, prompt, [n], repeats=1)
            assert isinstance(row, CacheTimingRow) and row.new_tokens == n
            assert row.tokens_read_cache == P + n - 1
            assert row.tokens_read_no_cache == sum(P + i for i in range(n))
            # measured: the model really reads that many tokens (with the cache first, then without)
            assert sum(reads) == row.tokens_read_cache + row.tokens_read_no_cache
            assert reads[:n] == [P] + [1] * (n - 1)
            assert reads[n:] == [P + i for i in range(n)]
            assert row.ms_per_token_cache > 0 and row.ms_per_token_no_cache > 0
            assert row.slowdown == pytest.approx(row.ms_per_token_no_cache / row.ms_per_token_cache)
    finally:
        hook.remove()
    rows = cache_timing(tiny_gpt, prompt, [1, 5], repeats=1)
    assert [r.new_tokens for r in rows] == [1, 5]
    assert [r.tokens_read_no_cache for r in rows] == [3, 25]


def test_kv_cache_size_is_what_the_gpt_cache_holds():
    for n_layer, n_head, n_embd, length, batch in [(1, 2, 16, 7, 1), (3, 4, 32, 20, 2), (2, 1, 8, 1, 3)]:
        model = GPT(GPTConfig(vocab_size=12, block_size=32, n_layer=n_layer, n_head=n_head, n_embd=n_embd))
        cache = model.new_cache(batch_size=batch, max_len=length)
        held = sum(t.numel() for t in cache.k + cache.v)
        assert kv_cache_size(n_layer=n_layer, n_kv_head=n_head, head_size=n_embd // n_head, length=length,
                             batch_size=batch) == held  # fmt: skip
        assert held == 2 * n_layer * batch * length * n_embd  # every head keeps its own: the width per token
    # grouped-query attention keeps fewer: 8 key/value heads of 128 instead of 64
    assert kv_cache_size(n_layer=80, n_kv_head=8, head_size=128, length=1) * 8 == \
        kv_cache_size(n_layer=80, n_kv_head=64, head_size=128, length=1)
    assert kv_cache_size(n_layer=1, n_kv_head=1, head_size=1, length=0) == 0
    for bad in [{"n_layer": 0}, {"length": -1}, {"head_size": 2.0}, {"batch_size": 0}]:
        with pytest.raises(ValueError):
            kv_cache_size(**{"n_layer": 2, "n_kv_head": 2, "head_size": 4, "length": 3, **bad})


def test_cache_timing_rejects_what_does_not_fit(tiny_gpt):
    with pytest.raises(ValueError, match="context limit"):
        cache_timing(tiny_gpt, [1, 2, 3], [6], repeats=1)  # 3 + 6 > 8
    with pytest.raises(ValueError):
        cache_timing(tiny_gpt, [1, 2, 3], [0], repeats=1)
    with pytest.raises(ValueError):
        cache_timing(tiny_gpt, [1, 2, 3], [2], repeats=0)
    assert cache_timing(tiny_gpt, [1, 2, 3], [5], repeats=1)[0].new_tokens == 5  # 3 + 5 == 8 fits
