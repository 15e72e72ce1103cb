"""What training maximises: reference implementations for lesson 01 ("The training objective").

Each function is one idea of the lesson, small enough to read in a minute:

- the probability of a text as a product of next-token probabilities, and why it is summed in log space
  (:func:`sequence_log_prob`, :func:`product_of_probs`);
- the model as a probability distribution over the next token, and comparing models on one context
  (:func:`next_token_probs`, :func:`top_next_tokens`, :func:`compare_next_tokens`);
- maximum likelihood for a bigram model, by counting (:func:`bigram_counts`, :func:`bigram_mle`) and by
  gradient descent on a table of logits (:class:`BigramLM`, :func:`train_bigram`);
- teacher forcing: every position's loss from one forward pass equals the loop over prefixes
  (:func:`position_losses`, :func:`prefix_losses`, :func:`future_token_effect`);
- a tour of the GPT being trained (:func:`parameter_counts`, :func:`shape_trace`);
- training on a language with a known distribution and the best loss a model can reach there
  (:func:`markov_token_data`, :func:`conditional_entropies`, :func:`best_window_loss`);
- short, seeded training runs for diagnosing a run (:func:`lr_sweep`, :func:`diagnose_run`) and padding
  sequences of different lengths for the dataset objective (:func:`pad_sequences`).

Cross-entropy from logits is :func:`lmlab.likelihood.nll` (also exported there as
``cross_entropy_from_logits``) and dialogue masks are :func:`lmlab.likelihood.dialogue_tokens`; this module
reuses them rather than repeating them.

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

from lmlab.data import TokenData
from lmlab.model import GPT, GPTConfig, LMOutput, lm_loss
from lmlab.synthetic import MarkovSource
from lmlab.train import Trainer

__all__ = [
    "sequence_log_prob",
    "product_of_probs",
    "next_token_probs",
    "top_next_tokens",
    "compare_next_tokens",
    "bigram_counts",
    "bigram_mle",
    "BigramLM",
    "train_bigram",
    "position_losses",
    "prefix_losses",
    "future_token_effect",
    "parameter_counts",
    "shape_trace",
    "markov_token_data",
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


def _as_ids(ids: Any, name: str = "ids", dims: tuple[int, ...] = (1, 2)) -> torch.Tensor:
    """An int64 CPU tensor of token ids from a list, an array or a tensor; 1-D or 2-D as ``dims`` allows."""
    if isinstance(ids, str | bytes):
        raise TypeError(f"{name} must be token ids, not a string; encode the text with a tokenizer first")
    if isinstance(ids, torch.Tensor):
        t = ids.detach().cpu()
    else:
        try:
            arr = np.asarray(ids)
            if arr.size == 0:
                arr = arr.astype(np.int64)  # [] would otherwise be float64
            t = torch.as_tensor(arr)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a tensor or a sequence of ints, got {type(ids).__name__}") from err
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {t.dtype}")
    if t.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(f'{d}-D' for d in dims)} shape, got {tuple(t.shape)}")
    return t.long()


def _check_vocab(ids: torch.Tensor, vocab_size: Any, name: str = "ids") -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int | np.integer) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"{name} has token id {bad}, outside the vocabulary [0, {vocab_size})")
    return int(vocab_size)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------- chain rule
def sequence_log_prob(probs: Any) -> float:
    """log p(x_1..x_T) = sum_t log p(x_t | x_<t), in nats, from the T conditional probabilities.

    The chain rule of probability writes the probability of a sequence as the product of each token's
    probability given the tokens before it (Jurafsky & Martin, Speech and Language Processing, 3rd ed.
    draft, ch. 3, "N-gram Language Models"); the logarithm turns that product into a sum, which does not
    underflow. ``probs`` is a 1-D list, array or tensor with every entry in (0, 1]; an empty one gives 0.0
    (the empty sequence is certain). The sum is exact to float64 rounding (``math.fsum``).
    """
    p = _as_float64(probs, "probs")
    bad = ~((p > 0) & (p <= 1))  # also catches NaN
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"probs[{i}] = {float(p[i])!r} is not a probability in (0, 1]; a token of the text cannot have "
            "probability 0 (its log would be -inf) or more than 1"
        )
    return math.fsum(torch.log(p).tolist())


def product_of_probs(probs: Any, dtype: torch.dtype = torch.float32) -> float:
    """The product of ``probs`` multiplied one by one in ``dtype``: what goes wrong without logs.

    In float32 the product of a few hundred typical next-token probabilities falls below the smallest
    positive number (about 1e-45) and becomes exactly 0.0; float64 lasts longer (about 1e-324) but fails
    too. Compare with :func:`sequence_log_prob`.
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

    ``context`` is a 1-D sequence of at least one token id; only its last ``model.block_size`` tokens are
    read (a GPT cannot see further back). The model is used in eval mode without gradients and put back.
    """
    ids = _as_ids(context, "context", dims=(1,))
    if ids.numel() == 0:
        raise ValueError("context is empty; give at least one token (the model predicts what follows it)")
    block = getattr(model, "block_size", None)
    if block is not None:
        ids = ids[-block:]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(ids.unsqueeze(0).to(_model_device(model)))
    finally:
        model.train(was_training)
    logits = out[0] if isinstance(out, tuple) else out
    return F.softmax(logits[0, -1].float(), dim=-1).cpu()


def top_next_tokens(model: nn.Module, tokenizer: Any, text: str, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``text`` as ``(token text, probability)``, most likely first.

    ``tokenizer`` has ``encode(str) -> list[int]`` and ``decode(list[int]) -> str`` (a CharTokenizer, or a
    :class:`~lmlab.synthetic.MarkovSource`, whose tokens are words). Ties keep the lower token id first.
    """
    k = _check_positive_int("k", k)
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
    k = _check_positive_int("k", k)
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
def bigram_counts(ids: Any, vocab_size: int) -> torch.Tensor:
    """counts (V, V) int64: ``counts[a, b]`` = number of positions t with ids[t] = a and ids[t + 1] = b.

    ``ids`` is one sequence (T,) or a batch of independent sequences (B, T); pairs never cross rows.
    """
    x = _as_ids(ids)
    V = _check_vocab(x, vocab_size)
    x = x if x.dim() == 2 else x.unsqueeze(0)
    pairs = x[:, :-1] * V + x[:, 1:]  # (B, T-1) index of each (previous, next) pair in the flat table
    return torch.bincount(pairs.reshape(-1), minlength=V * V).view(V, V)


