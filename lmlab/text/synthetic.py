"""Synthetic languages whose truth is known exactly: a word-level Markov chain and associative recall.

:class:`MarkovSource` is a stationary Markov chain of order ``k`` over ``V`` readable word tokens. Every
quantity a language model tries to estimate is available exactly: the entropy rate (the best achievable
loss, in nats per token), the probability of any sequence, each next-token distribution, and the most
likely continuation of a prefix. ``source.as_model()`` wraps those exact probabilities in lmlab's
language-model interface, so likelihood code can be checked against ground truth and a GPT trained on
``source.sample(...)`` can be compared with the best possible loss ``source.entropy_rate()``.

Conventions used throughout:

- A *context* is the tuple of the previous ``m`` tokens (``m <= k``), stored as the integer
  ``sum_i a_i * V**(m-1-i)`` (oldest token most significant), so ``P[ctx]`` is a row of the table.
- The process is *stationary*: the first ``k`` tokens are drawn from the stationary distribution ``pi`` of
  the chain on contexts, so the marginal of any ``m`` consecutive tokens is the same wherever they start.
  The first ``m < k`` tokens are predicted by the conditionals of that stationary marginal.
- Probabilities are float64 NumPy arrays; sampled tokens are int64 torch tensors.

:class:`AssociativeRecall` is multi-query associative recall (MQAR, Arora et al. 2023, "Zoology"), a test of
long-range memory: a sequence lists key-value pairs, then asks for the values of some keys again.
``task.sample(n, generator=seed)`` gives ``(inputs, targets)`` scored at the answers only; the answer to
every query is known, so :func:`recall_accuracy` is exact, ``task.as_model()`` is a perfect predictor
(:class:`RecallOracle`), and :class:`RecallData` lets :class:`lmlab.train.Trainer` train a model on fresh
sequences at every step. ``min_distance`` sets how far back each answer lies, which decides what a
sliding-window attention can see; ``num_pairs`` sets how much a fixed-size state must hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn

from lmlab.checks import as_generator, as_ids, check_count, check_int, check_vocab, model_device
from lmlab.lm import IGNORE_INDEX, LMOutput, context_limit, eval_mode, lm_loss
from lmlab.text.data import TokenData
from lmlab.text.tasks import SampledTaskData

__all__ = [
    "MarkovSource",
    "MarkovLM",
    "markov_token_data",
    "syllable_words",
    "MAX_TABLE_ENTRIES",
    "AssociativeRecall",
    "RecallBatch",
    "RecallOracle",
    "RecallData",
    "RecallByDistance",
    "RECALL_FILLER",
    "recall_accuracy",
    "recall_accuracy_by_distance",
    "recall_sources",
]

MAX_TABLE_ENTRIES = 2**22  # V**(order+1) transition probabilities at most: 32 MiB of float64
UNITS = ("nats", "bits")
_DENSE_STATES = 2048  # up to this many contexts pi comes from a dense linear solve, above by power iteration
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def syllable_words(n: int) -> list[str]:
    """``n`` distinct pronounceable words of consonant-vowel syllables: "ba", "be", ..., "zu", "baba", ...

    Word ``i`` writes ``i`` in bijective base 70 with the 70 syllables as digits, so the list is the same
    on every machine and every prefix of it is the shorter list.
    """
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    base = len(syllables)
    words = []
    for i in range(n):
        parts = []
        j = i + 1  # bijective numeration: 1..70 are one syllable, 71..70+70**2 two, ...
        while j > 0:
            j, r = divmod(j - 1, base)
            parts.append(syllables[r])
        words.append("".join(reversed(parts)))
    return words


class MarkovSource:
    """A stationary, ergodic order-``order`` Markov chain over ``vocab_size`` word tokens.

    Each context's next-token distribution is ``(1 - epsilon) * Dirichlet(concentration) + epsilon / V``,
    drawn from NumPy's PCG64 generator seeded with ``seed``: the same arguments give the same language on
    every machine. A small ``concentration`` (< 1) makes distributions peaked; ``support`` (optional) puts
    the Dirichlet mass on only ``support`` random tokens per context (a sparse language). The uniform part
    ``epsilon > 0`` makes every transition possible, so the chain is irreducible and aperiodic and its
    stationary distribution is unique (Cover & Thomas, Elements of Information Theory, 2nd ed., sec. 4.1).

    Args:
        vocab_size: number of tokens V >= 2 (ids 0..V-1).
        order: k >= 1 previous tokens that condition the next one; V**(k+1) <= ``MAX_TABLE_ENTRIES``.
        seed: integer >= 0 that fixes the transition probabilities.
        concentration: Dirichlet parameter alpha > 0 of every component.
        epsilon: weight in (0, 1] of the uniform distribution mixed into every row (1 gives i.i.d. uniform).
        support: None (all V tokens) or 1..V tokens per context that receive the Dirichlet mass.
        words: the V word strings (default :func:`syllable_words`); distinct, non-empty, no whitespace.
    """

    def __init__(
        self,
        vocab_size: int,
        order: int,
        seed: int,
        *,
        concentration: float = 0.3,
        epsilon: float = 0.01,
        support: int | None = None,
        words: Sequence[str] | None = None,
    ) -> None:
        V = check_int("vocab_size", vocab_size, 2)
        k = check_int("order", order, 1)
        seed = check_int("seed", seed, 0)
        if V ** (k + 1) > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"vocab_size**(order+1) = {V}**{k + 1} transition probabilities is more than the limit "
                f"{MAX_TABLE_ENTRIES} (2**22); use a smaller vocabulary or order"
            )
        if not (
            isinstance(concentration, int | float) and math.isfinite(concentration) and concentration > 0
        ):
            raise ValueError(f"concentration must be a finite number > 0, got {concentration!r}")
        if not (isinstance(epsilon, int | float) and 0 < epsilon <= 1):
            raise ValueError(f"epsilon must be in (0, 1] so that the chain is ergodic, got {epsilon!r}")
        if support is not None:
            support = check_int("support", support, 1)
            if support > V:
                raise ValueError(f"support must be at most vocab_size {V}, got {support}")
        words = syllable_words(V) if words is None else list(words)
        if len(words) != V:
            raise ValueError(f"words has {len(words)} entries but vocab_size is {V}")
        for w in words:
            if not isinstance(w, str) or not w or any(ch.isspace() for ch in w):
                raise ValueError(f"every word must be a non-empty string without whitespace, got {w!r}")
        if len(set(words)) != V:
            raise ValueError("words must be distinct")

        self._V, self._k, self._seed = V, k, seed
        self._concentration, self._epsilon, self._support = float(concentration), float(epsilon), support
        self._words = tuple(words)
        self._word_to_id = {w: i for i, w in enumerate(words)}
        self._n_ctx = V**k

        # Transition table P (V**k, V). Dirichlet draws as normalised Gamma(alpha) variables, sampled in log
        # space with Gamma(a) = Gamma(a + 1) * U**(1/a) (Marsaglia & Tsang 2000, sec. 6) so that tiny
        # alphas cannot underflow to an all-zero row.
        rng = np.random.Generator(np.random.PCG64(seed))
        shape = (self._n_ctx, V)
        alpha = self._concentration
        log_g = np.log(rng.standard_gamma(alpha + 1.0, size=shape)) + np.log1p(-rng.random(shape)) / alpha
        if support is not None and support < V:
            ranks = np.argsort(rng.random(shape), axis=1)
            log_g[np.arange(self._n_ctx)[:, None], ranks[:, support:]] = -np.inf
        dirichlet = np.exp(log_g - log_g.max(axis=1, keepdims=True))
        dirichlet /= dirichlet.sum(axis=1, keepdims=True)
        self._P = (1.0 - self._epsilon) * dirichlet + self._epsilon / V
        self._P /= self._P.sum(axis=1, keepdims=True)

        self._pi = self._stationary()
        # cond[m] (V**m, V): p(next | previous m tokens) for m = 0..k; m < k from the stationary marginals
        self._cond: list[np.ndarray] = []
        for m in range(k):
            joint = self._pi.reshape(V ** (m + 1), V ** (k - m - 1)).sum(axis=1).reshape(V**m, V)
            self._cond.append(joint / joint.sum(axis=1, keepdims=True))
        self._cond.append(self._P)
        self._logcond = [np.log(c) for c in self._cond]
        for a in (*self._cond, *self._logcond, self._pi):
            a.flags.writeable = False

    # ------------------------------------------------------------------ description
    vocab_size = property(lambda self: self._V, doc="Number of tokens V.")
    order = property(lambda self: self._k, doc="Number k of previous tokens each prediction depends on.")
    seed = property(lambda self: self._seed, doc="Seed of the transition probabilities.")
    concentration = property(lambda self: self._concentration, doc="Dirichlet parameter alpha.")
    epsilon = property(lambda self: self._epsilon, doc="Weight of the uniform distribution in every row.")
    support = property(lambda self: self._support, doc="Tokens with Dirichlet mass per context (None: all).")

    @property
    def words(self) -> list[str]:
        """The word of each token id (a copy)."""
        return list(self._words)

    def __repr__(self) -> str:
        return (
            f"MarkovSource(vocab_size={self._V}, order={self._k}, seed={self._seed}, "
            f"concentration={self._concentration}, epsilon={self._epsilon}, support={self._support})"
        )

    # ------------------------------------------------------------------ exact probabilities
    def _stationary(self) -> np.ndarray:
        """Stationary distribution pi (V**k,) of the chain on contexts, float64, to machine precision.

        The context s = (a_1..a_k) moves to (a_2..a_k, x) with probability P[s, x]; pi solves pi Q = pi,
        sum(pi) = 1. Small chains: one dense linear solve. Large ones: power iteration (each step costs
        V**(k+1)) until the L1 change is below 1e-15.
        """
        n, V = self._n_ctx, self._V
        nxt = (np.arange(n)[:, None] * V + np.arange(V)) % n  # (n, V) next context
        if n <= _DENSE_STATES:
            Q = np.zeros((n, n))
            Q[np.repeat(np.arange(n), V), nxt.ravel()] = self._P.ravel()
            A = Q.T - np.eye(n)
            A[-1, :] = 1.0  # replace one (redundant) balance equation by the normalisation sum(pi) = 1
            b = np.zeros(n)
            b[-1] = 1.0
            pi = np.linalg.solve(A, b)
        else:
            P3 = self._P.reshape(V, n // V, V)  # [oldest token a, rest r, next x]
            pi = np.full(n, 1.0 / n)
            for _ in range(100_000):
                new = np.einsum("ar,arx->rx", pi.reshape(V, n // V), P3).reshape(n)
                done = np.abs(new - pi).sum() < 1e-15
                pi = new
                if done:
                    break
            else:  # pragma: no cover - epsilon > 0 guarantees geometric convergence
                raise RuntimeError("power iteration for the stationary distribution did not converge")
        pi = np.clip(pi, 0.0, None)
        return pi / pi.sum()

    def stationary_distribution(self) -> np.ndarray:
        """pi (V**order,): stationary probability of each context of ``order`` tokens (a float64 copy)."""
        return self._pi.copy()

    def transition_matrix(self) -> np.ndarray:
        """P (V**order, V): ``P[ctx, x] = p(x | context ctx)``, each row summing to 1 (a float64 copy)."""
        return self._P.copy()

    def entropy_rate(self, unit: str = "nats") -> float:
        """Exact entropy rate H = -sum_s pi(s) sum_x P(x|s) log P(x|s), in ``unit`` per token.

        For a stationary Markov chain this is the limit of H(X_n | X_1..X_{n-1}) and of H(X_1..X_n) / n
        (Cover & Thomas, Elements of Information Theory, 2nd ed., Thm 4.2.4): the lowest cross-entropy any
        model can reach on this language. ``unit``: "nats" or "bits" (bits = nats / ln 2).
        """
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        h = float(-(self._pi * (self._P * self._logcond[-1]).sum(axis=1)).sum())
        return h / math.log(2) if unit == "bits" else h

    def _as_ids(self, tokens: object, name: str = "tokens", dims: tuple[int, ...] = (1,)) -> np.ndarray:
        if isinstance(tokens, str):
            raise TypeError(f"{name} must be token ids; use encode() to turn text into ids")
        if isinstance(tokens, torch.Tensor):
            if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
                raise TypeError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
            arr = tokens.detach().cpu().numpy().astype(np.int64)
        else:
            arr = np.asarray(tokens)
            if arr.size == 0:
                arr = arr.astype(np.int64)
            if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
            arr = arr.astype(np.int64)
        if arr.ndim not in dims:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, dims))} dimension(s), got shape {arr.shape}"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= self._V):
            bad = arr.min() if arr.min() < 0 else arr.max()
            raise ValueError(f"{name} has token id {bad}, outside the vocabulary [0, {self._V})")
        return arr

    def _context_index(self, ids: np.ndarray) -> np.ndarray:
        """Context index of the last axis of ``ids`` (..., m): oldest token most significant."""
        m = ids.shape[-1]
        return (
            ids @ (self._V ** np.arange(m - 1, -1, -1, dtype=np.int64))
            if m
            else np.zeros(ids.shape[:-1], int)
        )

    def next_token_probs(self, context: Sequence[int] | torch.Tensor) -> np.ndarray:
        """p(next | context) (V,) float64. Only the last ``order`` tokens matter; a shorter (or empty)
        context uses the conditional of the stationary marginal."""
        ids = self._as_ids(context, "context")
        ids = ids[len(ids) - min(len(ids), self._k) :]
        return self._cond[len(ids)][int(self._context_index(ids))].copy()

    def _logprob_table(self, x: np.ndarray) -> np.ndarray:
        """(B, T) int ids -> (B, T) float64, entry t = log p(x_t | x_<t) (entry 0: marginal of x_0)."""
        B, T = x.shape
        k = self._k
        out = np.empty((B, T))
        for t in range(min(T, k)):  # short contexts: conditionals of the stationary marginal
            out[:, t] = self._logcond[t][self._context_index(x[:, :t]), x[:, t]]
        if T > k:  # full contexts: the windows x[t-k:t] predict x[t]
            windows = np.lib.stride_tricks.sliding_window_view(x, k, axis=1)[:, : T - k]  # (B, T-k, k)
            out[:, k:] = self._logcond[k][self._context_index(windows), x[:, k:]]
        return out

    def token_logprobs(
        self, tokens: Sequence[int] | torch.Tensor, *, include_first: bool = False
    ) -> np.ndarray:
        """Natural-log conditional probabilities log p(x_t | x_<t) of ``tokens`` (T,) or (B, T).

        Returns (T-1,) (or (B, T-1)) for t = 1..T-1, the positions a language model scores; with
        ``include_first=True``, (T,) whose entry 0 is log p(x_0) under the stationary marginal.
        """
        x = self._as_ids(tokens, dims=(1, 2))
        out = self._logprob_table(x if x.ndim == 2 else x[None])
        out = out if include_first else out[:, 1:]
        return out if x.ndim == 2 else out[0]

    def sequence_logprob(self, tokens: Sequence[int] | torch.Tensor) -> float | np.ndarray:
        """Exact log p(x_1..x_T) (natural log) under the stationary process; (B,) array for (B, T) input.

        The first ``order`` tokens come from the stationary marginal (for T < order, the marginal of
        length T), the rest from the transition table. The empty sequence has log-probability 0.
        """
        lp = self.token_logprobs(tokens, include_first=True).sum(axis=-1)
        return float(lp) if np.ndim(lp) == 0 else lp

    def most_likely_continuation(
        self, prefix: Sequence[int] | torch.Tensor, n: int
    ) -> tuple[list[int], float]:
        """The n tokens c maximising log p(c | prefix), and that log-probability, exactly.

        Dynamic programming over contexts (Viterbi 1967; here a backward pass computes beta_j(s), the best
        log-probability of tokens j..n-1 from context s, then a forward pass picks tokens). Cost
        O(n * V**(order+1)) time and O(n * V**order) memory. An empty prefix starts from the stationary
        distribution. Ties (equal floating-point values) go to the lowest token id at the first position
        where optimal continuations differ, i.e. the lexicographically smallest one.
        """
        n = check_int("n", n, 0)
        pre = self._as_ids(prefix, "prefix")
        V, k, L = self._V, self._k, len(pre)
        ctx_len = [min(L + j, k) for j in range(n + 1)]  # context length used for continuation token j
        betas = [np.zeros(V ** ctx_len[n])]
        for j in range(n - 1, -1, -1):
            m = ctx_len[j]
            nxt = (np.arange(V**m)[:, None] * V + np.arange(V)) % V ** ctx_len[j + 1]
            betas.append((self._logcond[m] + betas[-1][nxt]).max(axis=1))
        betas.reverse()  # betas[j]: over contexts of length ctx_len[j]
        ctx = int(self._context_index(pre[L - ctx_len[0] :]))
        tokens, logprob = [], 0.0
        for j in range(n):
            m = ctx_len[j]
            nxt = (ctx * V + np.arange(V)) % V ** ctx_len[j + 1]
            x = int(np.argmax(self._logcond[m][ctx] + betas[j + 1][nxt]))  # argmax: first (lowest) id
            tokens.append(x)
            logprob += float(self._logcond[m][ctx, x])
            ctx = int(nxt[x])
        return tokens, logprob

    # ------------------------------------------------------------------ sampling and words
    def sample(
        self, n_tokens: int, generator: torch.Generator | int | None = None, batch_size: int | None = None
    ) -> torch.Tensor:
        """Draw ``n_tokens`` tokens of the stationary process: int64 (n_tokens,), or (batch_size, n_tokens)
        of independent sequences.

        ``generator``: a torch.Generator, an int seed, or None for torch's global generator; the same seed
        gives the same tokens. Sampling is by inverse CDF on float64 uniforms from ``torch.rand``.
        """
        n = check_int("n_tokens", n_tokens, 0)
        B = 1 if batch_size is None else check_int("batch_size", batch_size, 1)
        g = as_generator(generator)
        device = g.device if g is not None else torch.device("cpu")
        u = torch.rand((B, n), generator=g, dtype=torch.float64, device=device).cpu().numpy()
        cdfs = [np.cumsum(c, axis=1) for c in self._cond]
        for c in cdfs:
            c[:, -1] = 1.0  # u < 1 then always lands on a token
        out = np.empty((B, n), dtype=np.int64)
        V, k = self._V, self._k
        if B == 1:  # scalar loop: several times faster than the vectorised one for a single sequence
            ctx, row, u0 = 0, out[0], u[0]
            for t in range(n):
                m = min(t, k)
                x = int(np.searchsorted(cdfs[m][ctx], u0[t], side="right"))  # smallest x with u < cdf[x]
                row[t] = x
                ctx = (ctx * V + x) % V ** min(m + 1, k)
        else:
            ctx = np.zeros(B, dtype=np.int64)
            for t in range(n):
                m = min(t, k)
                x = (cdfs[m][ctx] <= u[:, t, None]).sum(axis=1)  # the same rule, for every row at once
                out[:, t] = x
                ctx = (ctx * V + x) % V ** min(m + 1, k)
        tokens = torch.from_numpy(out)
        return tokens[0] if batch_size is None else tokens

    def encode(self, text: str | Sequence[str]) -> list[int]:
        """Token ids of ``text`` (words separated by whitespace) or of a list of words."""
        words = text.split() if isinstance(text, str) else list(text)
        ids = []
        for w in words:
            if w not in self._word_to_id:
                raise ValueError(
                    f"unknown word {w!r}; the vocabulary is {self._words[:5]}... ({self._V} words)"
                )
            ids.append(self._word_to_id[w])
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The words of ``ids`` (1-D) joined by single spaces."""
        return " ".join(self._words[i] for i in self._as_ids(ids, "ids").tolist())

    def text(
        self, n_tokens: int, generator: torch.Generator | int | None = None, words_per_line: int = 12
    ) -> str:
        """``n_tokens`` sampled words as text: spaces between words, a newline every ``words_per_line``."""
        per_line = check_int("words_per_line", words_per_line, 1)
        ids = self.sample(n_tokens, generator).tolist()
        lines = [self.decode(ids[i : i + per_line]) for i in range(0, len(ids), per_line)]
        return "\n".join(lines)

    def as_model(self, dtype: torch.dtype = torch.float64) -> MarkovLM:
        """This source as an ``nn.Module`` in lmlab's language-model interface, exact log-probs as logits."""
        return MarkovLM(self, dtype=dtype)


