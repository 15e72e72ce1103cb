"""What training maximises: the experiments of lesson 01 ("The training objective").

Each function is one idea of the lesson, small enough to read in a minute:

- why the probability of a text is summed in log space (:func:`product_of_probs`);
- the model as a probability distribution over the next token, and comparing models on one context
  (:func:`next_token_probs`, :func:`top_next_tokens`, :func:`compare_next_tokens`);
- maximum likelihood for a bigram model by gradient descent on a table of logits (:func:`train_bigram`; the
  count-based fit is :meth:`lmlab.models.BigramLM.from_counts`);
- teacher forcing: every position's loss from one forward pass equals the loop over prefixes
  (:func:`position_losses`, :func:`prefix_losses`, :func:`future_token_effect`);
- a tour of the GPT being trained (:func:`parameter_counts`, :func:`shape_trace`);
- the best loss a model can reach on a language with a known distribution (:func:`conditional_entropies`,
  :func:`best_window_loss`);
- short, seeded training runs for diagnosing a run (:func:`lr_sweep`, :func:`diagnose_run`) and padding
  sequences of different lengths for the dataset objective (:func:`pad_sequences`).

Cross-entropy from logits is :func:`lmlab.likelihood.nll` and dialogue masks are
:func:`lmlab.likelihood.dialogue_tokens`. The lesson's exercises (a text's log-probability, cross-entropy,
the bigram MLE by counting, ...) are solved only in the instructor's notebook.

Shapes: ``T`` tokens, ``B`` sequences, ``V`` vocabulary size, ``C`` channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlab.checks import as_ids, check_int, check_vocab, model_device
from lmlab.lm import context_limit
from lmlab.models import GPT, BigramLM, GPTConfig
from lmlab.text.data import TokenData
from lmlab.text.synthetic import MarkovSource
from lmlab.train import Trainer

__all__ = [
    "product_of_probs",
    "next_token_probs",
    "top_next_tokens",
    "compare_next_tokens",
    "train_bigram",
    "position_losses",
    "prefix_losses",
    "future_token_effect",
    "parameter_counts",
    "shape_trace",
    "attention_map",
    "conditional_entropies",
    "best_window_loss",
    "lr_sweep",
    "diagnose_run",
    "pad_sequences",
]


# ---------------------------------------------------------------------------------------------- helpers
def _as_float64(values: Any, name: str) -> torch.Tensor:
    """A 1-D float64 CPU tensor from a list, a NumPy array or a tensor of numbers."""
    if isinstance(values, str | bytes):
        raise TypeError(f"{name} must be a sequence of numbers, got a string")
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bool or values.is_complex():
            raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
        t = values.detach().to("cpu", torch.float64)
    else:
        try:
            t = torch.as_tensor(np.asarray(values, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from err
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one number per token), got shape {tuple(t.shape)}")
    return t


def _ids(ids: Any, name: str = "ids", dims: tuple[int, ...] = (1, 2)) -> torch.Tensor:
    return as_ids(ids, name, dims=dims).cpu()


def _vocab(ids: torch.Tensor, vocab_size: Any, name: str = "ids") -> int:
    V = check_int("vocab_size", vocab_size, 1)
    check_vocab(ids, V, name)
    return V


# ---------------------------------------------------------------------------------------------- chain rule
def product_of_probs(probs: Any, dtype: torch.dtype = torch.float32) -> float:
    """The product of ``probs`` multiplied one by one in ``dtype``: what goes wrong without logs.

    In float32 the product of a few hundred typical next-token probabilities falls below the smallest
    positive number (about 1e-45) and becomes exactly 0.0; float64 lasts longer (about 1e-324) but fails
    too. Compare with the sum of their logarithms.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    p = _as_float64(probs, "probs").to(dtype)
    out = torch.ones((), dtype=dtype)
    for x in p:  # one multiplication at a time, rounding to dtype after each, like a running product
        out = out * x
    return float(out)