def bigram_mle(ids: Any, vocab_size: int, *, smoothing: float = 0.0) -> torch.Tensor:
    """Maximum-likelihood bigram probabilities P (V, V) float64, ``P[a, b] = p(next = b | previous = a)``.

    ``P[a, b] = (count(a, b) + k) / (count(a) + k V)`` with add-k smoothing ``k = smoothing >= 0``
    (Jurafsky & Martin, SLP3 draft, ch. 3: the bigram MLE is the relative frequency, and add-k smoothing
    adds k to every count). With k = 0 this is the relative frequency, the maximiser of the likelihood of
    ``ids``. A context ``a`` that is never followed by anything has no data, so its row is uniform (1/V),
    which is also the k -> 0 limit of add-k smoothing. Every row sums to 1.
    """
    if isinstance(smoothing, bool) or not isinstance(smoothing, int | float) or not smoothing >= 0:
        raise ValueError(f"smoothing must be a number >= 0, got {smoothing!r}")
    if not math.isfinite(smoothing):
        raise ValueError(f"smoothing must be finite, got {smoothing!r}")
    counts = bigram_counts(ids, vocab_size).double() + smoothing
    V = counts.shape[0]
    totals = counts.sum(dim=1, keepdim=True)  # (V, 1)
    uniform = torch.full_like(counts, 1.0 / V)
    return torch.where(totals > 0, counts / totals.clamp_min(1e-300), uniform)