class MarkovLM(nn.Module):
    """The exact model of a :class:`MarkovSource`: ``model(idx)`` gives ``LMOutput(logits, loss)``.

    ``logits[:, t] = log p(x_{t+1} | x_0..x_t)`` exactly (already normalised, so log_softmax leaves them
    unchanged); for t < order - 1 the conditional of the stationary marginal of the first t + 1 tokens.
    ``context_limit`` is None: any length can be read. The tables are buffers, so ``.to(device)`` works.
    """

    context_limit = None  # any length

    def __init__(self, source: MarkovSource, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if not isinstance(source, MarkovSource):
            raise TypeError(f"MarkovLM needs a MarkovSource, got {type(source).__name__}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
        self.source = source
        self.vocab_size = source.vocab_size
        self.order = source.order
        for m, table in enumerate(source._logcond):
            self.register_buffer(f"log_cond_{m}", torch.tensor(np.asarray(table), dtype=dtype))

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        loss_mask: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> LMOutput:
        """idx (B, T) int ids -> LMOutput(logits (B, T, V) of exact log-probs, loss as in ``lm_loss``)."""
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got shape {tuple(idx.shape)}")
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.numel() == 0:
            raise ValueError(f"idx is empty (shape {tuple(idx.shape)}); give at least one token")
        V, k = self.vocab_size, self.order
        if int(idx.min()) < 0 or int(idx.max()) >= V:
            raise ValueError(f"idx has token ids outside the vocabulary [0, {V})")
        idx = idx.long()
        B, T = idx.shape
        tables = [getattr(self, f"log_cond_{m}") for m in range(k + 1)]
        logits = torch.empty(B, T, V, dtype=tables[0].dtype, device=idx.device)
        for t in range(min(T, k - 1)):  # logits[:, t] reads a context of t + 1 < k tokens
            logits[:, t] = tables[t + 1][self._index(idx[:, : t + 1])]
        if T >= k:
            logits[:, k - 1 :] = tables[k][self._index(idx.unfold(1, k, 1))]  # windows (B, T-k+1, k)
        loss = None
        if targets is not None:
            loss = lm_loss(logits, targets, loss_mask=loss_mask, reduction=reduction)
        return LMOutput(logits, loss)

    def _index(self, ids: torch.Tensor) -> torch.Tensor:
        m = ids.shape[-1]
        powers = self.vocab_size ** torch.arange(m - 1, -1, -1, device=ids.device, dtype=torch.long)
        return (ids * powers).sum(-1)


def markov_token_data(source: MarkovSource, n_train: int, n_val: int, *, seed: int = 0) -> TokenData:
    """Train and val splits sampled from ``source``: two independent stretches of its stationary process.

    ``seed`` fixes both (train from ``seed``, val from ``seed + 1``). The tokens are the source's word ids,
    so ``TokenData.vocab_size`` is ``source.vocab_size`` and there is no character count.
    """
    if not isinstance(source, MarkovSource):
        raise TypeError(f"source must be a MarkovSource, got {type(source).__name__}")
    n_train, n_val = check_int("n_train", n_train, 1), check_int("n_val", n_val, 1)
    seed = check_int("seed", seed, 0)
    train = source.sample(n_train, generator=seed)
    val = source.sample(n_val, generator=seed + 1)
    return TokenData(train, val, source.vocab_size)


# ============================================================================================== recall
# Multi-query associative recall (MQAR): the task defined by Arora et al. 2023, "Zoology: Measuring and
# Improving Recall in Efficient Language Models" (sec. 3). A sequence lists key-value pairs, then asks for
# the value of some of the keys again. Written here in lmlab's own layout and conventions.

RECALL_FILLER = 0  # token id of the filler between the pairs and the queries, and of the padding at the end
_MAX_COMPARE = 2**24  # booleans per chunk when positions are compared all against all (16 MiB)


class RecallBatch(NamedTuple):
    """Sequences of an :class:`AssociativeRecall` task and what is asked in them (n sequences, L = seq_len,
    Q = num_queries). ``inputs, targets = batch[:2]`` gives what a model trains on."""

    inputs: torch.Tensor  # (n, L) int64 token ids
    targets: torch.Tensor  # (n, L) int64: the answer at each query key's position, IGNORE_INDEX elsewhere
    positions: torch.Tensor  # (Q,) int64: input positions of the query keys (the scored positions), ascending
    answers: torch.Tensor  # (n, Q) int64: the value asked for at each of those positions
    distances: torch.Tensor  # (n, Q) int64: query key position minus the position of its pair's value


@dataclass(frozen=True, kw_only=True)
class AssociativeRecall:
    """Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology", sec. 3): recall the value of a key.

    Token ids: ``0`` is the filler :data:`RECALL_FILLER`; keys are ``1 .. num_keys`` and values are
    ``num_keys + 1 .. vocab_size - 1`` (two disjoint ranges, see :attr:`key_ids` and :attr:`value_ids`).
    One sequence of ``seq_len`` tokens (P = num_pairs, Q = num_queries, G = min_distance - 1)::

        k_1 v_1 k_2 v_2 ... k_P v_P | G fillers | q_1 . q_2 . ... q_Q . | fillers up to seq_len

    The P keys are distinct, drawn uniformly without replacement; each value is drawn uniformly and
    independently (values may repeat). The queries ``q_j`` are Q distinct keys of the pairs in random
    order, each followed by a filler, or with ``show_answers=True`` by its answer ``a_j`` (the layout of
    Zoology's MQAR). Hiding the answers closes a shortcut: when they are shown, a model that remembers only
    *which* values occurred answers later queries by elimination (with distinct values, the last query's
    answer is the one value not yet named), which scores (1 + 1/2 + ... + 1/P) / P with no recall at all:
    0.75 at P = 2, 0.52 at P = 4. With hidden answers that strategy scores 1/P. Targets follow lmlab's
    next-token convention (``logits[:, t]`` predicts token ``t + 1``): ``targets[:, t]`` is ``a_j`` where
    ``t`` is the position of ``q_j`` and IGNORE_INDEX (-100) elsewhere, so only the answers are scored.

    The *distance* of a query is the position of its key minus the position of the value paired with it:
    ``2(P - i) + G + 2j - 1`` for pair i and query j (0-based), so every distance is at least
    ``min_distance`` (reached when the last pair is asked first) and at most :attr:`max_distance`. A sliding
    window of ``w`` positions (each query sees itself and the ``w - 1`` before it) holds the value exactly
    when the distance is below ``w``: with ``min_distance >= w`` no value lies in the last layer's window.
    (Stacked layers see further: ``n_layer * (w - 1)`` positions back, through the positions between.)

    Args (keyword only):
        vocab_size: all token ids, filler included; at least 4 (a filler, one key, two values).
        num_pairs: P >= 1 key-value pairs per sequence.
        num_queries: Q in [1, P] keys asked for; None means P (every pair is asked once).
        min_distance: smallest distance >= 1 between a pair's value and its query (1: the queries follow
            the pairs directly).
        seq_len: L, tokens per sequence, at least :attr:`min_seq_len` = 2P + G + 2Q; None means that minimum.
        num_keys: size of the key range, in [P, vocab_size - 3]; None means (vocab_size - 1) // 2.
        show_answers: put each query's answer after it in the input (False: a filler; see above).

    The None defaults are resolved when the task is built, so ``dataclasses.replace(task, min_distance=8)``
    keeps ``seq_len`` (one model block size for a sweep over distances) and says so if it no longer fits.
    """

    vocab_size: int  # all ids: filler 0, then keys, then values
    num_pairs: int  # P key-value pairs per sequence
    num_queries: int | None = None  # Q keys asked for; None: P
    min_distance: int = 1  # every query is at least this many positions after its pair's value
    seq_len: int | None = None  # L tokens per sequence; None: the minimum 2P + (min_distance - 1) + 2Q
    num_keys: int | None = None  # ids 1..num_keys are keys, the rest values; None: (vocab_size - 1) // 2
    show_answers: bool = False  # the answer after each query in the input (else a filler: no elimination)

    def __post_init__(self) -> None:
        if not isinstance(self.show_answers, bool):
            raise TypeError(f"show_answers must be True or False, got {self.show_answers!r}")
        V = check_count("vocab_size", self.vocab_size, 4)
        P = check_count("num_pairs", self.num_pairs, 1)
        K = (V - 1) // 2 if self.num_keys is None else check_count("num_keys", self.num_keys, 1)
        if K < P:
            raise ValueError(
                f"num_keys is {K} but num_pairs is {P}: the keys of a sequence are distinct, so there must be at "
                f"least num_pairs keys; use num_keys >= {P}" + ("" if self.num_keys is not None else
                f" (the default is (vocab_size - 1) // 2; vocab_size >= {2 * P + 1} gives enough)")
            )  # fmt: skip
        if V - 1 - K < 2:
            raise ValueError(
                f"vocab_size {V} with num_keys {K} leaves {V - 1 - K} value id(s); at least 2 are needed "
                f"(id 0 is the filler), so use vocab_size >= {K + 3} or num_keys <= {V - 3}"
            )
        Q = P if self.num_queries is None else check_count("num_queries", self.num_queries, 1)
        if Q > P:
            raise ValueError(f"num_queries must be in [1, num_pairs] = [1, {P}] (each key is asked once), got {Q}")
        D = check_count("min_distance", self.min_distance, 1)
        need = 2 * P + (D - 1) + 2 * Q
        L = need if self.seq_len is None else check_count("seq_len", self.seq_len, 1)
        if L < need:
            raise ValueError(
                f"seq_len {L} is too short: {P} pairs ({2 * P} tokens) + {D - 1} fillers (min_distance {D} - 1) "
                f"+ {Q} queries with answers ({2 * Q} tokens) need seq_len >= {need}"
            )
        for name, value in (("vocab_size", V), ("num_pairs", P), ("num_queries", Q), ("min_distance", D),
                            ("seq_len", L), ("num_keys", K)):  # fmt: skip
            object.__setattr__(self, name, value)  # frozen: normalise the defaults once, here

    # ------------------------------------------------------------------ layout
    @property
    def key_ids(self) -> range:
        """The key ids, ``1 .. num_keys``."""
        return range(1, 1 + self.num_keys)

    @property
    def value_ids(self) -> range:
        """The value ids, ``num_keys + 1 .. vocab_size - 1``."""
        return range(1 + self.num_keys, self.vocab_size)

    @property
    def num_values(self) -> int:
        """Number of value ids."""
        return self.vocab_size - 1 - self.num_keys

    @property
    def gap(self) -> int:
        """Fillers between the last pair and the first query: ``min_distance - 1``."""
        return self.min_distance - 1

    @property
    def min_seq_len(self) -> int:
        """Shortest sequence that holds the pairs, the gap and the queries: ``2P + gap + 2Q``."""
        return 2 * self.num_pairs + self.gap + 2 * self.num_queries

    @property
    def max_distance(self) -> int:
        """Largest possible distance: the first pair asked last, ``min_distance + 2(P - 1) + 2(Q - 1)``."""
        return self.min_distance + 2 * (self.num_pairs - 1) + 2 * (self.num_queries - 1)

    @property
    def query_positions(self) -> list[int]:
        """Input positions of the Q query keys, where the answers are scored: ``2P + gap + 2j``."""
        start = 2 * self.num_pairs + self.gap
        return [start + 2 * j for j in range(self.num_queries)]

    @property
    def chance_accuracy(self) -> float:
        """Expected accuracy of a guess uniform over the value ids: ``1 / num_values`` (values are uniform)."""
        return 1.0 / self.num_values

    # ------------------------------------------------------------------ sampling
    def sample_batch(self, n: int, *, generator: torch.Generator | int | None = None) -> RecallBatch:
        """``n`` independent sequences with their query positions, answers and distances (see :class:`RecallBatch`).

        ``generator``: a CPU torch.Generator, an int seed, or None (torch's global generator); the same seed
        gives the same batch. Tensors are int64 on the CPU.
        """
        n = check_count("n", n, 1)
        g = as_generator(generator)
        P, Q, L = self.num_pairs, self.num_queries, self.seq_len
        keys = torch.rand(n, self.num_keys, generator=g).argsort(dim=1)[:, :P] + 1  # (n, P), distinct per row
        values = torch.randint(self.num_values, (n, P), generator=g) + 1 + self.num_keys  # (n, P)
        asked = torch.rand(n, P, generator=g).argsort(dim=1)[:, :Q]  # (n, Q) distinct pair indices, random order
        positions = torch.tensor(self.query_positions, dtype=torch.long)  # (Q,)
        answers = values.gather(1, asked)  # (n, Q)
        inputs = torch.full((n, L), RECALL_FILLER, dtype=torch.long)
        inputs[:, 0 : 2 * P : 2], inputs[:, 1 : 2 * P : 2] = keys, values
        inputs[:, positions] = keys.gather(1, asked)
        if self.show_answers:
            inputs[:, positions + 1] = answers
        targets = torch.full((n, L), IGNORE_INDEX, dtype=torch.long)
        targets[:, positions] = answers
        distances = positions - (2 * asked + 1)  # (n, Q): the value of pair i sits at 2i + 1
        return RecallBatch(inputs, targets, positions, answers, distances)

    def sample(
        self, n: int, *, generator: torch.Generator | int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)``, each (n, L) int64: the first two fields of :meth:`sample_batch` (same seed,
        same tokens). Targets are IGNORE_INDEX except at the query keys, where they hold the answers."""
        batch = self.sample_batch(n, generator=generator)
        return batch.inputs, batch.targets

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """One sequence (L,) as text: key id ``i`` is ``k{i}``, value id ``j`` is ``v{j - num_keys - 1}``,
        the filler is ``.``; e.g. ``"k3 v1 k7 v0 . k7 v0 k3 v1"``."""
        seq = as_ids(ids, "ids", dims=(1,)).tolist()
        check_vocab(torch.tensor(seq, dtype=torch.long), self.vocab_size)
        K = self.num_keys
        return " ".join("." if t == RECALL_FILLER else f"k{t}" if t <= K else f"v{t - K - 1}" for t in seq)

    def as_model(self) -> RecallOracle:
        """The perfect predictor of this task as a language model (see :class:`RecallOracle`)."""
        return RecallOracle(self)


def recall_sources(inputs: torch.Tensor) -> torch.Tensor:
    """For every position t, the position of the value that answers it, found from the tokens alone; else -1.

    ``inputs`` (n, L) -> (n, L) int64. The answer source of position t is ``p + 1`` for the first earlier
    position ``p <= t - 2`` holding the same token as t (the key's first occurrence: its pair); it is -1 when
    there is none. Only the query positions of a recall sequence matter; for them ``t - source`` is the
    query's distance. Costs O(n L^2) comparisons, done in chunks of rows.
    """
    x = as_ids(inputs, "inputs", dims=(2,))
    n, L = x.shape
    out = torch.full((n, L), -1, dtype=torch.long, device=x.device)
    earlier = torch.ones(L, L, dtype=torch.bool, device=x.device).tril(diagonal=-2)  # [t, p]: p <= t - 2
    rows = max(1, _MAX_COMPARE // max(1, L * L))
    for r0 in range(0, n, rows):
        xb = x[r0 : r0 + rows]  # (b, L)
        same = (xb[:, :, None] == xb[:, None, :]) & earlier  # (b, L, L): [b, t, p]
        first = same.to(torch.uint8).argmax(dim=-1)  # (b, L): the first such p (argmax returns the first max)
        out[r0 : r0 + rows] = torch.where(same.any(dim=-1), first + 1, -1)
    return out


class RecallOracle(nn.Module):
    """The exact answer of an :class:`AssociativeRecall` task, in lmlab's language-model interface.

    ``model(idx)`` gives ``LMOutput(logits (B, T, V), loss)``. At every position whose token is a key seen
    before in a pair (see :func:`recall_sources`), the logits are the log-probabilities of certainty: 0 for
    the value that followed the key, -inf for every other id. Elsewhere the oracle claims nothing and gives
    the uniform ``-log V``. So its argmax is the right answer at every query and its loss on the targets of
    :meth:`AssociativeRecall.sample` is exactly 0. Float32 logits on the device of ``idx``.
    """

    context_limit = None  # any length

    def __init__(self, task: AssociativeRecall) -> None:
        super().__init__()
        if not isinstance(task, AssociativeRecall):
            raise TypeError(f"RecallOracle needs an AssociativeRecall task, got {type(task).__name__}")
        self.task = task
        self.vocab_size = task.vocab_size

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        loss_mask: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> LMOutput:
        """idx (B, T) int ids -> LMOutput(logits (B, T, V) float32, loss as in ``lm_loss`` or None)."""
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        idx = as_ids(idx, "idx", dims=(2,))
        check_vocab(idx, self.vocab_size, "idx")
        B, T = idx.shape
        V, K = self.vocab_size, self.task.num_keys
        logits = torch.full((B, T, V), -math.log(V), dtype=torch.float32, device=idx.device)
        source = recall_sources(idx)  # (B, T)
        is_key = (idx >= 1) & (idx <= K)
        value = idx.gather(1, source.clamp(min=0))  # (B, T): the token at the source (junk where source = -1)
        known = is_key & (source >= 0) & (value > K)  # (B, T): a key whose pair is in the context
        b, t = known.nonzero(as_tuple=True)
        logits[b, t] = float("-inf")
        logits[b, t, value[b, t]] = 0.0
        loss = None
        if targets is not None:
            loss = lm_loss(logits, targets, loss_mask=loss_mask, reduction=reduction)
        return LMOutput(logits, loss)


# ------------------------------------------------------------------ accuracy
class RecallByDistance(NamedTuple):
    """Exact recall accuracy grouped by query distance (D groups, ascending), for plotting."""

    distance: np.ndarray  # (D,) int64: the smallest distance of each group (its left edge)
    accuracy: np.ndarray  # (D,) float64: fraction of the group's queries answered exactly
    count: np.ndarray  # (D,) int64: queries in the group


def _recall_batch(data: object, n: int, generator: torch.Generator | int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) from a task (sampled), a RecallBatch, or an (inputs, targets) pair."""
    if isinstance(data, AssociativeRecall):
        return data.sample(check_count("n", n, 1), generator=generator)
    if isinstance(data, tuple) and len(data) >= 2 and all(isinstance(t, torch.Tensor) for t in data[:2]):
        inputs, targets = as_ids(data[0], "inputs", dims=(2,)).cpu(), as_ids(data[1], "targets", dims=(2,)).cpu()
        if inputs.shape != targets.shape:
            raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must have one shape")
        if not bool((targets != IGNORE_INDEX).any()):
            raise ValueError("targets score no position (all are IGNORE_INDEX = -100): nothing to measure")
        return inputs, targets
    raise TypeError(
        f"data must be an AssociativeRecall task, a RecallBatch or an (inputs, targets) pair of tensors, "
        f"got {type(data).__name__}"
    )


def _recall_hits(
    model: object, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hit, scored), each (n, L) bool on the CPU: argmax of the logits equals the target; target is scored."""
    if not callable(model):
        raise TypeError(f"model must be a language model (callable on token ids), got {type(model).__name__}")
    batch_size = check_count("batch_size", batch_size, 1)
    limit = context_limit(model)
    if limit is not None and inputs.shape[1] > limit:
        raise ValueError(
            f"the sequences have {inputs.shape[1]} tokens but the model reads at most {limit}; build it with "
            f"block_size >= {inputs.shape[1]}"
        )
    device = model_device(model)
    hits = []
    with eval_mode(model):
        for r0 in range(0, len(inputs), batch_size):
            x = inputs[r0 : r0 + batch_size].to(device)  # (b, L)
            out = model(x)
            logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
            if logits is None and isinstance(out, tuple | list) and out:
                logits = out[0]
            if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != x.shape:
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"the model must return logits of shape (B, T, V) = ({len(x)}, {x.shape[1]}, V), got {shape}"
                )
            hits.append(logits.argmax(dim=-1).cpu() == targets[r0 : r0 + batch_size])  # (b, L)
    scored = targets != IGNORE_INDEX
    return torch.cat(hits) & scored, scored


def recall_accuracy(
    model: object,
    data: AssociativeRecall | RecallBatch | tuple[torch.Tensor, torch.Tensor],
    *,
    n: int = 512,
    generator: torch.Generator | int | None = 0,
    batch_size: int = 128,
) -> float:
    """Exact recall accuracy: the fraction of scored positions where the argmax of the logits is the target.

    ``data``: a task (then ``n`` sequences are sampled with ``generator``, default seed 0, the same ones on
    every call), a :class:`RecallBatch`, or ``(inputs, targets)`` (n, L) with IGNORE_INDEX where not scored.
    The model runs in eval mode without gradients, ``batch_size`` sequences at a time, on its own device;
    ``logits[:, t]`` is read where ``targets[:, t]`` is scored (lmlab's next-token convention). Accuracy as
    defined for MQAR by Arora et al. 2023 ("Zoology", sec. 3): each answer counts, right or wrong.
    """
    inputs, targets = _recall_batch(data, n, generator)
    hit, scored = _recall_hits(model, inputs, targets, batch_size)
    return float(hit.sum()) / float(scored.sum())


def recall_accuracy_by_distance(
    model: object,
    data: AssociativeRecall | RecallBatch | tuple[torch.Tensor, torch.Tensor],
    *,
    n: int = 512,
    generator: torch.Generator | int | None = 0,
    batch_size: int = 128,
    bin_width: int = 1,
) -> RecallByDistance:
    """:func:`recall_accuracy` split by the distance of each query (see :class:`AssociativeRecall`).

    Distances are measured from the tokens (:func:`recall_sources`) and grouped in bins of ``bin_width``
    (``distance // bin_width * bin_width``); only non-empty groups are returned. The layout of
    :class:`AssociativeRecall` gives distances of one parity only (``min_distance`` plus even numbers), so
    ``bin_width=2`` loses nothing and halves the points of a plot.
    """
    bin_width = check_count("bin_width", bin_width, 1)
    inputs, targets = _recall_batch(data, n, generator)
    hit, scored = _recall_hits(model, inputs, targets, batch_size)
    source = recall_sources(inputs)  # (n, L)
    if bool((source[scored] < 0).any()):
        raise ValueError("a scored position's key does not occur earlier in its sequence; no distance to measure")
    pos = torch.arange(inputs.shape[1]).expand_as(inputs)
    dist = (pos - source)[scored] // bin_width * bin_width  # (N,) one per query
    groups, which = torch.unique(dist, return_inverse=True)
    count = torch.bincount(which, minlength=len(groups))
    right = torch.bincount(which, weights=hit[scored].double(), minlength=len(groups))
    return RecallByDistance(groups.numpy(), (right / count).numpy(), count.numpy())


class RecallData(SampledTaskData):
    """Training data for :class:`lmlab.train.Trainer` from an :class:`AssociativeRecall` task.

    The train split is infinite: every ``get_batch("train", ...)`` samples fresh sequences from the
    trainer's generator (so a seeded run, and its resume, sees the same ones). The val split is a fixed set
    of ``n_val`` sequences, sampled once from ``seed``: ``iter_split("val", ...)`` walks through it (the
    exact evaluation of ``TrainConfig(eval_batches=None)``) and ``get_batch("val", ...)`` draws rows of it.
    The loss is on the answers only (targets are IGNORE_INDEX elsewhere), so ``val_loss`` is nats per answer.
    ``block_size`` must be the task's ``seq_len``: build the model with ``block_size=task.seq_len``.

    The val set is sampled from a seed mixed from ``seed`` (not ``seed`` itself), so that it differs from the
    train batches of a trainer whose ``TrainConfig.seed`` equals ``seed`` (see
    :class:`~lmlab.text.tasks.SampledTaskData`).
    """

    task_type = AssociativeRecall
    val_salt = 0x2545F4914F6CDD1D

    def __init__(self, task: AssociativeRecall, n_val: int = 512, *, seed: int = 0) -> None:
        super().__init__(task, n_val, seed=seed)

    def sample_pairs(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fresh ``(inputs, targets)`` of the task, each (n, L) int64."""
        return self.task.sample(n, generator=generator)

    def __repr__(self) -> str:
        return f"RecallData({self.task!r}, n_val={len(self.val[0])}, seed={self.seed})"
