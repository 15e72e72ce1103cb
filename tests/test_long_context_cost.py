"""lmlab.lessons.long_context (lesson 03a: what attention costs), against lmlab.attention_cost and hand counts.

References: the counts of lmlab.attention_cost (tested on their own in test_attention_cost.py), numbers
worked by hand for GPT-2 small and Llama 2 7B, exact power laws, and book_cost's sums over a whole book.
"""

import dataclasses
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lmlab.attention_cost import (  # noqa: E402
    BOOK_GPUS,
    KINDS,
    MEASURE_SHAPE,
    SHAPES,
    CostShape,
    Measurement,
    book_cost,
    crossover_length,
    fit_exponent,
    layer_flops,
    memory_bytes,
    model_flops,
)
from lmlab.lessons import long_context as lc  # noqa: E402
from lmlab.models import GPT, GPTConfig  # noqa: E402

GPT2 = SHAPES["gpt2-small"]
LLAMA = SHAPES["llama2-7b"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def fake(kind: str, T: int, seconds: float, *, memory: float | None = None, impl: str = "sdpa",
         window: int | None = None) -> Measurement:  # fmt: skip
    """A Measurement with the given time and memory; the fields these tests do not read are left empty."""
    given = {"kind": kind, "length": T, "forward_seconds": seconds, "peak_memory_bytes": memory,
             "attention_impl": impl, "window": window, "batch_size": 1, "memory_what": "given",
             "flops": model_flops(T, MEASURE_SHAPE, kind, window)}  # fmt: skip
    return Measurement(**{f.name: given.get(f.name) for f in dataclasses.fields(Measurement)})


# ---------------------------------------------------------------------------------------------- FLOPs
def test_flops_rows_follow_layer_flops_and_gpt2_by_hand():
    rows = lc.flops_rows(GPT2, [1024, 4608])
    assert [(r.T, r.kind) for r in rows] == [(1024, k) for k in KINDS] + [(4608, k) for k in KINDS]
    full = rows[0]
    assert full.dense == 24 * 1024 * 768**2 and full.attention == 4 * 1024**2 * 768
    assert full.share == pytest.approx(1024 / (1024 + 4608)) and rows[3].share == 0.5
    window = rows[1]
    assert window.window == lc.DEFAULT_WINDOW == 4096 and window.attention == full.attention  # T < w: all keys
    for r in rows:
        parts = layer_flops(r.T, GPT2, r.kind, r.window)
        assert (r.dense, r.attention, r.total) == (parts["dense"], parts["attention"], sum(parts.values()))
    assert lc.flops_rows(GPT2, [10_000], ("sliding_window",), window=256)[0].attention == 4 * 10_000 * 256 * 768


def test_bad_kinds_and_lengths_are_explained():
    with pytest.raises(ValueError, match="kind must be one of"):
        lc.flops_rows(GPT2, [10], ("dense",))
    with pytest.raises(ValueError, match="lengths"):
        lc.memory_rows(GPT2, [])
    with pytest.raises(ValueError):
        lc.flops_rows(GPT2, [0])
    assert lc.kind_label("sliding_window") == "sliding window 4096" and lc.kind_label("full") == "full"
    assert lc.kind_label("sliding_window", 128) == "sliding window 128"


def test_plot_flops_by_part_draws_the_counts():
    ax = lc.plot_flops_by_part(GPT2, lo=100, hi=10_000)
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
    assert len(lines) == 4  # the dense part and one line per kind
    for line in lines[1:]:
        assert line.get_label().startswith("attention, ")
    T = list(lines[0].get_xdata())
    assert list(lines[0].get_ydata()) == [layer_flops(t, GPT2)["dense"] for t in T]
    assert list(lines[1].get_ydata()) == [layer_flops(t, GPT2)["attention"] for t in T]
    assert T[0] == 100 and T[-1] == 10_000
    assert any(list(line.get_xdata()) == [4608, 4608] for line in ax.get_lines()), "the crossover is marked"


def test_plot_attention_share_marks_each_crossover_at_one_half():
    ax = lc.plot_attention_share(SHAPES)
    marks = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
    assert sorted(float(m.get_xdata()[0]) for m in marks) == sorted(crossover_length(s) for s in SHAPES.values())
    assert all(float(m.get_ydata()[0]) == 0.5 for m in marks)
    with pytest.raises(ValueError):
        lc.plot_attention_share({})


# ---------------------------------------------------------------------------------------------- memory
def test_memory_rows_by_hand():
    rows = {r.kind: r for r in lc.memory_rows(GPT2, [150_000])}
    assert rows["full"].cache == 2 * 12 * 150_000 * 768 * 2 and rows["full"].scores == 12 * 150_000**2 * 2
    assert rows["sliding_window"].cache == 2 * 12 * 4096 * 768 * 2
    assert rows["linear"].cache == 12 * 12 * (64 * 64 + 64) * 2 and rows["linear"].scores == 0
    assert rows["full"].weights == GPT2.num_params * 2


def test_plot_memory_draws_caches_scores_and_gpus():
    ax = lc.plot_memory(GPT2, lo=1000, hi=100_000, gpus={"80 GB": 80})
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "weights" and "one layer's scores, full" in labels and "KV cache / state, linear" in labels
    assert not any("scores, linear" in s for s in labels), "linear attention keeps no scores"
    scores = ax.get_lines()[labels.index("one layer's scores, full")]
    assert list(scores.get_ydata()) == [memory_bytes(t, GPT2)["scores"] for t in scores.get_xdata()]
    assert any(list(line.get_ydata()) == [80e9, 80e9] for line in ax.get_lines())


# ---------------------------------------------------------------------------------------------- measured
def test_slope_rows_recover_exact_power_laws_past_the_crossover():
    Ts = [128, 256, 512, 1024, 2048]
    sweep = {"quadratic": [fake("full", T, 3e-9 * T**2) for T in Ts],
             "linear": [fake("linear", T, 2e-6 * T) for T in Ts]}  # fmt: skip
    rows = {r.label: r for r in lc.slope_rows(sweep)}  # default: from the crossover, 384 tokens
    assert rows["quadratic"].lengths == (512, 1024, 2048)
    assert rows["quadratic"].measured.exponent == pytest.approx(2.0, abs=1e-12)
    assert rows["linear"].measured.exponent == pytest.approx(1.0, abs=1e-12)
    assert rows["quadratic"].analytic == pytest.approx(
        fit_exponent([512, 1024, 2048], [model_flops(T, MEASURE_SHAPE) for T in (512, 1024, 2048)]).exponent
    )
    assert rows["linear"].analytic == pytest.approx(1.0, abs=1e-12) and rows["linear"].kind == "linear"
    assert lc.slope_rows(sweep, min_length=128)[0].lengths == tuple(Ts)
    with pytest.raises(ValueError, match="at least 3"):
        lc.slope_rows(sweep, min_length=1024)


def test_memory_slopes_compare_with_what_the_implementation_holds():
    Ts = [1024, 2048, 4096]
    sweep = {"explicit": [fake("full", T, 1.0, memory=5.0 * T**2, impl="naive") for T in Ts],
             "chunked": [fake("linear", T, 1.0, memory=700.0 * T) for T in Ts]}  # fmt: skip
    rows = {r.label: r for r in lc.slope_rows(sweep, value="peak_memory_bytes", min_length=1024)}
    assert rows["explicit"].measured.exponent == pytest.approx(2.0) and rows["explicit"].analytic == pytest.approx(2.0)
    assert rows["chunked"].measured.exponent == pytest.approx(1.0)
    assert rows["chunked"].analytic == pytest.approx(1.0, abs=0.01)  # a fixed state plus activations linear in T
    with pytest.raises(ValueError, match="memory_sweep"):
        lc.slope_rows({"x": [fake("full", T, 1.0) for T in Ts]}, value="peak_memory_bytes", min_length=1)
    with pytest.raises(ValueError, match="value"):
        lc.slope_rows(sweep, value="watts", min_length=1)


def test_plot_sweep_puts_the_slopes_in_the_legend():
    Ts = [512, 1024, 2048]
    sweep = {"full": [fake("full", T, 1e-9 * T**2) for T in Ts]}
    rows = lc.slope_rows(sweep)
    ax = lc.plot_sweep(sweep, rows)
    points, fitted = ax.get_lines()[:2]
    assert points.get_label() == f"full: slope 2.00 (FLOPs {rows[0].analytic:.2f})"
    assert list(points.get_ydata()) == [1e-9 * T**2 for T in Ts]
    assert fitted.get_ydata()[-1] == pytest.approx(1e-9 * 2048**2)


def test_time_sweep_measures_each_variant_with_measure():
    variants = {"full": {"kind": "full", "attention_impl": "naive"}, "window 16": {"kind": "sliding_window",
                                                                                   "window": 16}}  # fmt: skip
    sweep = lc.time_sweep([32, 64], variants, repeats=1)
    assert list(sweep) == ["full", "window 16"]
    for records in sweep.values():
        assert [r.length for r in records] == [32, 64]
        assert all(r.forward_seconds > 0 and r.peak_memory_bytes is None for r in records)
        assert all(r.flops == model_flops(r.length, MEASURE_SHAPE, r.kind, r.window) for r in records)
    assert sweep["window 16"][0].window == 16 and sweep["full"][0].attention_impl == "naive"
    assert set(lc.SWEEP_VARIANTS) >= {"full, explicit T x T scores", "linear (chunked)"}


@pytest.mark.parametrize("bad", [{}, {"x": {"window": 3}}, {"x": {"kind": "full", "heads": 2}}, {"x": "full"}])
def test_bad_variants_are_explained(bad):
    with pytest.raises(ValueError, match="variant"):
        lc.time_sweep([32], bad)


@pytest.mark.slow
def test_memory_sweep_reads_a_peak_per_length():
    sweep = lc.memory_sweep([256, 512], {"linear": {"kind": "linear"}})
    assert [r.length for r in sweep["linear"]] == [256, 512]
    assert all(r.peak_memory_bytes is not None and r.memory_pass == "forward" for r in sweep["linear"])


# ---------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize(("kind", "window"), [("full", None), ("sliding_window", 100), ("linear", None)])
def test_token_costs_add_up_to_book_costs_with_a_cache(kind, window):
    T = 300
    summed = sum(lc.token_cost(t, GPT2, kind, window)["flops"] for t in range(1, T + 1))
    assert summed == pytest.approx(book_cost(T, GPT2, kind=kind, window=window).with_cache.flops, rel=1e-12)
    step = lc.token_cost(T, GPT2, kind, window)
    m = memory_bytes(T, GPT2, kind, window)
    assert step["bytes_read"] == m["weights"] + m["cache"]


def test_token_cost_of_llama_by_hand():
    first, late = lc.token_cost(1, LLAMA), lc.token_cost(150_000, LLAMA)
    dense = 2 * 32 * (4 * 4096**2 + 3 * 4096 * 11_008)  # every block's weights, 2 FLOPs each
    head = 2 * 4096 * 32_000
    assert first["flops"] == dense + 32 * 4 * 1 * 4096 + head
    assert late["flops"] == dense + 32 * 4 * 150_000 * 4096 + head
    assert late["bytes_read"] - first["bytes_read"] == 2 * 32 * 149_999 * 4096 * 2  # the cache that grew
    assert lc.token_cost(10_000, LLAMA, "sliding_window")["flops"] == lc.token_cost(4096, LLAMA)["flops"]
    with pytest.raises(ValueError):
        lc.token_cost(0, LLAMA)


def test_plot_token_cost_in_bytes_or_seconds():
    ax = lc.plot_token_cost(GPT2, hi=1000)
    full = ax.get_lines()[0]
    assert list(full.get_ydata()) == [lc.token_cost(int(t), GPT2)["bytes_read"] for t in full.get_xdata()]
    ax = lc.plot_token_cost(GPT2, hi=1000, bandwidth_bytes_per_second=2e12)
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(lc.token_cost(1, GPT2)["bytes_read"] / 2e12)


def test_generation_timing_runs_greedy_with_and_without_the_cache(monkeypatch):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, block_size=40, n_layer=1, n_head=2, n_embd=16)).eval()
    calls = []
    real_greedy = lc.cost.greedy

    def spy(model, prompt, *, max_new_tokens, use_cache):
        calls.append((len(prompt), max_new_tokens, use_cache))
        return real_greedy(model, prompt, max_new_tokens=max_new_tokens, use_cache=use_cache)

    monkeypatch.setattr(lc.cost, "greedy", spy)
    rows = lc.generation_timing(model, [1, 2, 3], [4, 8], repeats=2)
    assert [r.new_tokens for r in rows] == [4, 8]
    assert calls == [(3, 4, True)] * 2 + [(3, 4, False)] * 2 + [(3, 8, True)] * 2 + [(3, 8, False)] * 2
    assert all(r.seconds_cache > 0 and r.seconds_no_cache > 0 for r in rows)
    assert rows[0].slowdown == rows[0].seconds_no_cache / rows[0].seconds_cache
    with pytest.raises(ValueError, match="context limit"):
        lc.generation_timing(model, [1, 2, 3], [38])


