"""Decoding: greedy, sampling and beam search with a KV cache, the logits warpers, bad input, the benchmark.

Comparisons with transformers are in test_decoding_hf.py; exact search and search trees in test_search.py.
"""

import math
import re

import pytest
import torch

from lmlab import GPT, GPTConfig
from lmlab.generation import (
    DecodeState,
    Hypothesis,
    beam_search,
    decode_one_token,
    exact_search,
    greedy,
    prefill,
    sample,
    sample_next_token,
    warp_logits,
)


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(3)
    return GPT(GPTConfig.preset("micro", vocab_size=20, block_size=16)).eval()


def greedy_without_cache(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ctx = torch.tensor([ids[-model.block_size :]])
        ids.append(int(model(ctx).logits[0, -1].argmax()))
    return ids


class Uncached(torch.nn.Module):
    """A model without new_cache or block_size that crops its input to the wrapped model's window itself:
    generation through it re-reads the whole prefix each step, the reference for sliding-window decoding."""

    def __init__(self, inner: GPT) -> None:
        super().__init__()
        self.inner = inner
        self.vocab_size = inner.vocab_size

    def forward(self, idx):
        return self.inner(idx[:, -self.inner.block_size :])


# ---------------------------------------------------------------------------------------------- greedy, sample
def test_greedy_equals_uncached_argmax_loop_also_past_block_size(model):
    prompt = [1, 2, 3]
    got = greedy(model, prompt, max_new_tokens=30)  # 33 tokens > block_size 16: the window slides
    assert got == greedy_without_cache(model, prompt, 30)
    assert got[:3] == prompt and len(got) == 33
    assert greedy(model, prompt, max_new_tokens=30, use_cache=False) == got


def test_greedy_stops_at_eos(model):
    full = greedy(model, [1], max_new_tokens=10)
    eos = full[4]
    stopped = greedy(model, [1], max_new_tokens=10, eos_token_id=eos)
    assert stopped == full[: full.index(eos, 1) + 1]


def test_prompt_longer_than_block_size_reads_its_last_block(model):
    prompt = list(range(20))  # 20 > block_size 16
    assert greedy(model, prompt, max_new_tokens=5) == greedy_without_cache(model, prompt, 5)
    assert greedy(model, torch.tensor(prompt), max_new_tokens=0) == prompt


def test_prefill_and_decode_one_token_give_the_full_forward_logits(model):
    prompt = torch.tensor([3, 1, 4, 1, 5])
    logits, state = prefill(model, prompt, max_new_tokens=4)
    assert isinstance(state, DecodeState) and logits.shape == (1, 20)
    ids = prompt.tolist()
    for token in (9, 2, 6):
        ids.append(token)
        logits = decode_one_token(state, torch.tensor([token]))
        ref = model(torch.tensor([ids])).logits[0, -1]
        torch.testing.assert_close(logits[0], ref, atol=1e-5, rtol=0)
    assert state.tokens() == ids
    with pytest.raises(ValueError, match="one per row"):
        decode_one_token(state, torch.tensor([1, 2]))


def test_sampling_is_reproducible_and_temperature_zero_is_greedy(model):
    a = sample(model, [1, 2], max_new_tokens=20, generator=torch.Generator().manual_seed(5))
    b = sample(model, [1, 2], max_new_tokens=20, generator=torch.Generator().manual_seed(5))
    c = sample(model, [1, 2], max_new_tokens=20, generator=torch.Generator().manual_seed(6))
    assert a == b and a != c
    assert sample(model, [1, 2], max_new_tokens=20, temperature=0) == greedy(model, [1, 2], max_new_tokens=20)


def test_sampling_with_and_without_cache_agree_past_block_size(model):
    kw = dict(max_new_tokens=25, temperature=0.9, top_k=8, top_p=0.95, min_p=0.02, repetition_penalty=1.2)
    a = sample(model, [1, 2], generator=torch.Generator().manual_seed(1), **kw)
    b = sample(model, [1, 2], generator=torch.Generator().manual_seed(1), use_cache=False, **kw)
    assert a == b and len(a) == 27


def test_top_k_one_is_greedy(model):
    got = sample(model, torch.tensor([4]), max_new_tokens=12, top_k=1, generator=torch.Generator().manual_seed(0))
    assert got == greedy(model, [4], max_new_tokens=12)


def test_temperature_zero_with_repetition_penalty_is_greedy_on_penalised_logits(model):
    ids = [5]
    for _ in range(8):
        logits = model(torch.tensor([ids])).logits[0, -1]
        ids.append(int(warp_logits(logits, ids, repetition_penalty=3.0).argmax()))
    assert sample(model, [5], max_new_tokens=8, temperature=0, repetition_penalty=3.0) == ids
    assert len(set(ids)) > len(set(greedy(model, [5], max_new_tokens=8)))  # the penalty does discourage repeats


def test_sampling_follows_the_model_distribution(model):
    # first sampled token: empirical frequencies vs the softmax, 4000 draws, within 5 standard errors
    probs = torch.softmax(model(torch.tensor([[7]])).logits[0, -1], -1)
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(20)
    for _ in range(4000):
        counts[sample(model, [7], max_new_tokens=1, generator=g)[-1]] += 1
    freq = counts / 4000
    se = (probs * (1 - probs) / 4000).sqrt()
    assert torch.all((freq - probs).abs() <= 5 * se + 1e-3)


# ---------------------------------------------------------------------------------------------- warpers
def test_warp_logits_shapes_and_identity():
    logits = torch.randn(3, 7)
    assert torch.equal(warp_logits(logits), logits)
    assert warp_logits(logits[0], top_k=2).shape == (7,)
    assert warp_logits(logits.half(), top_k=2).dtype == torch.float32
    assert warp_logits(logits.double(), top_p=0.5).dtype == torch.float64


def test_top_k_keeps_ties_and_top_p_keeps_at_least_one():
    logits = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0])
    assert torch.isfinite(warp_logits(logits, top_k=1)).tolist() == [False, True, True, False, True]
    assert torch.isfinite(warp_logits(logits, top_k=4)).sum() == 4
    assert torch.isfinite(warp_logits(logits, top_k=99)).all()  # k larger than V: no cut
    spiky = torch.tensor([10.0, 0.0, 0.0])
    assert torch.isfinite(warp_logits(spiky, top_p=1e-9)).tolist() == [True, False, False]
    assert torch.isfinite(warp_logits(spiky, top_p=1.0)).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = torch.isfinite(warp_logits(probs.log(), top_p=0.75))
    assert kept.tolist() == [True, True, False, False]  # 0.5 + 0.3 >= 0.75
    assert torch.isfinite(warp_logits(probs.log(), top_p=0.85)).tolist() == [True, True, True, False]


