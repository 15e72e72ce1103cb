"""lmlab.attention_cost: analytic FLOPs and memory, against hand-computed cases."""

from __future__ import annotations

import math
import subprocess

import pytest
import torch

import lmlab.attention_cost as ac
from lmlab.attention_cost import (
    ASSUMED_UTILISATION,
    H100_BANDWIDTH,
    H100_BF16_PEAK_FLOPS,
    MEASURE_SHAPE,
    SHAPES,
    CostShape,
    attention_share,
    book_cost,
    crossover_length,
    fit_exponent,
    gpt_num_params,
    layer_flops,
    measure,
    memory_bytes,
    model_flops,
    peak_memory_estimate,
)
from lmlab.models import ATTENTION_KINDS, GPT, GPTConfig
from lmlab.models import gpt as gpt_module

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


# --- shapes: explicit MLP width, gated MLPs, untied output layers ------------------------------------------


def test_named_shapes_count_their_published_sizes():
    llama = SHAPES["llama2-7b"]
    # per block 4 d^2 (attention) + 3 d w (SwiGLU: gate, up, down), and two V x d tables (untied)
    assert llama.num_params == 32 * (4 * 4096**2 + 3 * 4096 * 11008) + 2 * 32_000 * 4096 == 6_738_149_376
    # transformers' count for Llama-2-7b is 6,738,415,616: these plus the RMSNorm weights, (2 * 32 + 1) * 4096
    assert llama.num_params + 65 * 4096 == 6_738_415_616
    assert crossover_length(llama) == 2 * 4096 + 3 * 11008 / 2 == 24_704
    xl = SHAPES["gpt2-xl"]
    assert xl.num_params == 48 * 12 * 1600**2 + 50_257 * 1600  # 1.55B (the paper's 1542M)
    assert SHAPES["gpt2-small"] == GPT2 and set(ac.SHAPE_SOURCES) == set(SHAPES)
    same = CostShape(12, 768, 12, n_inner=4 * 768)  # an explicit width equal to mlp_ratio * d changes nothing
    assert same.num_params == GPT2.num_params and layer_flops(1000, same) == layer_flops(1000, GPT2)


def test_gpt_num_params_counts_lmlabs_gpt():
    for shape, block in ((MEASURE_SHAPE, 128), (CostShape(2, 32, 4, vocab_size=50, n_inner=48), 40),
                         (CostShape(1, 16, 2, vocab_size=20, tied_embeddings=False), 8)):  # fmt: skip
        cfg = GPTConfig(vocab_size=shape.vocab_size, block_size=block, n_layer=shape.n_layer, n_head=shape.n_head,
                        n_embd=shape.n_embd, n_inner=shape.mlp_width, tie_weights=shape.tied_embeddings)  # fmt: skip
        assert gpt_num_params(shape, block) == GPT(cfg).num_params(non_embedding=False)


# --- a whole book -------------------------------------------------------------------------------------------


