"""What the alternatives to full attention keep of the past, measured: the experiments and figures of lesson 03b.

Each function is one idea of the lesson:

- training: a recurrent network runs the T steps of a sequence one after the other, a Transformer all T
  positions at once; both timed at a fixed number of tokens per batch as the sequences grow
  (:func:`training_timing`, :func:`plot_training_timing`);
- decoding: what one new token costs at position t, and how many bytes each model keeps per sequence to go
  on (:func:`decoding_timing`, :func:`plot_decoding`): a KV cache grows with t, a window's cache and a
  fixed-size state do not;
- reach: which input tokens can still change a position's hidden state, layer by layer, read from the
  gradients of an untrained model (:func:`receptive_field`, :func:`plot_receptive_field`), with a widget
  for a sliding window's band and its reach (:func:`show_receptive_field`, :func:`receptive_field_explorer`);
- recall: the accuracy of each kind on associative recall, against the number of pairs, the distance of
  the queries and the bytes of state it keeps (:func:`plot_recall_by_pairs`, :func:`plot_recall_by_distance`,
  :func:`plot_state_vs_accuracy`, :func:`plot_accuracy_by_distance`); the results come from
  :mod:`lmlab.lessons.long_context.recall`.

The lesson's exercises (a sliding window's mask, one step of linear attention) are solved only in the
instructor's notebook. Shapes: ``B`` batch, ``T`` tokens, ``t`` a position. Timings are the fastest of
``repeats`` passes after a warm-up (the one least disturbed by other programs on the machine), taken in
turn across every model and length so that a busy spell slows them all alike. Plotting
functions draw on the ``ax`` they are given (or a new figure) and return it; matplotlib is imported when
one is called.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from lmlab.checks import check_int
from lmlab.models import GPT, RNNLM, GPTConfig
from lmlab.plots import new_axes
from lmlab.text.synthetic import RecallByDistance

if TYPE_CHECKING:
    from lmlab.lessons.long_context.recall import RecallResult
# The recall module is imported where it is used, not here: the package imports this module, and
# `python -m lmlab.lessons.long_context.recall` must find the recall module not yet imported.

__all__ = [
    "KIND_NAMES",
    "TrainingTimingRow",
    "training_timing",
    "plot_training_timing",
    "DecodingRow",
    "decoding_timing",
    "plot_decoding",
    "receptive_field",
    "plot_receptive_field",
    "show_receptive_field",
    "receptive_field_explorer",
    "plot_recall_by_pairs",
    "plot_recall_by_distance",
    "plot_state_vs_accuracy",
    "plot_accuracy_by_distance",
]

KIND_NAMES = {"full": "full attention", "sliding_window": "sliding window", "linear": "linear attention",
              "gru": "GRU", "lstm": "LSTM"}  # fmt: skip
# color, marker, line style of each kind in the figures
_STYLE = {"full": ("tab:red", "o", "-"), "sliding_window": ("tab:green", "s", "--"), "linear": ("tab:blue", "^", ":"),
          "gru": ("tab:purple", "D", "-."), "lstm": ("tab:brown", "v", "-.")}  # fmt: skip


def _check_models(models: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping {name: model}")
    for name, m in models.items():
        if not isinstance(m, GPT | RNNLM):
            raise TypeError(f"models[{name!r}] must be an lmlab GPT or RNNLM, got {type(m).__name__}")
    return dict(models)


def _check_lengths(name: str, lengths: Sequence[int]) -> list[int]:
    if isinstance(lengths, str | bytes) or not isinstance(lengths, Sequence) or not lengths:
        raise ValueError(f"{name} must be a non-empty sequence of integers >= 1, got {lengths!r}")
    return [check_int(name, T, 1) for T in lengths]


def _fastest_interleaved(runs: Sequence[Any], repeats: int, burst: int = 1) -> list[float]:
    """The fastest of ``repeats`` timed calls of each of ``runs``, after one untimed call of each.

    The calls go round-robin in bursts of ``burst`` calls (run 0's burst, run 1's, ..., run 0's again),
    so that a busy spell of another program slows every run's calls alike instead of all the calls of one
    run: the ratios between runs, which the lesson reads, stay steady on a busy machine. Within a burst the
    later calls find the run's data in the processor's caches, as in an uninterrupted loop.
    """
    for run in runs:
        run()  # warm-up: first-call allocations and kernel choices
    best = [float("inf")] * len(runs)
    for done in range(0, repeats, burst):
        for i, run in enumerate(runs):
            for _ in range(min(burst, repeats - done)):
                t0 = time.perf_counter()
                run()
                best[i] = min(best[i], time.perf_counter() - t0)
    return best


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainingTimingRow:
    """One model at one sequence length: a forward + backward pass over ``batch_size`` sequences."""

    name: str
    length: int  # T, tokens per sequence
    batch_size: int  # sequences per batch: tokens // length
    seconds: float  # forward + loss + backward of the whole batch (fastest of the repeats)

    @property
    def microseconds_per_token(self) -> float:
        return 1e6 * self.seconds / (self.batch_size * self.length)


def training_timing(
    models: Mapping[str, nn.Module],
    lengths: Sequence[int],
    *,
    tokens: int = 2048,
    repeats: int = 3,
    seed: int = 0,
) -> list[TrainingTimingRow]:
    """Time a training pass (forward, cross-entropy, backward) of each model at each length ``T``, on
    ``tokens // T`` sequences of random ids, so that every pass holds the same number of tokens.

    A GPT computes all T positions of a layer in one set of matrix products; a recurrent layer computes its
    T steps one after the other, each on the batch's rows only. ``lengths`` must divide into ``tokens`` and
    fit every GPT's block_size. Rows in the order models x lengths.
    """
    models = _check_models(models)
    Ts = _check_lengths("lengths", lengths)
    check_int("tokens", tokens, 1)
    check_int("repeats", repeats, 1)
    bad = [T for T in Ts if tokens % T]
    if bad:
        raise ValueError(f"every length must divide tokens = {tokens}, so each batch holds as many; got {bad}")
    runs, keys = [], []
    for name, model in models.items():
        limit = model.config.block_size if isinstance(model, GPT) else None
        if limit is not None and max(Ts) > limit:
            raise ValueError(f"models[{name!r}] reads at most {limit} tokens; lengths go up to {max(Ts)}")
        for T in Ts:
            g = torch.Generator().manual_seed(seed)
            x = torch.randint(model.vocab_size, (tokens // T, T + 1), generator=g)  # (B, T + 1)

            def run(
                model: nn.Module = model, inputs: torch.Tensor = x[:, :-1], targets: torch.Tensor = x[:, 1:]
            ) -> None:
                model.zero_grad(set_to_none=True)
                model(inputs, targets).loss.backward()

            runs.append(run)
            keys.append((name, T))
    was_training = {name: model.training for name, model in models.items()}
    for model in models.values():
        model.train()
    try:
        seconds = _fastest_interleaved(runs, repeats)
    finally:
        for name, model in models.items():
            model.zero_grad(set_to_none=True)
            model.train(was_training[name])
    return [TrainingTimingRow(name, T, tokens // T, s) for (name, T), s in zip(keys, seconds, strict=True)]


def plot_training_timing(rows: Sequence[TrainingTimingRow], *, ax: Any = None) -> Any:
    """Microseconds per token of a training pass against the sequence length, one line per model."""
    ax = new_axes(ax, figsize=(6.0, 3.6))
    for i, name in enumerate(dict.fromkeys(r.name for r in rows)):
        mine = [r for r in rows if r.name == name]
        ax.plot([r.length for r in mine], [r.microseconds_per_token for r in mine], marker="os^D"[i % 4], label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens per sequence T (batch of a fixed number of tokens)")
    ax.set_ylabel("µs per token, forward + backward")
    ax.set_title("Training: time per token as the sequences grow")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return ax


# ---------------------------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class DecodingRow:
    """One model after reading ``position`` tokens: one more token's step, and what it keeps per sequence."""

    name: str
    position: int  # t, tokens read before the timed steps
    batch_size: int
    seconds_per_step: float  # the fastest of the timed steps, the whole batch
    state_bytes: int  # bytes kept per sequence to go on decoding after ``position`` tokens (float32)


@torch.no_grad()
def decoding_timing(
    models: Mapping[str, nn.Module],
    positions: Sequence[int],
    *,
    batch_size: int = 16,
    steps: int = 20,
    chunk: int = 512,
    seed: int = 0,
) -> list[DecodingRow]:
    """For each model and position t: read t random tokens into the model's own cache (``new_cache``, in
    chunks of ``chunk`` tokens); then time ``steps`` single-token steps of every (model, t) in turn, round
    after round (after one untimed step each); report each one's fastest and the bytes the model keeps
    per sequence after t tokens
    (:func:`~lmlab.lessons.long_context.recall.decoding_state_bytes`). Every GPT's block_size must hold
    ``max(positions) + steps + 1`` tokens. Rows in the order models x positions.
    """
    from lmlab.lessons.long_context.recall import decoding_state_bytes

    models = _check_models(models)
    ts = _check_lengths("positions", positions)
    for name, value in (("batch_size", batch_size), ("steps", steps), ("chunk", chunk)):
        check_int(name, value, 1)
    for name, model in models.items():
        need = max(ts) + steps + 1
        if isinstance(model, GPT) and need > model.config.block_size:
            raise ValueError(f"models[{name!r}] has block_size {model.config.block_size}; decoding needs {need}")
    was_training = {name: model.training for name, model in models.items()}
    runs, keys = [], []
    try:
        for name, model in models.items():
            model.eval()
            for t in ts:
                g = torch.Generator().manual_seed(seed)
                ids = torch.randint(model.vocab_size, (batch_size, t + 1), generator=g)  # (B, t + 1)
                cache = (
                    model.new_cache(batch_size, t + steps + 1)
                    if isinstance(model, GPT)
                    else model.new_cache(batch_size)
                )
                for start in range(0, t, chunk):
                    model(ids[:, start : min(t, start + chunk)], cache=cache)

                def run(model: nn.Module = model, nxt: torch.Tensor = ids[:, t:], cache: Any = cache) -> None:
                    model(nxt, cache=cache)  # (B, 1): one more token; the cache grows by one

                runs.append(run)
                keys.append((name, t))
        seconds = _fastest_interleaved(runs, steps, burst=2)
    finally:
        for name, model in models.items():
            model.train(was_training[name])
    return [
        DecodingRow(name, t, batch_size, s, decoding_state_bytes(models[name], t))
        for (name, t), s in zip(keys, seconds, strict=True)
    ]


def plot_decoding(rows: Sequence[DecodingRow], *, axes: Any = None) -> Any:
    """Two panels against the position t: milliseconds per decoding step, and bytes kept per sequence."""
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 2, figsize=(11.0, 3.6))
    for i, name in enumerate(dict.fromkeys(r.name for r in rows)):
        mine = [r for r in rows if r.name == name]
        t = [r.position for r in mine]
        marker = "os^D"[i % 4]
        axes[0].plot(t, [1e3 * r.seconds_per_step for r in mine], marker=marker, label=name)
        axes[1].plot(t, [r.state_bytes for r in mine], marker=marker, label=name)
    axes[0].set_ylabel(f"ms per step (batch of {rows[0].batch_size})")
    axes[0].set_title("One new token after t tokens")
    axes[1].set_ylabel("bytes kept per sequence")
    axes[1].set_title("What each model keeps to go on")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("position t")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize="small")
    return axes


