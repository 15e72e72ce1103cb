"""lmlab.plots: what is drawn is the data given, and the live loss plot follows a real Trainer run."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lmlab import plots  # noqa: E402
from lmlab.lessons.objective import (  # noqa: E402
    plot_bigram_fit,
    plot_lr_sweep,
    plot_next_tokens,
    plot_running_product,
)
from lmlab.models import GPT, GPTConfig  # noqa: E402
from lmlab.plots import LiveLossPlot, plot_history  # noqa: E402
from lmlab.text.synthetic import MarkovSource, markov_token_data  # noqa: E402
from lmlab.train import History, Trainer  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _history() -> History:
    h = History()
    for step in range(1, 11):
        h.append({"kind": "train", "step": step, "train_loss": 3.0 - 0.1 * step})
        if step % 5 == 0:
            h.append({"kind": "eval", "step": step, "val_loss": 2.9 - 0.1 * step})
    return h


def _line(ax, label_start):
    return next(line for line in ax.get_lines() if line.get_label().startswith(label_start))


def test_plot_history_draws_the_records_and_the_floor():
    ax = plot_history(_history(), floor=1.25, smooth=3)
    raw = _line(ax, "train loss (each")
    np.testing.assert_allclose(raw.get_ydata(), [3.0 - 0.1 * s for s in range(1, 11)])
    smooth = _line(ax, "train loss (mean")
    assert smooth.get_ydata()[2] == pytest.approx(np.mean([2.9, 2.8, 2.7]))
    val = _line(ax, "validation")
    np.testing.assert_allclose(val.get_xdata(), [5, 10])
    floor = _line(ax, "entropy rate")
    assert floor.get_ydata()[0] == 1.25
    ax = plot_history(_history(), lines={"uniform": 2.0, "truth": 1.0})
    assert _line(ax, "uniform").get_ydata()[0] == 2.0 and _line(ax, "truth").get_ydata()[0] == 1.0


def test_plot_next_tokens_bar_heights():
    ax = plot_next_tokens(["a", "b", " "], {"m1": [0.5, 0.3, 0.2], "m2": [0.1, 0.1, 0.8]})
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.5, 0.3, 0.2, 0.1, 0.1, 0.8])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "' '"]
    with pytest.raises(ValueError, match="labels"):
        plot_next_tokens(["a"], {"m": [0.5, 0.5]})


def test_plot_bigram_fit_scatter():
    P = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    ax = plot_bigram_fit(P, P + 0.01)
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], P.flatten().numpy(), rtol=1e-6)
    np.testing.assert_allclose(offsets[:, 1], (P + 0.01).flatten().numpy(), rtol=1e-6)
    with pytest.raises(ValueError):
        plot_bigram_fit(P, torch.ones(3, 3))


def test_plot_lr_sweep_clips_diverging_runs():
    results = {1e-3: [2.0, 1.9, 1.8], 1.0: [2.0, 50.0, float("nan")]}
    ax = plot_lr_sweep(results, highlight=1.0)
    big = _line(ax, "lr = 1")
    assert max(big.get_ydata()) == pytest.approx(4.0)  # clipped at twice the first loss
    assert big.get_linewidth() > _line(ax, "lr = 0.001").get_linewidth()
    with pytest.raises(ValueError, match="highlight"):
        plot_lr_sweep(results, highlight=0.5)


def test_plot_running_product_reports_underflow():
    ax = plot_running_product([0.01] * 40)
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(lab.startswith("product in float32 (0.0 from token") for lab in labels)
    assert "product in float64" in labels  # 1e-80 is fine in float64
    logs = _line(ax, "sum of logs")
    assert logs.get_ydata()[-1] == pytest.approx(-80.0)
    with pytest.raises(ValueError):
        plot_running_product([0.5, 0.0])


@pytest.fixture(scope="module")
def small_data():
    return markov_token_data(MarkovSource(5, 1, seed=0), 2000, 300, seed=0)


def _fit(data, callback, steps=6):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("micro", vocab_size=5, block_size=8))
    return Trainer(model, data, callbacks=[callback], max_steps=steps, batch_size=4, eval_interval=3, warmup_steps=0,
                   progress=False).fit()


def test_live_loss_plot_outside_a_notebook(small_data):
    cb = LiveLossPlot(floor=1.0, lines={"uniform": math.log(5)}, live=None)
    history = _fit(small_data, cb)
    assert [s for s, _ in cb.train] == [r["step"] for r in history.train]
    assert [v for _, v in cb.val] == pytest.approx([r["val_loss"] for r in history.evals])
    ax = cb.figure.axes[0]
    assert len(_line(ax, "train loss (each").get_ydata()) == 6
    assert _line(ax, "uniform").get_ydata()[0] == pytest.approx(math.log(5))
    assert not plt.get_fignums()  # the figure is not left open in pyplot


def test_live_loss_plot_updates_one_display(small_data, monkeypatch):
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def display(obj, display_id=False):
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr(plots, "_in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", display)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    _fit(small_data, LiveLossPlot(min_interval=0.0), steps=3)
    kinds = [k for k, _ in shown]
    assert kinds[0] == "display" and kinds.count("display") == 1 and len(kinds) > 2
    assert shown[-1][1].data[:4] == b"\x89PNG"


def test_live_loss_plot_draws_once_in_grading_mode(small_data, monkeypatch):
    shown = []
    monkeypatch.setattr(plots, "_in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda obj, display_id=False: shown.append(obj))
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    _fit(small_data, LiveLossPlot(min_interval=0.0))
    assert len(shown) == 1


def test_live_loss_plot_checks_arguments():
    with pytest.raises(ValueError):
        LiveLossPlot(floor=math.inf)
    with pytest.raises(ValueError):
        LiveLossPlot(min_interval=-1)