def test_a_novel_through_gpt2_small_by_hand():
    T, L, d, V, nh = 150_000, 12, 768, 50_257, 12
    book = book_cost(T, "gpt2-small")  # fp16: 2 bytes per value
    weights = 123_532_032 * 2
    kv_cache = 2 * L * T * d * 2  # keys and values, every layer, every position
    scores = nh * T**2 * 2  # one layer's n_head score matrices, T x T
    activations = T * (6 * d + 4 * d) * 2  # residual, its norm, q, k, v, attention output; MLP hidden 4 d
    assert (book.weights_bytes, book.kv_cache_bytes, book.scores_bytes) == (weights, kv_cache, scores)
    assert (weights, kv_cache, scores) == (247_064_064, 5_529_600_000, 540_000_000_000)
    assert book.activations_bytes == activations == 2_304_000_000

    assert book.one_pass.total_memory == weights + activations + scores == 542_551_064_064
    assert book.with_cache.total_memory == weights + kv_cache == 5_776_664_064
    assert book.without_cache.total_memory == book.one_pass.total_memory
    # 16, 80 and 141 GB: the cache fits on all three; the T x T scores of one layer alone fit on none
    assert book.with_cache.fits == {"T4 16 GB": True, "H100 80 GB": True, "H200 141 GB": True}
    assert not any(book.one_pass.fits.values()) and not any(book.without_cache.fits.values())
    assert any(book_cost(T, "gpt2-small", fused_attention=True).one_pass.fits.values())  # 2.55 GB without scores

    block = 12 * d * d  # weights of one block: 4 d^2 + 2 d (4 d)
    one_pass = L * (2 * T * block + 4 * T**2 * d) + 2 * T * d * V
    assert book.one_pass.flops == one_pass == model_flops(T, GPT2)
    # with a cache, token t does its own row: 2 FLOPs per weight, 4 d per key it reads (t of them), the head
    cached = T * (L * 2 * block + 2 * d * V) + L * 4 * d * (T * (T + 1) // 2)
    assert book.with_cache.flops == cached
    # without, token t is a pass over its t-token prefix (logits for the last position only)
    uncached = (T * (T + 1) // 2) * L * 2 * block + L * 4 * d * (T * (T + 1) * (2 * T + 1) // 6) + T * 2 * d * V
    assert book.without_cache.flops == pytest.approx(uncached, rel=1e-15)
    rate = H100_BF16_PEAK_FLOPS * ASSUMED_UTILISATION
    assert book.one_pass.compute_seconds == pytest.approx(one_pass / rate, rel=1e-12)
    # token by token each step reads the weights, and with a cache the keys and values so far
    reads = T * weights + 2 * L * d * 2 * (T * (T + 1) // 2)
    assert book.with_cache.read_seconds == pytest.approx(reads / H100_BANDWIDTH, rel=1e-12)
    assert book.with_cache.bound == "memory reads" and book.one_pass.bound == "compute"
    assert book.without_cache.seconds > 500 * book.with_cache.seconds  # 1.3 days against 2.2 minutes
    report = book.report()
    assert "150,000 tokens" in report and "KV cache after the book 5.53 GB" in report and "540.00 GB" in report


def test_a_novel_through_llama2_7b_by_hand():
    T = 150_000
    book = book_cost(T, "llama2-7b")
    assert book.kv_cache_bytes == 2 * 32 * T * 4096 * 2 == 78_643_200_000  # no grouped queries in the 7B model
    assert book.weights_bytes == 6_738_149_376 * 2
    assert book.scores_bytes == 32 * T**2 * 2
    assert book.activations_bytes == T * (6 * 4096 + 2 * 11008) * 2  # SwiGLU keeps gate and up: 2 w
    # 13.48 + 78.64 = 92.12 GB: only the 141 GB GPU holds weights and cache
    assert book.with_cache.fits == {"T4 16 GB": False, "H100 80 GB": False, "H200 141 GB": True}
    half = book_cost(T, "llama2-7b", bytes_per_value=1)  # 8-bit weights and cache halve both
    assert half.kv_cache_bytes == book.kv_cache_bytes / 2 and half.with_cache.fits["H100 80 GB"]


@pytest.mark.parametrize(("kind", "window"), [("full", None), ("sliding_window", 7), ("linear", None)])
def test_book_flops_are_the_sums_over_tokens(kind, window):
    shape, T = CostShape(2, 32, 4, vocab_size=100), 50
    book = book_cost(T, shape, kind=kind, window=window, flops_per_second=1e9, gpus={"tiny": 1e-3})
    d, V, L = 32, 100, 2
    keys = {"full": lambda t: t, "sliding_window": lambda t: min(window or t, t), "linear": lambda t: 0}[kind]
    state = 4 * d * shape.head_size if kind == "linear" else 0
    per_token = [L * (2 * shape.layer_params + 4 * keys(t) * d + state) + 2 * d * V for t in range(1, T + 1)]
    assert book.with_cache.flops == sum(per_token)
    prefixes = [model_flops(t, shape, kind, window) - 2 * t * d * V + 2 * d * V for t in range(1, T + 1)]
    assert book.without_cache.flops == pytest.approx(sum(prefixes), rel=1e-14)
    assert book.one_pass.flops == model_flops(T, shape, kind, window)
    assert book.with_cache.compute_seconds == book.with_cache.flops / 1e9
    assert list(book.with_cache.fits) == ["tiny"]
    if kind != "full":  # a window keeps min(w, T) positions, linear attention a fixed state
        assert book.kv_cache_bytes == memory_bytes(T, shape, kind, window)["cache"] < memory_bytes(T, shape)["cache"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: book_cost(100, "gpt5"), "unknown shape 'gpt5'; named shapes: gpt2-small"),
        (lambda: book_cost(0, "gpt2-small"), "tokens must be an integer >= 1"),
        (lambda: book_cost(100, "gpt2-small", kind="sliding_window"), "needs window"),
        (lambda: book_cost(100, "gpt2-small", gpus={}), "gpus must map GPU names"),
        (lambda: book_cost(100, "gpt2-small", gpus={"x": -1}), r"gpus\['x'\] must be a finite number > 0"),
        (lambda: book_cost(100, "gpt2-small", flops_per_second=0), "flops_per_second must be"),
        (lambda: book_cost(100, "gpt2-small", bytes_per_value=0), "bytes_per_value must be"),
        (lambda: CostShape(2, 8, 2, n_inner=0), "n_inner must be"),
        (lambda: CostShape(2, 8, 2, gated_mlp=1), "gated_mlp must be True or False"),
    ],
)
def test_book_bad_input_says_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- measured ---------------------------------------------------------------------------------------------

TINY = CostShape(n_layer=1, n_embd=16, n_head=2, vocab_size=32, bytes_per_value=4)


def _window(kind: str) -> int | None:
    return 8 if kind == "sliding_window" else None


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_measure_returns_sane_records(kind):
    records = measure(kind, [16, 32], shape=TINY, window=_window(kind), repeats=2, warmup=1, memory=False)
    assert [r.length for r in records] == [16, 32]
    for r in records:
        assert r.kind == kind and r.batch_size == 1 and r.device == "cpu" and r.dtype == "float32"
        assert r.forward_seconds > 0 and r.forward_backward_seconds > 0
        assert math.isfinite(r.loss) and r.loss > 0
        assert r.flops == model_flops(r.length, TINY, kind, _window(kind)) and r.forward_backward_flops == 3 * r.flops
        estimate = peak_memory_estimate(r.length, TINY, kind, _window(kind), block_size=32)
        assert r.estimated_memory_bytes == sum(estimate.values())
        assert r.peak_memory_bytes is None and r.memory_what == "not measured" and r.threads == torch.get_num_threads()


def test_measure_is_deterministic_by_seed_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a, b = (measure("full", [24], shape=TINY, repeats=1, warmup=0, memory=False, seed=3)[0] for _ in range(2))
    c = measure("full", [24], shape=TINY, repeats=1, warmup=0, memory=False, seed=4)[0]
    assert a.loss == b.loss != c.loss  # the same weights and ids for the same seed
    two = measure("full", [24], shape=TINY, repeats=1, warmup=0, memory=False, seed=3, batch_size=2)[0]
    assert two.flops == 2 * a.flops and two.tokens == 48
    assert torch.equal(torch.random.get_rng_state(), state)


def test_measure_reads_the_peak_memory_of_a_child_process():
    (r,) = measure("full", [64], shape=TINY, repeats=1, warmup=0, threads=1)
    assert r.peak_memory_bytes is not None and r.peak_memory_bytes >= 0 and math.isfinite(r.peak_memory_bytes)
    assert "child process" in r.memory_what and r.memory_pass == "forward + backward"
    assert r.threads == 1 and r.forward_seconds > 0 and r.forward_backward_seconds > 0
    inline = measure("full", [64], shape=TINY, repeats=1, warmup=0, memory=False)[0]
    assert r.loss == inline.loss  # the child builds the same model and ids


def test_measure_refuses_lengths_over_the_memory_limit_before_running(monkeypatch):
    def no_run(*args, **kwargs):
        raise AssertionError("nothing may run when a length is refused")

    monkeypatch.setattr(subprocess, "run", no_run)
    monkeypatch.setattr(ac, "_run_spec", no_run)
    est = sum(peak_memory_estimate(4096, MEASURE_SHAPE, "full", attention_impl="naive", block_size=4096).values())
    limit = 0.5e9
    assert est > limit  # 18 nh-sized (T, T) fp32 matrices alone are 1.2 GB
    message = f"exceeds memory_limit_bytes = 0.5 GB at T=4096: {est / 1e9:.3g} GB"
    with pytest.raises(ValueError, match=message):
        measure("full", [256, 4096], attention_impl="naive", memory_limit_bytes=limit)


def test_peak_memory_estimate_by_hand():
    s, T = MEASURE_SHAPE, 1024  # 1 layer, d 64, 4 heads, V 256, fp32
    weights = gpt_num_params(s, T) * 4
    naive = peak_memory_estimate(T, s, "full", attention_impl="naive")
    assert naive["weights"] == naive["gradients"] == weights
    assert naive["activations"] == (1 + 1) * T * (12 * 64 + 3 * 256) * 4
    assert naive["logits"] == 4 * T * 256 * 4
    assert naive["attention"] == ((1 + 3) * 4 + 1 + 1) * T * T * 4  # (T, T) matrices: 18 head-sized
    fused = peak_memory_estimate(T, s, "full", attention_impl="sdpa")
    assert fused["attention"] == 1 * 4 * T * 4  # the kernel's log-sum-exp only
    band = peak_memory_estimate(T, s, "sliding_window", 512, attention_impl="sdpa")
    assert band["attention"] == (1 + 1) * T * T * (1 + 4)  # up to 2 w: an explicit (T, T) band mask, bool + float
    blocks = peak_memory_estimate(T, s, "sliding_window", 64, attention_impl="sdpa")
    # past 2 w, blocks: the (T/w, w, 2w) mask, nh T 2w scores kept 3 times, the blocks' keys and values
    assert blocks["attention"] == (1 + 1) * (2 * 64 * T * (1 + 3 * 4 * 4) + 4 * T * 64 * 4)
    chunked = peak_memory_estimate(T, s, "linear")
    assert chunked["attention"] == (1 + 2) * (3 * 4 * T * 64 + 3 * 4 * (T // 64 + 1) * 16 * 16 + 6 * T * 64) * 4
    fwd = peak_memory_estimate(T, s, "full", attention_impl="naive", backward=False)
    assert fwd["gradients"] == 0 and fwd["attention"] == (3 * 4 + 2) * T * T * 4 and fwd["logits"] == T * 256 * 4
    auto = peak_memory_estimate(256, s, "full", attention_impl="auto")  # auto is explicit up to 256 keys on a CPU
    assert auto == peak_memory_estimate(256, s, "full", attention_impl="naive")
    assert ac._LINEAR_CHUNK == getattr(gpt_module, "LINEAR_CHUNK", ac._LINEAR_CHUNK)  # the estimate's chunk


def test_a_child_that_runs_too_long_is_stopped():
    with pytest.raises(TimeoutError, match="took longer than timeout_s = 0.01 s"):
        measure("full", [32], shape=TINY, timeout_s=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(kind="sparse"), r"kind must be one of \('full', 'sliding_window', 'linear'\)"),
        (dict(kind="sliding_window"), "needs window"),
        (dict(kind="sliding_window", window=0), "window must be an integer >= 1"),
        (dict(window=8), "only for kind 'sliding_window'"),
        (dict(lengths=[16, 0]), r"lengths must be integers >= 1, got 0 in \[16, 0\]"),
        (dict(lengths=[16, 2.5]), "lengths must be integers >= 1, got 2.5"),
        (dict(lengths=64), "lengths must be a sequence of integers"),
        (dict(lengths=[]), "lengths is empty"),
        (dict(attention_impl="flash"), "attention_impl must be one of"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(repeats=0), "repeats must be an integer >= 1"),
        (dict(warmup=-1), "warmup must be an integer >= 0"),
        (dict(threads=0), "threads must be an integer >= 1"),
        (dict(timeout_s=0), "timeout_s must be a finite number > 0"),
        (dict(memory_limit_bytes=-1), "memory_limit_bytes must be a finite number > 0"),
        (dict(memory="yes"), "memory must be True or False"),
        (dict(shape=CostShape(1, 16, 2, bytes_per_value=8)), "bytes_per_value must be 4 \\(fp32\\) or 2"),
        (dict(shape=CostShape(1, 16, 2, gated_mlp=True)), "plain two-matrix MLP"),
    ],
)
def test_measure_bad_input_says_what_is_allowed(kwargs, message):
    args = {"kind": "full", "lengths": [16], "shape": TINY, "memory": False} | kwargs
    with pytest.raises(ValueError, match=message):
        measure(args.pop("kind"), args.pop("lengths"), **args)
