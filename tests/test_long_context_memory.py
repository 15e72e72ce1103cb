"""Lesson 03b's experiments and figures (lmlab.lessons.long_context.memory), against exact counts.

References: the bytes each cache holds by formula (2 L t d for a KV cache, 2 L (w - 1) d for a window, L H for
a GRU), the reach of stacked sliding windows L (w - 1), causality (no later token reaches a position), and
train_recall for train_recall_model. Timings are only checked for shape and sign: tests check correctness,
not speed.
"""

from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lmlab.lessons import long_context as lc  # noqa: E402
from lmlab.lessons.long_context.recall import RecallResult, RecallSetup, train_recall, train_recall_model  # noqa: E402
from lmlab.models import GPT, RNNLM, GPTConfig, RNNConfig  # noqa: E402
from lmlab.text.synthetic import recall_accuracy, recall_accuracy_by_distance  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def gpt(attention="full", window=None, n_layer=2, block_size=64, n_embd=16, n_head=2):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=16, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                         attention=attention, window=window))  # fmt: skip


def gru(n_layer=2, width=16):
    torch.manual_seed(0)
    return RNNLM(RNNConfig(vocab_size=16, n_embd=width, n_hidden=width, n_layer=n_layer))


# ---------------------------------------------------------------------------------------------- timing
def test_training_timing_holds_the_tokens_fixed_and_leaves_the_models_as_they_were():
    models = {"GRU": gru().eval(), "GPT": gpt()}
    rows = lc.training_timing(models, [4, 16, 64], tokens=64, repeats=1)
    assert [(r.name, r.length, r.batch_size) for r in rows] == [
        (name, T, 64 // T) for name in models for T in (4, 16, 64)
    ]
    assert all(r.seconds > 0 and r.microseconds_per_token == pytest.approx(1e6 * r.seconds / 64) for r in rows)
    assert not models["GRU"].training and models["GPT"].training  # restored
    assert all(p.grad is None for m in models.values() for p in m.parameters())


@pytest.mark.parametrize(
    "models, lengths, tokens, message",
    [
        ({"GPT": "not a model"}, [4], 16, "GPT or RNNLM"),
        ({}, [4], 16, "non-empty"),
        ({"GPT": None}, [4], 16, "GPT or RNNLM"),
        ("gpt", [3], 16, "divide"),
        ("gpt", [128], 128, "at most 64"),
        ("gpt", [], 16, "non-empty"),
    ],
)
def test_training_timing_says_what_is_wrong(models, lengths, tokens, message):
    models = {"GPT": gpt()} if models == "gpt" else models
    with pytest.raises((ValueError, TypeError), match=message):
        lc.training_timing(models, lengths, tokens=tokens, repeats=1)


def test_decoding_timing_reports_the_bytes_each_kind_keeps():
    L, d, w = 2, 16, 4
    models = {"full": gpt(block_size=48), "window": gpt("sliding_window", w, block_size=48),
              "linear": gpt("linear", block_size=48), "gru": gru()}  # fmt: skip
    rows = lc.decoding_timing(models, [8, 32], batch_size=3, steps=2)
    kept = {(r.name, r.position): r.state_bytes for r in rows}
    for t in (8, 32):
        assert kept["full", t] == 2 * L * t * d * 4
        assert kept["window", t] == 2 * L * (w - 1) * d * 4
        assert kept["linear", t] == L * 2 * (8 * 8 + 8) * 4  # 2 heads of size 8: S and z
        assert kept["gru", t] == L * d * 4
    assert all(r.seconds_per_step > 0 and r.batch_size == 3 for r in rows)
    with pytest.raises(ValueError, match="block_size 48"):
        lc.decoding_timing({"full": models["full"]}, [40], steps=10)
    axes = lc.plot_decoding(rows)
    assert len(axes[1].get_lines()) == 4
    assert list(axes[1].get_lines()[0].get_ydata()) == [kept["full", 8], kept["full", 32]]


def test_plot_training_timing_draws_one_line_per_model():
    rows = [lc.TrainingTimingRow("a", T, 64 // T, 0.001 * T) for T in (4, 16)]
    rows += [lc.TrainingTimingRow("b", T, 64 // T, 0.002) for T in (4, 16)]
    ax = lc.plot_training_timing(rows)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    assert np.allclose(lines[0].get_ydata(), [1e6 * 0.004 / 64, 1e6 * 0.016 / 64])


# ---------------------------------------------------------------------------------------------- reach
@pytest.mark.parametrize("window, n_layer", [(1, 2), (2, 3), (4, 3), (5, 1)])
def test_stacked_windows_reach_n_layer_times_window_minus_one(window, n_layer):
    T = 30
    reach = lc.receptive_field(gpt("sliding_window", window, n_layer=n_layer, block_size=T), T)
    assert reach.shape == (n_layer, T) and reach.dtype == bool
    for layer in range(n_layer):
        back = (layer + 1) * (window - 1)
        expected = np.zeros(T, dtype=bool)
        expected[T - 1 - back :] = True
        assert np.array_equal(reach[layer], expected), (layer, reach[layer])


@pytest.mark.parametrize("model", [gpt(), gpt("linear"), gru()], ids=["full", "linear", "gru"])
def test_unbounded_kinds_reach_every_earlier_token_and_no_later_one(model):
    reach = lc.receptive_field(model, 20, position=11)
    assert reach[:, :12].all() and not reach[:, 12:].any()


def test_receptive_field_checks_its_arguments():
    with pytest.raises(ValueError, match="below length"):
        lc.receptive_field(gpt(), 10, position=10)
    with pytest.raises(ValueError, match="at most 64"):
        lc.receptive_field(gpt(), 65)
    with pytest.raises(TypeError, match="GPT or RNNLM"):
        lc.receptive_field(torch.nn.Linear(2, 2), 4)


def test_the_receptive_field_picture_and_widget_build():
    lc.show_receptive_field(window=3, n_layer=2, length=12)
    ax = lc.plot_receptive_field({"a": np.array([0, 1, 1]), "b": np.array([1, 1, 1])})
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    pytest.importorskip("ipywidgets")
    widget = lc.receptive_field_explorer(length=12)
    assert {c.description for c in widget.children if hasattr(c, "description")} >= {"window w", "layers"}


# ---------------------------------------------------------------------------------------------- recall
def result(kind, pairs, accuracy, distance=1, state=64):
    return RecallResult(kind=kind, num_pairs=pairs, min_distance=distance, accuracy=accuracy, chance=0.1, params=1,
                        state_bytes=state, seconds=1.0, final_loss=0.5)  # fmt: skip


RESULTS = [result("full", 2, 1.0, state=4096), result("full", 4, 0.9, state=4096), result("gru", 2, 0.6),
           result("gru", 4, 0.3), result("full", 2, 0.95, 16), result("sliding_window", 2, 1.0, 1, 512),
           result("sliding_window", 2, 0.1, 16, 512)]  # fmt: skip


def test_recall_plots_read_the_results_they_are_given():
    ax = lc.plot_recall_by_pairs(RESULTS)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["full attention"].get_ydata()) == [1.0, 0.9]
    assert list(lines["GRU"].get_ydata()) == [0.6, 0.3] and list(lines["chance"].get_ydata()) == [0.1, 0.1]
    ax = lc.plot_recall_by_distance(RESULTS, window=8, n_layer=2)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["sliding window"].get_xdata()) == [1, 16]
    assert list(lines["full attention"].get_ydata()) == [1.0, 0.95]
    assert "GRU" not in lines  # one distance only
    ax = lc.plot_state_vs_accuracy(RESULTS)
    assert [c.get_label() for c in ax.collections] == ["full attention", "sliding window", "GRU"]
    with pytest.raises(ValueError, match="min_distance = 3"):
        lc.plot_recall_by_pairs(RESULTS, min_distance=3)


TINY = RecallSetup(vocab_size=16, seq_len=12, n_embd=16, n_layer=1, n_head=2, window=3, steps=6, batch_size=8,
                   warmup_steps=2, n_eval=32)  # fmt: skip


def test_train_recall_model_returns_the_model_that_train_recall_measures():
    model, res = train_recall_model("sliding_window", 3, TINY)
    assert isinstance(model, GPT) and not model.training
    assert res == replace(train_recall("sliding_window", 3, TINY), seconds=res.seconds)
    task = TINY.task(3)
    assert recall_accuracy(model, task, n=TINY.n_eval, generator=TINY.seed + 10_000) == res.accuracy
    profile = recall_accuracy_by_distance(model, task, n=64, generator=1)
    ax = lc.plot_accuracy_by_distance({"sliding_window": profile, "mine": profile}, chance=0.1, reach=2)
    assert [line.get_label() for line in ax.get_lines()][:2] == ["sliding window", "mine"]