# ---------------------------------------------------------------------------------------------- reach
def _embedding_and_layers(model: nn.Module) -> tuple[nn.Module, Sequence[nn.Module]]:
    if isinstance(model, GPT):
        return model.transformer.wte, list(model.transformer.h)
    if isinstance(model, RNNLM):
        return model.wte, list(model.layers)
    raise TypeError(f"model must be an lmlab GPT or RNNLM, got {type(model).__name__}")


def receptive_field(model: nn.Module, length: int, position: int | None = None, *, seed: int = 0) -> np.ndarray:
    """Which input tokens can change the hidden state at ``position`` (default the last), after each layer.

    Returns a boolean array (n_layer, length): ``out[l, s]`` is True when the gradient of the output of
    layer ``l`` at ``position`` with respect to the embedding of token ``s`` is not zero, on ``length``
    random ids drawn with ``seed``. Masked attention weights are exactly 0, so for attention a False is
    exact: that token cannot reach the position through that layer. (Only the token embeddings are
    traced; the position embeddings are the same in every text.)
    """
    check_int("length", length, 1)
    position = length - 1 if position is None else check_int("position", position, 0)
    if position >= length:
        raise ValueError(f"position must be below length = {length}, got {position}")
    if isinstance(model, GPT) and length > model.config.block_size:
        raise ValueError(f"the model reads at most {model.config.block_size} tokens, got length {length}")
    emb_module, layers = _embedding_and_layers(model)
    captured: dict[str, Any] = {"layers": []}

    def keep_embedding(module: nn.Module, args: Any, out: torch.Tensor) -> None:
        captured["emb"] = out

    def keep_layer(module: nn.Module, args: Any, out: Any) -> None:
        captured["layers"].append(out[0] if isinstance(out, tuple) else out)  # nn.GRU returns (output, h_n)

    handles = [emb_module.register_forward_hook(keep_embedding)]
    handles += [layer.register_forward_hook(keep_layer) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        ids = torch.randint(model.vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))
        with torch.enable_grad():
            model(ids.to(model.device))
            emb = captured["emb"]  # (1, T, C)
            reach = []
            for out in captured["layers"]:  # (1, T, C) each
                (grad,) = torch.autograd.grad(out[0, position].sum(), emb, retain_graph=True)
                reach.append((grad[0].abs().sum(-1) > 0).cpu().numpy())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return np.stack(reach)