class BigramLM(nn.Module):
    """A bigram language model: one learned row of V logits per previous token, a (V, V) table.

    ``model(idx)`` maps (B, T) ids to ``LMOutput(logits (B, T, V), loss)``: the logits at position t are the
    row of token ``idx[:, t]`` and score the token at t + 1. It follows lmlab's model interface, so
    :func:`lmlab.likelihood.evaluate_text` and friends score it like a GPT. ``block_size`` is None (a
    bigram model reads only the previous token, whatever the length). The logits start at zero, which is
    the uniform distribution.
    """

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = _check_positive_int("vocab_size", vocab_size)
        self.block_size = None
        self.logits = nn.Parameter(torch.zeros(self.vocab_size, self.vocab_size))  # (V, V)

    @classmethod
    def from_probs(cls, probs: torch.Tensor) -> BigramLM:
        """A model whose next-token distributions are the rows of ``probs`` (V, V); logits = log probs.

        A probability of 0 becomes a logit of -inf: the model then calls that token impossible, and a text
        that contains it gets log-probability -inf (infinite loss). Use it for scoring, not for training.
        """
        if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or probs.shape[0] != probs.shape[1]:
            raise ValueError("probs must be a square (V, V) tensor of probabilities")
        if bool((probs < 0).any()) or not torch.allclose(probs.sum(1).double(), torch.ones(len(probs)).double()):
            raise ValueError("every row of probs must be a probability distribution (>= 0, summing to 1)")
        model = cls(probs.shape[0])
        with torch.no_grad():
            model.logits.copy_(torch.log(probs.double()).float())  # log 0 = -inf: impossible
        return model

    def probs(self) -> torch.Tensor:
        """The model's bigram table softmax(logits) (V, V), without gradients."""
        return F.softmax(self.logits.detach(), dim=-1)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        loss_mask: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> LMOutput:
        """idx (B, T) -> LMOutput(logits (B, T, V), cross-entropy loss against targets (B, T) if given)."""
        idx = _as_ids(idx, "idx", dims=(2,)).to(self.logits.device)
        _check_vocab(idx, self.vocab_size, "idx")
        logits = self.logits[idx]  # (B, T, V): row of the previous token
        loss = None if targets is None else lm_loss(logits, targets, loss_mask=loss_mask, reduction=reduction)
        return LMOutput(logits, loss)


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
    At the optimum the model's rows equal :func:`bigram_mle` (the likelihood is concave in the logits
    of each row, so gradient descent finds the maximum; rows of unseen contexts get no gradient and
    stay uniform, as in :func:`bigram_mle`).
    """
    x = _as_ids(ids, dims=(1,))
    V = _check_vocab(x, vocab_size)
    steps = _check_positive_int("steps", steps)
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
    x = _as_ids(ids, dims=(1,))
    if x.numel() < 2:
        raise ValueError("ids needs at least 2 tokens: the first is context, the others are predicted")
    block = getattr(model, "block_size", None)
    if block is not None and x.numel() - 1 > block:
        raise ValueError(f"ids has {x.numel()} tokens; at most block_size + 1 = {block + 1} fit in one pass")
    return x.to(_model_device(model))


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
    x = _as_ids(ids, dims=(1,)).to(_model_device(model))
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
    """Parameters of a :class:`~lmlab.model.GPT` by part; the values add up to ``model.num_params(False)``.

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
def markov_token_data(source: MarkovSource, n_train: int, n_val: int, *, seed: int = 0) -> TokenData:
    """Train and val splits sampled from ``source``: two independent stretches of its stationary process.

    ``seed`` fixes both (train from ``seed``, val from ``seed + 1``). The tokens are the source's word ids,
    so ``TokenData.vocab_size`` is ``source.vocab_size`` and there is no character count.
    """
    if not isinstance(source, MarkovSource):
        raise TypeError(f"source must be a MarkovSource, got {type(source).__name__}")
    n_train, n_val = _check_positive_int("n_train", n_train), _check_positive_int("n_val", n_val)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    train = source.sample(n_train, generator=seed)
    val = source.sample(n_val, generator=seed + 1)
    return TokenData(train, val, source.vocab_size)


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
    n = _check_positive_int("n", n)
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
    T = _check_positive_int("block_size", block_size)
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
    steps = _check_positive_int("steps", steps)
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
    rows = [_as_ids(s, f"seqs[{i}]", dims=(1,)) for i, s in enumerate(seqs)]
    T = max(r.numel() for r in rows)
    if T == 0:
        raise ValueError("every sequence is empty")
    ids = torch.full((len(rows), T), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : r.numel()] = r
        mask[i, : r.numel()] = True
    return ids, mask