def test_plot_generation_labels_the_slopes():
    rows = [lc.GenerationRow(n, 0.01 * n, 0.001 * n * n) for n in (8, 16, 32)]
    fits = {"cache": fit_exponent([8, 16, 32], [r.seconds_cache for r in rows]),
            "no cache": fit_exponent([8, 16, 32], [r.seconds_no_cache for r in rows])}  # fmt: skip
    ax = lc.plot_generation(rows, fits)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["with KV cache, slope 1.00", "without: re-read the prefix, slope 2.00"]


# ---------------------------------------------------------------------------------------------- a whole book
def test_plot_book_memory_stacks_the_parts_of_each_scenario():
    costs = {name: book_cost(150_000, name) for name in ("gpt2-small", "llama2-7b")}
    ax = lc.plot_book_memory(costs)
    bars = {}
    for patch in ax.patches:
        x = round(patch.get_x() + patch.get_width() / 2)
        bars[x] = bars.get(x, 0.0) + patch.get_height()
    expected = [s.total_memory for c in costs.values() for s in (c.one_pass, c.with_cache)]
    assert [bars[i] for i in range(4)] == pytest.approx(expected)
    gpu_lines = sorted(line.get_ydata()[0] for line in ax.get_lines())
    assert gpu_lines == sorted(gb * 1e9 for gb in BOOK_GPUS.values())
    with pytest.raises(ValueError):
        lc.plot_book_memory({})


# ---------------------------------------------------------------------------------------------- the widget
def test_context_cost_rows_follow_book_cost():
    rows = lc.context_cost_rows(150_000, "llama2-7b", "H200 141 GB")
    assert [r.kind for r in rows] == list(KINDS) and rows[1].label == "sliding window 4096"
    full = book_cost(150_000, "llama2-7b")
    assert rows[0].one_pass_bytes == full.one_pass.total_memory and rows[0].cache_bytes == full.with_cache.total_memory
    assert rows[0].one_pass_flops == full.one_pass.flops and rows[0].one_pass_seconds == full.one_pass.seconds
    assert (rows[0].fits_one_pass, rows[0].fits_cache) == (False, True)
    fused = lc.context_cost_rows(150_000, "llama2-7b", "H100 80 GB", fused_attention=True)
    assert fused[0].fits_one_pass and fused[0].one_pass_flops == full.one_pass.flops
    custom = CostShape(n_layer=2, n_embd=64, n_head=4)
    assert lc.context_cost_rows(1000, custom, "T4 16 GB")[0].fits_one_pass
    with pytest.raises(ValueError, match="unknown shape"):
        lc.context_cost_rows(1000, "gpt-5")
    with pytest.raises(ValueError, match="unknown gpu"):
        lc.context_cost_rows(1000, "gpt2-small", "a laptop")


def test_show_context_cost_draws_two_panels_and_prints_the_table(monkeypatch, capsys):
    monkeypatch.setattr(plt, "show", lambda: None)
    lc.show_context_cost(20_000, "gpt2-small", "T4 16 GB", lo=1000, hi=100_000)
    fig = plt.gcf()
    assert len(fig.axes) == 2
    memory_axes = fig.axes[0]
    full_one_pass = memory_axes.get_lines()[0]
    x = list(full_one_pass.get_xdata())
    assert 20_000 in x
    assert full_one_pass.get_ydata()[x.index(20_000)] == book_cost(20_000, "gpt2-small").one_pass.total_memory
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["one", "pass:", "memory"] and len(out) == 5
    assert out[1].startswith("full") and out[1].split()[-1] in ("yes", "no")
    assert out[-1].startswith("fits: in the 16 GB of one T4")


def test_context_cost_explorer_controls(monkeypatch, capsys):
    ipywidgets = pytest.importorskip("ipywidgets")
    monkeypatch.setattr(plt, "show", lambda: None)
    explorer = lc.context_cost_explorer(tokens=100_000)
    assert isinstance(explorer, ipywidgets.interactive)
    assert list(explorer.kwargs) == ["log10_tokens", "shape", "gpu", "fused_attention"]
    assert explorer.kwargs["log10_tokens"] == 5.0 and explorer.kwargs["shape"] == "gpt2-small"
    assert explorer.kwargs["gpu"] == "H100 80 GB" and explorer.kwargs["fused_attention"] is False
    assert capsys.readouterr().out.count("fits: in the 80 GB") == 1  # drawn once when built
    explorer.children[1].value = "llama2-7b"  # changing a control redraws
    assert capsys.readouterr().out.count("fits: in the 80 GB") == 1
    assert math.isclose(10 ** explorer.kwargs["log10_tokens"], 100_000)