# ---------------------------------------------------------------------------------------------- next token
def next_token_probs(model: nn.Module, context: Any) -> torch.Tensor:
    """p(next token | context) (V,) float32: the softmax of the model's logits at the last position.

    ``context`` is a 1-D sequence of at least one token id; only its last ``model.context_limit`` tokens are
    read (a GPT cannot see further back). The model is used in eval mode without gradients and put back.
    """
    ids = _ids(context, "context", dims=(1,))
    if ids.numel() == 0:
        raise ValueError("context is empty; give at least one token (the model predicts what follows it)")
    block = context_limit(model)
    if block is not None:
        ids = ids[-block:]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(ids.unsqueeze(0).to(model_device(model)))
    finally:
        model.train(was_training)
    logits = out[0] if isinstance(out, tuple) else out
    return F.softmax(logits[0, -1].float(), dim=-1).cpu()


def top_next_tokens(model: nn.Module, tokenizer: Any, text: str, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``text`` as ``(token text, probability)``, most likely first.

    ``tokenizer`` has ``encode(str) -> list[int]`` and ``decode(list[int]) -> str`` (a CharTokenizer, or a
    :class:`~lmlab.text.synthetic.MarkovSource`, whose tokens are words). Ties keep the lower token id first.
    """
    k = check_int("k", k, 1)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    probs = next_token_probs(model, tokenizer.encode(text))
    k = min(k, probs.numel())
    order = sorted(range(probs.numel()), key=lambda i: (-float(probs[i]), i))[:k]
    return [(tokenizer.decode([i]), float(probs[i])) for i in order]


def compare_next_tokens(
    models: Mapping[str, nn.Module], tokenizer: Any, text: str, k: int = 8
) -> tuple[list[str], dict[str, list[float]]]:
    """Next-token distributions of several models after the same ``text``, side by side.

    Returns ``(labels, probs)``: the ``k`` tokens the *first* model finds most likely (as text), and for
    each model name the probability that model gives to each of those tokens. Handy for judging which
    model suits a context better, and for :func:`lmlab.plots.plot_next_tokens`.
    """
    if not isinstance(models, Mapping) or not models:
        raise TypeError("models must be a non-empty dict {name: model}")
    k = check_int("k", k, 1)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    context = tokenizer.encode(text)
    dists = {name: next_token_probs(m, context) for name, m in models.items()}
    first = next(iter(dists.values()))
    for name, p in dists.items():
        if p.numel() != first.numel():
            raise ValueError(f"model {name!r} has {p.numel()} tokens, the first model {first.numel()}")
    order = sorted(range(first.numel()), key=lambda i: (-float(first[i]), i))[: min(k, first.numel())]
    labels = [tokenizer.decode([i]) for i in order]
    return labels, {name: [float(p[i]) for i in order] for name, p in dists.items()}


# ---------------------------------------------------------------------------------------------- bigram MLE
def train_bigram(
    ids: Any,
    vocab_size: int,
    *,
    steps: int = 300,
    lr: float = 1.0,
    optimizer: str = "adam",
    callback: Callable[[int, float], Any] | None = None,
) -> tuple[BigramLM, list[float]]:
    """Fit a :class:`BigramLM` to ``ids`` by gradient descent on the mean NLL; return it and the losses.

    Full batch: every step uses all T - 1 pairs of ``ids`` (T,), so the run is deterministic (no sampling,
    logits start at 0). One step is the usual training iteration: forward (logits), loss, zero_grad,
    backward, step. ``optimizer``: "adam" (Adam, Kingma & Ba 2015) or "sgd" (plain gradient descent).
    ``losses[i]`` is the loss before update i. ``callback(step, loss)`` is called after each step.
    At the optimum the model's rows equal the relative frequencies (:meth:`BigramLM.from_counts`): the
    likelihood is concave in the logits of each row, so gradient descent finds the maximum; rows of unseen
    contexts get no gradient and stay uniform, as there.
    """
    x = _ids(ids, dims=(1,))
    V = _vocab(x, vocab_size)
    steps = check_int("steps", steps, 1)
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if x.numel() < 2:
        raise ValueError("ids needs at least 2 tokens (one (previous, next) pair)")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    model = BigramLM(V)
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(model.parameters(), lr=lr)
    inputs, targets = x[:-1].unsqueeze(0), x[1:].unsqueeze(0)  # (1, T-1) each
    losses = []
    for step in range(steps):
        logits = model(inputs).logits  # 1. forward
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))  # 2. loss: mean NLL in nats
        opt.zero_grad()  # 3. clear the gradients of the previous step
        loss.backward()  # 4. backward: d loss / d logits
        opt.step()  # 5. update the parameters
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    return model, losses


# ---------------------------------------------------------------------------------------------- teacher forcing
def _scoring(model: nn.Module, ids: Any) -> torch.Tensor:
    x = _ids(ids, dims=(1,))
    if x.numel() < 2:
        raise ValueError("ids needs at least 2 tokens: the first is context, the others are predicted")
    block = context_limit(model)
    if block is not None and x.numel() - 1 > block:
        raise ValueError(f"ids has {x.numel()} tokens; at most context_limit + 1 = {block + 1} fit in one pass")
    return x.to(model_device(model))


@torch.no_grad()
def position_losses(model: nn.Module, ids: Any) -> torch.Tensor:
    """NLL of every target, -log p(ids[t] | ids[:t]) for t = 1..T-1, from ONE forward pass: (T-1,).

    Teacher forcing: the model reads the true tokens ids[:-1] and its logits at every position are scored
    against the next true token, all at once; the causal mask keeps each position from seeing its
    target. The model is run in eval mode (no dropout) and put back in the mode it was in.
    """
    x = _scoring(model, ids)
    was_training = model.training
    model.eval()
    try:
        logits = model(x[None, :-1])[0][0]  # (T-1, V)
    finally:
        model.train(was_training)
    return F.cross_entropy(logits.float(), x[1:], reduction="none").cpu()


@torch.no_grad()
def prefix_losses(model: nn.Module, ids: Any) -> torch.Tensor:
    """The same (T-1,) NLLs as :func:`position_losses`, one forward pass per prefix ids[:t].

    T - 1 forward passes: the way text is *generated*, one token after another, and the slow way to score
    it. Only the last position's logits of each pass are used.
    """
    x = _scoring(model, ids)
    was_training = model.training
    model.eval()
    out = []
    try:
        for t in range(1, x.numel()):
            logits = model(x[None, :t])[0][0, -1]  # (V,): prediction of token t from tokens 0..t-1
            out.append(F.cross_entropy(logits.float()[None], x[t : t + 1]))
    finally:
        model.train(was_training)
    return torch.stack(out).cpu()


@torch.no_grad()
def future_token_effect(model: nn.Module, ids: Any, position: int, new_token: int | None = None) -> torch.Tensor:
    """How much the logits at each position change when the token at ``position`` is replaced: (T,).

    Entry t is max |logits_t(changed) - logits_t(original)|. With a causal mask, positions before
    ``position`` cannot see it, so their entries are exactly 0. ``new_token`` defaults to
    (ids[position] + 1) mod V.
    """
    x = _ids(ids, dims=(1,)).to(model_device(model))
    T = x.numel()
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < T:
        raise ValueError(f"position must be an int in [0, {T}), got {position!r}")
    V = getattr(model, "vocab_size", None)
    if new_token is None:
        if V is None:
            raise ValueError("give new_token: the model has no vocab_size attribute")
        new_token = (int(x[position]) + 1) % V
    y = x.clone()
    y[position] = new_token
    was_training = model.training
    model.eval()
    try:
        a, b = model(x[None])[0][0], model(y[None])[0][0]  # (T, V) each
    finally:
        model.train(was_training)
    return (a - b).abs().amax(dim=-1).cpu()


# ---------------------------------------------------------------------------------------------- model tour
def parameter_counts(model: GPT) -> dict[str, int]:
    """Parameters of a :class:`~lmlab.models.GPT` by part; the values add up to ``model.num_params(False)``.

    Parts: "token embedding" (wte, V x C), "position embedding" (wpe, block_size x C), "attention" and
    "MLP" (all blocks together), "layer norms" (every LayerNorm), "output head" (0 when tied to the
    token embedding, which is then counted once, as the token embedding).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be an lmlab GPT, got {type(model).__name__}")
    parts = {"token embedding": 0, "position embedding": 0, "attention": 0, "MLP": 0, "layer norms": 0,
             "output head": 0}  # fmt: skip
    for name, p in model.named_parameters():  # a shared (tied) tensor is listed once
        if name.startswith("transformer.wte"):
            key = "token embedding"
        elif name.startswith("transformer.wpe"):
            key = "position embedding"
        elif ".attn." in name:
            key = "attention"
        elif ".mlp." in name:
            key = "MLP"
        elif ".ln_" in name:
            key = "layer norms"
        elif name.startswith("lm_head"):
            key = "output head"
        else:  # pragma: no cover - every GPT parameter is one of the above
            raise AssertionError(f"unexpected parameter {name}")
        parts[key] += p.numel()
    return parts


@torch.no_grad()
def shape_trace(model: GPT, idx: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(module name, output shape) of each stage of a GPT forward pass on ``idx`` (B, T), in order.

    Stages: token embedding (B, T, C), position embedding (T, C), each block (B, T, C) with its attention
    and MLP sub-layers, the final LayerNorm (B, T, C) and the output head (B, T, V).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be an lmlab GPT, got {type(model).__name__}")
    names = ["transformer.wte", "transformer.wpe"]
    for i in range(model.config.n_layer):
        names += [f"transformer.h.{i}.attn", f"transformer.h.{i}.mlp", f"transformer.h.{i}"]
    names += ["transformer.ln_f", "lm_head"]
    modules = dict(model.named_modules())
    trace: list[tuple[str, tuple[int, ...]]] = []
    hooks = [
        modules[n].register_forward_hook(lambda m, args, out, n=n: trace.append((n, tuple(out.shape))))
        for n in names
    ]
    was_training = model.training
    model.eval()
    try:
        model(idx)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return trace


# ---------------------------------------------------------------------------------------------- known language
def attention_map(
    model: GPT, tokenizer: Any, text: str, *, layer: int = 0, head: int = 0
) -> tuple[list[str], np.ndarray]:
    """Where each position of ``text`` looks in one attention head: (token labels, weights (T, T)).

    ``weights[t, s]`` is the weight position t puts on position s (rows sum to 1, 0 above the diagonal:
    :meth:`lmlab.models.GPT.attention_weights`). Only the last ``context_limit`` tokens are read.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"attention_map needs an lmlab GPT, got {type(model).__name__}")
    n_layer, n_head = model.config.n_layer, model.config.n_head
    check_int("layer", layer, 0, n_layer - 1)
    check_int("head", head, 0, n_head - 1)
    ids = list(tokenizer.encode(text))[-model.context_limit :]
    if not ids:
        raise ValueError("text is empty after encoding; type at least one character the tokenizer knows")
    idx = torch.tensor([ids], dtype=torch.long, device=model_device(model))
    check_vocab(idx, model.vocab_size, "text")
    weights = model.attention_weights(idx)[layer, 0, head].float().cpu().numpy()  # (T, T)
    return [tokenizer.decode([i]) for i in ids], weights


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def conditional_entropies(source: MarkovSource, n: int) -> np.ndarray:
    """H(X_m | X_0..X_{m-1}) in nats for m = 0..n-1, exactly, for the stationary process of ``source``.

    H(X_m | X_<m) = H(X_0..X_m) - H(X_0..X_{m-1}) (chain rule of entropy, Cover & Thomas, Elements of
    Information Theory, 2nd ed., Thm 2.5.1). For m >= order it equals the entropy rate (Thm 4.2.4); for
    m < order the joint distribution of m + 1 consecutive tokens is a marginal of the stationary
    distribution, so the first tokens of a sequence are harder to predict.
    """
    if not isinstance(source, MarkovSource):
        raise TypeError(f"source must be a MarkovSource, got {type(source).__name__}")
    n = check_int("n", n, 1)
    V, k = source.vocab_size, source.order
    pi = source.stationary_distribution().reshape((V,) * k)  # joint of k consecutive tokens
    joint_h = [0.0]  # H(X_0..X_{m-1}) for m = 0..k
    for m in range(1, k + 1):
        joint_h.append(_entropy(pi.sum(axis=tuple(range(m, k))).ravel()))
    rate = source.entropy_rate()
    return np.array([joint_h[m + 1] - joint_h[m] if m < k else rate for m in range(n)])


def best_window_loss(source: MarkovSource, block_size: int) -> float:
    """The lowest mean loss (nats per token) any model can reach on windows of ``block_size`` tokens.

    A window x = tokens[i : i + T] is scored against y = tokens[i + 1 : i + T + 1], and the prediction of
    y[t] sees t + 1 tokens, so the best loss is mean_{t=0..T-1} H(X_{t+1} | X_0..X_t)
    (:func:`conditional_entropies`). For an order-1 source it is the entropy rate; for higher orders it
    is a little above it, because the first targets of a window have less context than the order.
    """
    T = check_int("block_size", block_size, 1)
    return float(conditional_entropies(source, T + 1)[1:].mean())


# ---------------------------------------------------------------------------------------------- runs
def lr_sweep(
    data: TokenData,
    lrs: Sequence[float],
    *,
    steps: int = 60,
    config: GPTConfig | None = None,
    batch_size: int = 8,
    seed: int = 0,
    **train_overrides: Any,
) -> dict[float, list[float]]:
    """Train a fresh GPT for ``steps`` steps at each learning rate; return {lr: train loss of every step}.

    Every run starts from the same initial weights (``torch.manual_seed(seed)`` before building the
    model) and sees the same batches (``TrainConfig.seed = seed``), so only the learning rate differs. The
    defaults make the rate the only thing that matters: no warmup, a constant rate (``min_lr = lr``), no
    gradient clipping. ``config`` defaults to the ``micro`` preset with block_size 32 and the data's
    vocabulary; ``train_overrides`` go to :class:`~lmlab.train.TrainConfig`. A non-finite loss ends a
    run early (the rest of its list is left out).
    """
    if isinstance(lrs, str | bytes) or not isinstance(lrs, Sequence) or len(lrs) == 0:
        raise ValueError("lrs must be a non-empty list of learning rates")
    for lr in lrs:
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ValueError(f"every learning rate must be a positive number, got {lr!r}")
    steps = check_int("steps", steps, 1)
    if config is None:
        config = GPTConfig.preset("micro", vocab_size=data.vocab_size, block_size=32)
    results: dict[float, list[float]] = {}
    for lr in lrs:
        torch.manual_seed(seed)
        model = GPT(config)
        losses: list[float] = []

        def record(trainer: Trainer, rec: dict[str, Any], losses: list[float] = losses) -> None:
            if rec["kind"] == "train":
                losses.append(rec["train_loss"])
                if not math.isfinite(rec["train_loss"]):
                    trainer.should_stop = True

        settings = dict(
            max_steps=steps, batch_size=batch_size, lr=float(lr), min_lr=float(lr), warmup_steps=0,
            grad_clip=None, eval_interval=10 * steps, eval_batches=1, progress=False, seed=seed, device="cpu",
        )  # fmt: skip
        settings.update(train_overrides)
        Trainer(model, data, callbacks=[record], **settings).fit()
        results[float(lr)] = losses
    return results


def diagnose_run(losses: Sequence[float], *, spike_factor: float = 1.5, min_drop: float = 0.05) -> str:
    """A one-word verdict on a training-loss curve, with the rule that gave it:

    - "diverged": some loss is inf or NaN;
    - "spiking": some later loss exceeds ``spike_factor`` times the first one;
    - "stalled": the mean of the last tenth fell by less than ``min_drop`` (relative) from the first loss;
    - "learning": otherwise.

    These are rules of thumb for short runs of the lesson, not a test of convergence.
    """
    x = [float(v) for v in losses]
    if len(x) < 2:
        raise ValueError("need at least 2 losses to judge a run")
    if not all(math.isfinite(v) for v in x):
        return "diverged"
    if max(x[1:]) > spike_factor * x[0]:
        return "spiking"
    tail = x[-max(1, len(x) // 10) :]
    if (x[0] - sum(tail) / len(tail)) / abs(x[0]) < min_drop:
        return "stalled"
    return "learning"


def pad_sequences(seqs: Sequence[Any], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack sequences of different lengths: ids (B, T_max) int64 padded with ``pad`` and a mask (B, T_max),
    True on real tokens. Use the mask so that padding is never scored."""
    if isinstance(seqs, str | bytes) or not isinstance(seqs, Sequence) or len(seqs) == 0:
        raise ValueError("seqs must be a non-empty list of token-id sequences")
    rows = [_ids(s, f"seqs[{i}]", dims=(1,)) for i, s in enumerate(seqs)]
    T = max(r.numel() for r in rows)
    if T == 0:
        raise ValueError("every sequence is empty")
    ids = torch.full((len(rows), T), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : r.numel()] = r
        mask[i, : r.numel()] = True
    return ids, mask
