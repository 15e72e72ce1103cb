"""lmlab.widgets: the widgets build without a front end, and their logic is plain functions."""

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lmlab.lessons.objective import widgets  # noqa: E402
from lmlab.models import BigramLM  # noqa: E402
from lmlab.text.synthetic import MarkovSource  # noqa: E402

pytest.importorskip("ipywidgets")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def source():
    return MarkovSource(5, 1, seed=0)


def test_next_token_viewer_controls(source):
    viewer = widgets.next_token_viewer({"truth": source.as_model(), "uniform": BigramLM(5)}, source,
                                       text=source.decode([1, 2]), k=3)
    import ipywidgets

    text, k = viewer.children[0], viewer.children[1]
    assert isinstance(text, ipywidgets.Text) and text.value == source.decode([1, 2])
    assert isinstance(k, ipywidgets.IntSlider) and k.value == 3
    k.value = 4  # changing a control reruns the function without a front end
    assert viewer.kwargs == {"text": source.decode([1, 2]), "k": 4}


def test_show_next_tokens_draws_the_distribution(source, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda: None)
    widgets._show_next_tokens({"truth": source.as_model()}, source, source.decode([3]), 5)
    ax = plt.gcf().axes[0]
    heights = sorted((p.get_height() for p in ax.patches), reverse=True)
    assert heights == pytest.approx(sorted(source.next_token_probs([3]), reverse=True), rel=1e-6)


def test_show_next_tokens_explains_bad_input(source, capsys):
    widgets._show_next_tokens({"truth": source.as_model()}, source, "", 5)
    assert "cannot score this context" in capsys.readouterr().out
    widgets._show_next_tokens({"truth": source.as_model()}, source, "notaword", 5)
    assert "unknown word" in capsys.readouterr().out


def test_lr_explorer_and_description(monkeypatch):
    results = {1e-3: [2.0, 1.5, 1.2, 1.0], 1e-1: [2.0, 9.0, 3.0, 2.5], 1.0: [2.0, float("nan")]}
    monkeypatch.setattr(plt, "show", lambda: None)
    explorer = widgets.lr_explorer(results)
    slider = explorer.children[0]
    assert [value for _, value in slider.options] == [1e-3, 1e-1, 1.0]
    assert slider.value == 1e-1
    assert widgets.describe_lr_run(results, 1e-3).startswith("lr = 0.001: learning")
    assert "spiking" in widgets.describe_lr_run(results, 1e-1)
    assert "diverged" in widgets.describe_lr_run(results, 1.0)
    with pytest.raises(ValueError):
        widgets.describe_lr_run(results, 0.5)
    with pytest.raises(ValueError):
        widgets.lr_explorer({})


def test_clear_message_without_ipywidgets(monkeypatch, source):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        widgets.next_token_viewer(source.as_model(), source)


def test_attention_viewer_draws_the_chosen_head(monkeypatch):
    import numpy as np

    from lmlab.lessons.objective import attention_map
    from lmlab.models import GPT, GPTConfig
    from lmlab.text import CharTokenizer

    tok = CharTokenizer.from_text("abc d")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()
    viewer = widgets.attention_viewer(model, tok, text="ab cab", layer=1, head=0)
    text, layer, head = viewer.children[:3]
    assert (text.value, layer.max, head.max) == ("ab cab", 1, 1)
    monkeypatch.setattr(plt, "show", lambda: None)
    widgets.show_attention(model, tok, "abcd dcba", layer=1, head=1)  # 9 characters: the last 8 are read
    image = plt.gcf().axes[0].images[0].get_array()
    labels, weights = attention_map(model, tok, "abcd dcba", layer=1, head=1)
    assert "".join(labels) == "bcd dcba" and weights.shape == (8, 8)
    lower = ~np.triu(np.ones((8, 8), dtype=bool), 1)
    assert np.allclose(np.asarray(image)[lower], weights[lower]) and np.allclose(weights.sum(1), 1, atol=1e-6)
    assert np.asarray(image.mask)[~lower].all(), "the masked upper triangle is left blank"


def test_attention_map_explains_bad_input(capsys):
    from lmlab.models import GPT, GPTConfig
    from lmlab.text import CharTokenizer

    tok = CharTokenizer.from_text("ab")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=4, n_layer=1, n_head=2, n_embd=8))
    widgets.show_attention(model, tok, "")
    assert "cannot show this text" in capsys.readouterr().out
    with pytest.raises(ValueError, match="layer"):
        widgets.attention_map(model, tok, "ab", layer=1)
