"""lmlab.attention_cost: analytic FLOPs and memory, against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from lmlab.attention_cost import (
    CostShape,
    attention_share,
    crossover_length,
    fit_exponent,
    layer_flops,
    memory_bytes,
    model_flops,
)

GPT2 = CostShape(n_layer=12, n_embd=768, n_head=12)  # GPT-2 small (Radford et al. 2019)


def test_gpt2_small_parameter_count_is_the_known_124m_without_biases_and_positions():
    assert GPT2.num_params == 12 * 12 * 768**2 + 50_257 * 768 == 123_532_032
    assert abs(GPT2.num_params - 124_439_808) / 124_439_808 < 0.01  # transformers' count, with biases etc.


def test_layer_flops_by_hand():
    parts = layer_flops(1024, GPT2)
    assert parts["dense"] == 2 * 1024 * (4 * 768**2 + 2 * 4 * 768**2) == 14_495_514_624
    assert parts["attention"] == 2 * 1024 * 1024 * 768 * 2 == 3_221_225_472
    assert model_flops(1024, GPT2) == 12 * (14_495_514_624 + 3_221_225_472) + 2 * 1024 * 768 * 50_257


def test_full_attention_grows_as_t_squared_and_the_rest_as_t():
    a, b = layer_flops(2000, GPT2), layer_flops(4000, GPT2)
    assert b["attention"] == 4 * a["attention"] and b["dense"] == 2 * a["dense"]
    lin_a, lin_b = layer_flops(2000, GPT2, "linear"), layer_flops(4000, GPT2, "linear")
    assert lin_b["attention"] == 2 * lin_a["attention"] == 2 * 2 * 2 * 2000 * 768 * 64


def test_attention_is_half_the_work_at_the_crossover():
    assert crossover_length(GPT2) == 6 * 768
    assert attention_share(4608, GPT2) == pytest.approx(0.5, abs=1e-12)
    assert attention_share(1024, GPT2) < 0.5 < attention_share(100_000, GPT2)
    assert crossover_length(CostShape(2, 64, 4, mlp_ratio=2)) == 4 * 64


def test_a_window_as_long_as_the_sequence_costs_what_full_attention_costs():
    for T in (1, 37, 512):
        assert layer_flops(T, GPT2, "sliding_window", window=T) == layer_flops(T, GPT2)
        assert layer_flops(T, GPT2, "sliding_window", window=10 * T) == layer_flops(T, GPT2)
        full, win = memory_bytes(T, GPT2), memory_bytes(T, GPT2, "sliding_window", window=T)
        assert win == full
    short = layer_flops(10_000, GPT2, "sliding_window", window=256)
    assert short["attention"] == 2 * 2 * 10_000 * 256 * 768


def test_memory_by_hand():
    m = memory_bytes(1024, GPT2, batch_size=2)
    assert m["cache"] == 2 * (2 * 12 * 1024 * 768) * 2 == 75_497_472  # keys and values, fp16, 2 sequences
    assert m["scores"] == 2 * 12 * 1024 * 1024 * 2
    assert m["weights"] == 123_532_032 * 2
    lin = memory_bytes(100_000, GPT2, "linear")
    assert lin["cache"] == 12 * 12 * (64 * 64 + 64) * 2 and lin["scores"] == 0
    assert memory_bytes(200_000, GPT2, "linear")["cache"] == lin["cache"], "a fixed-size state"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: layer_flops(0, GPT2), "T must be"),
        (lambda: layer_flops(10, GPT2, "sparse"), "kind must be one of"),
        (lambda: layer_flops(10, GPT2, "sliding_window"), "needs window"),
        (lambda: layer_flops(10, GPT2, "sliding_window", window=0), "window must be"),
        (lambda: layer_flops(10, GPT2, "full", window=4), "only for kind 'sliding_window'"),
        (lambda: memory_bytes(10, GPT2, batch_size=0), "batch_size must be"),
        (lambda: CostShape(2, 10, 3), "multiple of n_head"),
        (lambda: CostShape(0, 8, 2), "n_layer must be"),
    ],
)
def test_bad_input_says_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- fitting the exponent ---------------------------------------------------------------------------------


def test_fit_exponent_recovers_exact_power_laws():
    lengths = [256, 512, 1024, 2048, 4096]
    for k, c in ((2.0, 3e-9), (1.0, 0.5), (1.5, 7.0)):
        fit = fit_exponent(lengths, [c * t**k for t in lengths])
        assert fit.exponent == pytest.approx(k, abs=1e-12) and fit.prefactor == pytest.approx(c, rel=1e-9)
        assert fit.high - fit.low == pytest.approx(0, abs=1e-9) and fit.n == 5
        assert fit.predict(8192) == pytest.approx(c * 8192**k, rel=1e-9)
    # the analytic cost of full attention is exactly quadratic in T
    flops = [layer_flops(t, GPT2)["attention"] for t in lengths]
    assert fit_exponent(lengths, flops).exponent == pytest.approx(2.0, abs=1e-12)


def test_fit_exponent_interval_matches_ordinary_least_squares():
    scipy_stats = pytest.importorskip("scipy.stats")
    lengths = [100, 200, 400, 800, 1600, 3200]
    noise = [1.05, 0.97, 1.02, 0.94, 1.08, 0.99]
    values = [2e-6 * t**1.8 * e for t, e in zip(lengths, noise, strict=True)]
    fit = fit_exponent(lengths, values, confidence=0.9)
    ref = scipy_stats.linregress([math.log(t) for t in lengths], [math.log(v) for v in values])
    half = scipy_stats.t.ppf(0.95, len(lengths) - 2) * ref.stderr
    assert fit.exponent == pytest.approx(ref.slope, abs=1e-12)
    assert (fit.low, fit.high) == (pytest.approx(ref.slope - half, abs=1e-7), pytest.approx(ref.slope + half, abs=1e-7))
    assert fit.low < 1.8 < fit.high


@pytest.mark.parametrize(
    ("lengths", "values", "message"),
    [
        ([1, 2], [1, 4], "at least 3 points"),
        ([1, 2, 3], [1, 4], "same size"),
        ([1, 2, 0], [1, 4, 9], "finite and > 0"),
        ([1, 2, 3], [1, -4, 9], "finite and > 0"),
        ([5, 5, 5], [1, 2, 3], "not all be equal"),
    ],
)
def test_fit_exponent_rejects_bad_input(lengths, values, message):
    with pytest.raises(ValueError, match=message):
        fit_exponent(lengths, values)