def test_min_p_is_relative_to_the_top_probability_after_temperature():
    probs = torch.tensor([0.6, 0.3, 0.08, 0.02])
    assert torch.isfinite(warp_logits(probs.log(), min_p=0.2)).tolist() == [True, True, False, False]
    # temperature 2 flattens: p ∝ sqrt(p), so 0.08 -> sqrt(0.08 / 0.6) = 0.37 of the top
    assert torch.isfinite(warp_logits(probs.log(), temperature=2.0, min_p=0.2)).tolist() == [True, True, True, False]


def test_repetition_penalty_divides_positive_and_multiplies_negative_once_per_token():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    got = warp_logits(logits, [0, 1, 1, 1], repetition_penalty=2.0)
    assert got.tolist() == [1.0, -4.0, 1.0, 0.5]
    batch = warp_logits(torch.stack([logits, logits]), torch.tensor([[0, 0], [2, 3]]), repetition_penalty=2.0)
    assert batch.tolist() == [[1.0, -2.0, 1.0, 0.5], [2.0, -2.0, 0.5, 0.25]]


def test_temperature_zero_keeps_only_the_first_argmax():
    got = warp_logits(torch.tensor([1.0, 5.0, 5.0, -1.0]), temperature=0)
    assert torch.isfinite(got).tolist() == [False, True, False, False]


def test_extreme_and_infinite_logits():
    logits = torch.tensor([1e4, -1e4, float("-inf"), 0.0, 1e4])
    cut, kept = [True, False, False, False, True], [True, True, False, True, True]
    for kw, expected in [
        (dict(top_p=0.6), cut), (dict(min_p=0.5), cut), (dict(top_k=2), cut),
        (dict(temperature=0.01), kept), (dict(repetition_penalty=3.0), kept),
    ]:
        out = warp_logits(logits, [0, 1, 2], **kw)
        assert not torch.isnan(out).any() and out[2] == float("-inf")
        assert torch.isfinite(out).tolist() == expected
    # top-p does not keep ties (as in transformers): two tokens of probability 1/2 each and p = 1/2 keep one
    assert torch.isfinite(warp_logits(logits, top_p=0.5)).sum() == 1


def test_sample_next_token_is_reproducible_and_never_draws_removed_tokens():
    logits = warp_logits(torch.randn(4, 50), top_k=3)
    a = sample_next_token(logits, torch.Generator().manual_seed(0))
    b = sample_next_token(logits, torch.Generator().manual_seed(0))
    assert a.shape == (4,) and torch.equal(a, b)
    draws = torch.stack([sample_next_token(logits, torch.Generator().manual_seed(s)) for s in range(50)])
    assert torch.isfinite(logits.gather(1, draws.T)).all()
    assert sample_next_token(logits[0]).shape == ()


def test_sample_next_token_follows_the_warped_distribution():
    scipy_stats = pytest.importorskip("scipy.stats")
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    warped = warp_logits(logits, top_p=0.8)
    probs = torch.softmax(warped, -1)
    g = torch.Generator().manual_seed(2)
    draws = sample_next_token(warped.expand(6000, -1), g)
    counts = torch.bincount(draws, minlength=5).double()
    kept = probs > 0
    assert counts[~kept].sum() == 0
    expected = probs[kept].double() / probs[kept].double().sum() * counts.sum()
    p_value = scipy_stats.chisquare(counts[kept].numpy(), expected.numpy()).pvalue
    assert p_value > 1e-4


# ---------------------------------------------------------------------------------------------- beam search
def test_beam_search_returns_sorted_hypotheses_with_consistent_scores(model):
    hyps = beam_search(model, [1, 2], num_beams=3, max_new_tokens=6, num_return_sequences=3, length_penalty=0.5)
    assert len(hyps) == 3 and all(isinstance(h, Hypothesis) for h in hyps)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    for h in hyps:
        ids = torch.tensor([h.tokens])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1], -1).gather(1, ids[0, 1:, None])[1:].sum()
        assert h.tokens[:2] == [1, 2] and len(h.tokens) == 8
        assert h.logprob == pytest.approx(float(logp), abs=1e-4)
        assert h.score == pytest.approx(h.logprob / 6**0.5, abs=1e-4)


def test_one_beam_is_greedy(model):
    [hyp] = beam_search(model, [3], num_beams=1, max_new_tokens=9, early_stopping="never", length_penalty=2.0)
    assert hyp.tokens == greedy(model, [3], max_new_tokens=9)


def test_beam_search_with_cache_equals_recomputing_the_window_past_block_size(model):
    kw = dict(num_beams=3, max_new_tokens=25, num_return_sequences=3, eos_token_id=4, early_stopping="never")
    cached = beam_search(model, [1, 2, 3], **kw)  # 28 tokens > block_size 16: the window slides
    reference = beam_search(Uncached(model), [1, 2, 3], **kw)
    assert [h.tokens for h in cached] == [h.tokens for h in reference]
    assert [h.score for h in cached] == pytest.approx([h.score for h in reference], abs=1e-4)
    assert [h.tokens for h in beam_search(model, [1, 2, 3], use_cache=False, **kw)] == [h.tokens for h in cached]
    assert max(len(h.tokens) for h in cached) > model.block_size


def test_beams_share_one_prefill_of_the_prompt(model):
    shapes = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(tuple(args[0].shape)),
                                           with_kwargs=True)
    try:
        beam_search(model, [1, 2, 3, 4], num_beams=3, max_new_tokens=5)
    finally:
        hook.remove()
    assert shapes == [(1, 4)] + [(3, 1)] * 4  # the prompt once, then one new token per beam per step


def test_prefill_and_decode_one_token_step_by_step_past_the_context_limit(model):
    from lmlab.generation import decode_one_token, prefill

    logits, state = prefill(model, torch.tensor([1, 2]), max_new_tokens=40)
    for _ in range(40):  # past the context limit of 32: the window slides
        logits = decode_one_token(state, logits.argmax(-1))
    assert state.tokens()[:42] == greedy(model, [1, 2], max_new_tokens=40)
    with pytest.raises(ValueError, match="one per row"):
        decode_one_token(state, torch.tensor([1, 2]))


def test_greedy_through_a_model_without_a_cache(model):
    assert greedy(Uncached(model), [1, 2, 3], max_new_tokens=30) == greedy(model, [1, 2, 3], max_new_tokens=30)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=-1), "max_new_tokens must be an integer >= 0"),
        (dict(max_new_tokens=3, temperature=-0.5), "temperature must be >= 0"),
        (dict(max_new_tokens=3, temperature=float("nan")), "temperature must be >= 0"),
        (dict(max_new_tokens=3, top_k=-2), "top_k must be None or an integer >= 0"),
        (dict(max_new_tokens=3, top_k=2.5), "top_k must be None or an integer >= 0"),
        (dict(max_new_tokens=3, top_p=0.0), r"top_p must be None or a number in \(0, 1\]"),
        (dict(max_new_tokens=3, top_p=1.5), r"top_p must be None or a number in \(0, 1\]"),
        (dict(max_new_tokens=3, min_p=-0.1), r"min_p must be None or a number in \[0, 1\]"),
        (dict(max_new_tokens=3, min_p=1.01), r"min_p must be None or a number in \[0, 1\]"),
        (dict(max_new_tokens=3, repetition_penalty=0.0), "repetition_penalty must be a number > 0"),
        (dict(max_new_tokens=3, repetition_penalty=-1.0), "repetition_penalty must be a number > 0"),
        (dict(max_new_tokens=3, eos_token_id=20), r"eos_token_id must be None or an integer in \[0, 20\)"),
    ],
)
def test_bad_sampling_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample(model, [1], **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_beams=0), "num_beams must be an integer >= 1"),
        (dict(num_beams=2, num_return_sequences=3), r"num_return_sequences must be an integer in \[1, num_beams=2\]"),
        (dict(num_beams=2, num_return_sequences=0), r"num_return_sequences must be an integer in \[1, num_beams=2\]"),
        (dict(num_beams=2, early_stopping="sometimes"), "early_stopping must be True, False or 'never'"),
        (dict(num_beams=2, length_penalty=float("inf")), "length_penalty must be a finite number"),
        (dict(num_beams=2, max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
    ],
)
def test_bad_beam_search_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        beam_search(model, [1], **{"max_new_tokens": 3, **kwargs})


def test_bad_warp_logits_arguments():
    with pytest.raises(ValueError, match="repetition_penalty needs prev_ids"):
        warp_logits(torch.randn(5), repetition_penalty=1.2)
    with pytest.raises(ValueError, match=r"prev_ids must be token ids in \[0, 5\)"):
        warp_logits(torch.randn(5), [7], repetition_penalty=1.2)
    with pytest.raises(ValueError, match=r"shape \(V,\) or \(B, V\)"):
        warp_logits(torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        warp_logits(torch.arange(5))


@pytest.mark.parametrize(
    "call",
    [
        lambda m, p: greedy(m, p, max_new_tokens=3),
        lambda m, p: sample(m, p, max_new_tokens=3),
        lambda m, p: beam_search(m, p, num_beams=2, max_new_tokens=3),
        lambda m, p: exact_search(m, p, max_new_tokens=3),
        lambda m, p: prefill(m, p, max_new_tokens=3),
    ],
)
def test_empty_or_invalid_prompts_are_rejected(model, call):
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        call(model, [])
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        call(model, torch.tensor([], dtype=torch.long))
    with pytest.raises(TypeError, match="encode the text"):
        call(model, "hello")
    with pytest.raises(ValueError, match=r"token id 20, outside the vocabulary \[0, 20\)"):
        call(model, [1, 20])
    with pytest.raises(TypeError, match="integer token ids"):
        call(model, torch.tensor([1.0, 2.0]))


# ---------------------------------------------------------------------------------------------- benchmark
def test_bench_decode_reports_its_own_measurements():
    pytest.importorskip("transformers")
    from lmlab.bench import bench_decode

    result = bench_decode(("micro",), greedy_tokens=5, beam_tokens=4, num_beams=2, prompt_len=3,
                          cache_lengths=(3, 6), repeats=1, cache_repeats=1, threads=None, num_samples=3,
                          compile_step=False)  # fmt: skip
    text = result.report()
    assert [r.method for r in result.rows] == ["greedy", "beam search, 2 beams", "3 samples, batched"]
    assert result.rows[2].new_tokens == 15  # 3 rows of 5 tokens
    assert all(r.identical for r in result.rows[:2]) and result.compile_seconds == {}
    lines = text.splitlines()
    for row in result.rows:
        [line] = [x for x in lines if x.strip().startswith("micro") and row.method in x]
        ratio = float(re.search(r"([\d.]+)x  (yes|NO)$", line).group(1))
        assert ratio == pytest.approx(row.ratio, abs=0.005)
        assert f"{row.tokens_per_s['lmlab']:,.0f}" in line and f"{row.tokens_per_s['transformers']:,.0f}" in line
    for row in result.cache_rows:
        [line] = [x for x in lines if re.match(rf"\s+{row.new_tokens}\s", x)]
        numbers = [float(v) for v in re.findall(r"[\d.]+", line)]
        assert numbers[1] == pytest.approx(row.ms_per_token("with cache"), abs=5e-4)
        assert numbers[2] == pytest.approx(row.ms_per_token("without cache"), abs=5e-4)
        assert numbers[3] == pytest.approx(row.slowdown, abs=0.05)
        assert math.isfinite(row.slowdown)