def plot_receptive_field(reach: Mapping[str, np.ndarray], *, position: int | None = None, ax: Any = None) -> Any:
    """One row per entry of ``reach`` ({label: (length,) boolean}): dark where a token reaches the position."""
    if not reach:
        raise ValueError("reach must name at least one row")
    rows = np.stack([np.asarray(r, dtype=float) for r in reach.values()])  # (rows, T)
    ax = new_axes(ax, figsize=(9.0, 0.5 + 0.45 * len(rows)))
    ax.imshow(rows, aspect="auto", cmap="Greys", vmin=0, vmax=1.25, interpolation="nearest")
    ax.set_yticks(range(len(rows)), list(reach))
    T = rows.shape[1]
    position = T - 1 if position is None else position
    ax.axvline(position, color="tab:red", lw=1.5)
    ax.set_xlabel(f"input token s (the red line: the position read, t = {position})")
    ax.set_xticks(range(0, T, max(1, T // 12)))
    ax.set_title("Which tokens can change the hidden state at t (dark: yes)")
    return ax


def _window_model(window: int, n_layer: int, length: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=16, block_size=length, n_layer=n_layer, n_head=1, n_embd=16,
                       attention="sliding_window", window=window)  # fmt: skip
    return GPT(config).eval()


def show_receptive_field(window: int = 4, n_layer: int = 3, length: int = 40) -> None:
    """A sliding window of ``window`` positions and ``n_layer`` layers, measured on an untrained GPT: one
    layer's attention weights (the band; white where a weight is exactly 0), and, layer by layer, which
    tokens reach the last position."""
    import matplotlib.pyplot as plt

    check_int("window", window, 1)
    check_int("n_layer", n_layer, 1)
    check_int("length", length, 2)
    model = _window_model(window, n_layer, length)
    ids = torch.randint(16, (1, length), generator=torch.Generator().manual_seed(0))
    weights = model.attention_weights(ids)[0, 0, 0]  # (T, T), layer 0, head 0
    reach = receptive_field(model, length)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.0, 3.8), gridspec_kw={"width_ratios": [1, 2.2]})
    left.imshow((weights > 0).numpy(), cmap="Greys", vmin=0, vmax=1.25, interpolation="nearest")
    left.set_xlabel("key position j")
    left.set_ylabel("query position i")
    left.set_title(f"one layer: weights > 0 (window {window})")
    labels = {f"after layer {i + 1}": reach[i] for i in range(n_layer)}
    plot_receptive_field(labels, ax=right)
    first = [int(np.argmax(r)) for r in reach]
    right.set_title(f"reach of the last position: {', '.join(str(length - 1 - f) for f in first)} tokens back")
    fig.tight_layout()
    plt.show()


def receptive_field_explorer(length: int = 40) -> Any:
    """Sliders for the window and the number of layers: the picture of :func:`show_receptive_field`,
    redrawn when a slider is released."""
    from lmlab.widgets import require_ipywidgets

    w = require_ipywidgets()
    check_int("length", length, 2)
    style = {"description_width": "initial"}
    return w.interactive(
        lambda window, n_layer: show_receptive_field(window, n_layer, length),
        window=w.IntSlider(value=4, min=1, max=16, description="window w", continuous_update=False, style=style),
        n_layer=w.IntSlider(value=3, min=1, max=6, description="layers", continuous_update=False, style=style),
    )


# ---------------------------------------------------------------------------------------------- recall
def _kinds(results: Sequence[RecallResult]) -> list[str]:
    from lmlab.lessons.long_context.recall import RECALL_KINDS

    return [k for k in RECALL_KINDS if any(r.kind == k for r in results)]


def _style(kind: str) -> dict[str, Any]:
    color, marker, line = _STYLE[kind]
    return {"color": color, "marker": marker, "linestyle": line, "label": KIND_NAMES[kind]}


def plot_recall_by_pairs(results: Sequence[RecallResult], *, min_distance: int = 1, ax: Any = None) -> Any:
    """Accuracy against the number of key-value pairs, one line per kind (runs with ``min_distance``),
    with each setting's chance level dotted."""
    mine = [r for r in results if r.min_distance == min_distance]
    if not mine:
        raise ValueError(f"no result has min_distance = {min_distance}")
    ax = new_axes(ax, figsize=(6.0, 3.6))
    for kind in _kinds(mine):
        rs = sorted((r for r in mine if r.kind == kind), key=lambda r: r.num_pairs)
        ax.plot([r.num_pairs for r in rs], [r.accuracy for r in rs], **_style(kind))
    pairs = sorted({r.num_pairs for r in mine})
    chance = {r.num_pairs: r.chance for r in mine}
    ax.plot(pairs, [chance[p] for p in pairs], color="grey", linestyle=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(pairs, [str(p) for p in pairs])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("key-value pairs per sequence")
    ax.set_ylabel("recall accuracy")
    ax.set_title("Associative recall: accuracy as the pairs grow")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_recall_by_distance(
    results: Sequence[RecallResult], *, window: int, n_layer: int, num_pairs: int | None = None, ax: Any = None
) -> Any:
    """Accuracy against the smallest query distance, one line per kind, for ``num_pairs`` (default: the
    number of pairs that was run at several distances). Vertical lines: the distance one layer of the
    window sees (``window - 1``) and the reach of ``n_layer`` stacked layers (``n_layer * (window - 1)``)."""
    check_int("window", window, 1)
    check_int("n_layer", n_layer, 1)
    if num_pairs is None:
        counts = {p: len({r.min_distance for r in results if r.num_pairs == p}) for p in {r.num_pairs for r in results}}
        num_pairs = max(counts, key=lambda p: (counts[p], -p))
    mine = [r for r in results if r.num_pairs == num_pairs]
    ax = new_axes(ax, figsize=(6.0, 3.6))
    for kind in _kinds(mine):
        rs = sorted((r for r in mine if r.kind == kind), key=lambda r: r.min_distance)
        if len(rs) > 1:
            ax.plot([r.min_distance for r in rs], [r.accuracy for r in rs], **_style(kind))
    ax.axhline(mine[0].chance, color="grey", linestyle=":", label="chance")
    ax.axvline(window - 1, color="tab:green", alpha=0.5, lw=1)
    ax.axvline(n_layer * (window - 1), color="tab:green", alpha=0.5, lw=3, label=f"reach of {n_layer} layers")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("smallest distance from a pair's value to its query")
    ax.set_ylabel("recall accuracy")
    ax.set_title(f"{num_pairs} pairs, the queries moved away (window {window})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_state_vs_accuracy(results: Sequence[RecallResult], *, min_distance: int = 1, ax: Any = None) -> Any:
    """Accuracy against the bytes each trained model keeps per sequence, one point per run (runs with
    ``min_distance``), labelled by its number of pairs."""
    mine = [r for r in results if r.min_distance == min_distance]
    if not mine:
        raise ValueError(f"no result has min_distance = {min_distance}")
    ax = new_axes(ax, figsize=(6.0, 3.6))
    for kind in _kinds(mine):
        rs = sorted((r for r in mine if r.kind == kind), key=lambda r: r.num_pairs)
        style = _style(kind)
        ax.scatter([r.state_bytes for r in rs], [r.accuracy for r in rs], color=style["color"],
                   marker=style["marker"], label=style["label"], s=40)  # fmt: skip
        for r in rs:
            ax.annotate(str(r.num_pairs), (r.state_bytes, r.accuracy), textcoords="offset points", xytext=(5, 3),
                        fontsize="small", color=style["color"])  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("bytes kept per sequence (float32)")
    ax.set_ylabel("recall accuracy")
    ax.set_title("What is kept against what is recalled (numbers: pairs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_accuracy_by_distance(
    profiles: Mapping[str, RecallByDistance], *, chance: float | None = None, reach: int | None = None, ax: Any = None
) -> Any:
    """Accuracy against the distance of each query, one line per entry of ``profiles`` ({kind or label:
    :func:`lmlab.text.synthetic.recall_accuracy_by_distance`'s result}); ``reach``, a vertical line."""
    if not profiles:
        raise ValueError("profiles must name at least one model")
    ax = new_axes(ax, figsize=(6.0, 3.4))
    for name, p in profiles.items():
        style = _style(name) if name in _STYLE else {"label": name, "marker": "o"}
        ax.plot(p.distance, p.accuracy, **style)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    if reach is not None:
        ax.axvline(reach, color="tab:green", alpha=0.5, lw=3, label="reach of the window")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("distance from the pair's value to the query")
    ax.set_ylabel("accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax
