"""Decoding as search: the measured experiments of lesson 02.

Each function is one idea of the lesson, small enough to read in a minute:

- the size of the search space (:func:`search_space_size`), where a decoded text settles into a loop
  (:func:`find_loop`), what beam search costs (:func:`beam_search_cost`) and what a KV cache holds
  (:func:`kv_cache_size`);
- what each sampling knob does to one distribution, stage by stage (:func:`warp_stages`);
- experiments on a language whose true distribution is known (:class:`lmlab.text.synthetic.MarkovSource`):
  beam width against the probability found and its cost (:func:`beam_width_sweep`), search error against
  model error, prompt by prompt (:func:`error_records`) and summed up (:func:`search_and_model_errors`), why
  the most probable sentence is short and what the length penalty does (:func:`length_study`), quality
  against diversity as the sampling knobs move (:func:`quality_diversity`), and what the KV cache saves per
  token (:func:`cache_timing`).

The decoders themselves are the library's (:mod:`lmlab.generation`); the lesson's exercises (a greedy loop,
one beam step, the top-p filter, distinct n-grams) are solved only in the instructor's notebook.

Shapes: ``K`` beams, ``V`` vocabulary size, ``T`` tokens. Log-probabilities are natural logs (nats).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from lmlab.checks import check_int, model_device
from lmlab.generation import beam_search, distinct_n, exact_search, greedy, sample, sample_batch, warp_logits
from lmlab.generation.engine import check_max_new_tokens
from lmlab.generation.warp import check_warp_options
from lmlab.lm import context_limit, eval_mode
from lmlab.models import GPT, GPTConfig
from lmlab.text.synthetic import MarkovSource, markov_token_data, syllable_words
from lmlab.train import Trainer

__all__ = [
    "lesson_source",
    "train_on_source",
    "search_space_size",
    "find_loop",
    "beam_search_cost",
    "kv_cache_size",
    "warp_stages",
    "BeamWidthRow",
    "beam_width_sweep",
    "ErrorRecord",
    "error_records",
    "ErrorRow",
    "summarize_errors",
    "search_and_model_errors",
    "LengthRow",
    "length_study",
    "QualityRow",
    "quality_diversity",
    "CacheTimingRow",
    "cache_timing",
]


def _check_source(source: Any) -> MarkovSource:
    if not isinstance(source, MarkovSource):
        raise TypeError(f"source must be a lmlab.text.synthetic.MarkovSource, got {type(source).__name__}")
    return source


# ---------------------------------------------------------------------------------------------- the language
def lesson_source() -> MarkovSource:
    """The language of lesson 02: 12 words, each depending on the two before it; word 0 is ".", the end mark.

    ``MarkovSource(12, order=2, seed=0)`` with the words ".", "ba", "be", ... ("." is an ordinary word of
    the language; decoders that take an ``eos_token_id`` stop after it).
    """
    return MarkovSource(12, 2, seed=0, words=[".", *syllable_words(11)])


def train_on_source(
    source: MarkovSource,
    *,
    steps: int = 800,
    preset: str = "micro",
    block_size: int = 32,
    n_train: int = 40_000,
    seed: int = 0,
    progress: bool = False,
) -> GPT:
    """A GPT of shape ``preset`` trained for ``steps`` steps on ``n_train`` tokens sampled from ``source``.

    The recipe of lesson 1b (batch 16, AdamW at 3e-3 with 20 warmup steps, cosine decay), deterministic
    for a given ``seed`` on the CPU. Returns the model in eval mode. About 8 s for 800 steps on one core.
    """
    _check_source(source)
    data = markov_token_data(source, n_train=n_train, n_val=1_000, seed=seed)
    torch.manual_seed(seed)
    model = GPT(GPTConfig.preset(preset, vocab_size=source.vocab_size, block_size=block_size))
    trainer = Trainer(model, data, max_steps=steps, batch_size=16, lr=3e-3, warmup_steps=min(20, steps // 10),
                      eval_interval=steps, seed=seed, progress=progress)  # fmt: skip
    trainer.fit()
    return model.eval()


# ---------------------------------------------------------------------------------------------- the space
def search_space_size(vocab_size: int, length: int) -> int:
    """The number of different token sequences of ``length`` tokens over ``vocab_size`` tokens: V ** T.

    Every position can hold any of the V tokens, independently (the multiplication principle), so an exact
    answer to "which continuation is most probable?" by listing them all is out of reach beyond toy sizes:
    GPT-2's 50,257 tokens give about 10**94 continuations of 20 tokens.
    """
    return check_int("vocab_size", vocab_size, 1) ** check_int("length", length, 0)


def find_loop(
    tokens: Sequence[int] | torch.Tensor, *, max_period: int = 16, min_repeats: int = 3
) -> tuple[int, int] | None:
    """Where ``tokens`` settle into a loop that lasts to the end: ``(period, start)``, or None if they do not.

    The loop is the smallest period p <= ``max_period`` such that ``tokens[start:]`` repeats with period p
    (``tokens[i] == tokens[i - p]`` for every i >= start + p) over at least ``min_repeats`` full periods;
    ``start`` is the earliest position from which that holds. Greedy decoding with a model whose next-token
    choice depends only on the last few tokens must end in such a loop; text sampled from an ergodic source
    almost never does.
    """
    check_int("max_period", max_period, 1)
    check_int("min_repeats", min_repeats, 2)
    toks = [int(t) for t in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens)]
    n = len(toks)
    for p in range(1, max_period + 1):
        i = n - 1  # walk back while the token equals the one p positions earlier
        while i - p >= 0 and toks[i] == toks[i - p]:
            i -= 1
        start = max(i + 1 - p, 0)  # tokens[start:] repeats with period p
        if n - start >= min_repeats * p:
            return p, start
    return None


def beam_search_cost(num_beams: int, max_new_tokens: int, vocab_size: int) -> int:
    """The next-token distributions beam search computes for ``max_new_tokens`` tokens, with no end token.

    Beam search starts from the prompt alone: step 1 computes one distribution; step t + 1 computes one per
    running beam, and after t steps only V**t prefixes exist, so there are min(K, V**t) of them. In all
    1 + sum_{t=1}^{n-1} min(K, V**t), which is 1 + K (n - 1) whenever K <= V (lmlab's
    :func:`~lmlab.generation.beam_search`, like transformers', runs no placeholder beams).
    """
    K = check_int("num_beams", num_beams, 1)
    n = check_int("max_new_tokens", max_new_tokens, 1)
    V = check_int("vocab_size", vocab_size, 1)
    return 1 + sum(min(K, V**t) for t in range(1, n))


def kv_cache_size(*, n_layer: int, n_kv_head: int, head_size: int, length: int, batch_size: int = 1) -> int:
    """How many numbers a KV cache holds: 2 x n_layer x batch_size x length x n_kv_head x head_size.

    Every layer keeps, for every cached token, one key and one value vector of ``head_size`` numbers per
    key/value head (the accounting of Pope et al. 2023, "Efficiently Scaling Transformer Inference", MLSys,
    sec. 2 and 3.3). With multi-head attention every head keeps its own keys and values: ``n_kv_head`` is the
    number of heads and ``n_kv_head * head_size`` the model's width, as in lmlab's GPT. Multi-query attention
    (Shazeer 2019) keeps one key/value head per layer, grouped-query attention (Ainslie et al. 2023) a few.
    Multiply by the bytes per number (2 in 16-bit precision) for the memory.
    """
    n_layer = check_int("n_layer", n_layer, 1)
    n_kv_head = check_int("n_kv_head", n_kv_head, 1)
    head_size = check_int("head_size", head_size, 1)
    length = check_int("length", length, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    return 2 * n_layer * batch_size * length * n_kv_head * head_size


# ---------------------------------------------------------------------------------------------- sampling knobs
def warp_stages(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> dict[str, torch.Tensor]:
    """The next-token distribution after each sampling knob, in the order they are applied.

    ``logits`` (V,). Returns ``{stage: probs (V,)}`` for "model", "temperature", "top-k", "top-p" and
    "min-p": each stage applies the knobs up to it with :func:`lmlab.generation.warp_logits` (so the last
    one is exactly what sampling draws from). A knob left at its neutral value leaves its stage unchanged.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 1:
        raise TypeError("logits must be a 1-D torch tensor (V,)")
    check_warp_options(temperature, top_k, top_p, min_p, 1.0)
    if temperature == 0:
        raise ValueError("temperature must be > 0 here: 0 is greedy decoding, which has one token left")
    knobs: list[tuple[str, dict[str, Any]]] = [
        ("temperature", {"temperature": temperature}),
        ("top-k", {"top_k": top_k}),
        ("top-p", {"top_p": top_p}),
        ("min-p", {"min_p": min_p}),
    ]
    stages = {"model": torch.softmax(logits.double(), -1)}
    options: dict[str, Any] = {}
    for name, knob in knobs:
        options.update(knob)
        stages[name] = torch.softmax(warp_logits(logits.double(), **options), -1)
    return stages


# ---------------------------------------------------------------------------------------------- experiments
@torch.inference_mode()
def _logprob(model: nn.Module, tokens: list[int], P: int) -> float:
    """log p(tokens[P:] | tokens[:P]) under ``model`` (nats); the whole sequence must fit in one forward pass.

    The log-softmax is taken in float64, as :func:`lmlab.generation.exact_search` ranks continuations, so that
    "less probable than exact search's answer" is not decided by float32 rounding
    (:func:`lmlab.likelihood.token_logprobs` keeps the logits' dtype).
    """
    device = model_device(model)
    logp = torch.log_softmax(model(torch.tensor([tokens], device=device)).logits[0].double(), -1)  # (T, V)
    index = torch.arange(P - 1, len(tokens) - 1, device=device)
    return float(logp[index, torch.tensor(tokens[P:], device=device)].sum())


@dataclass(frozen=True)
class BeamWidthRow:
    """Beam search with ``num_beams`` beams over many prompts, against the exact optimum."""

    num_beams: int
    mean_logprob: float  # mean log p of the best hypothesis (nats)
    mean_gap: float  # mean of optimum - found (nats, >= 0)
    found_optimum: float  # fraction of prompts where it found the most probable continuation
    expansions: float  # mean next-token distributions computed per prompt (the cost)
    seconds: float  # total wall time


def beam_width_sweep(
    source: MarkovSource,
    prompts: Sequence[Sequence[int]],
    widths: Sequence[int],
    *,
    max_new_tokens: int,
) -> list[BeamWidthRow]:
    """Beam search on the *true* model of ``source`` with each width, scored against the exact optimum.

    The model is ``source.as_model()``, so there is no model error: every gap is search error. The optimum
    is :meth:`MarkovSource.most_likely_continuation` (dynamic programming). No EOS and no length penalty:
    every hypothesis has ``max_new_tokens`` tokens. Cost = next-token distributions computed.
    """
    _check_source(source)
    check_max_new_tokens(max_new_tokens, minimum=1)
    prompts = [list(p) for p in prompts]
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    lm = source.as_model()
    optimum = [source.most_likely_continuation(p, max_new_tokens)[1] for p in prompts]
    rows = []
    for k in widths:
        check_int("width", k, 1)
        t0 = time.perf_counter()
        found, expansions = [], []
        for p in prompts:
            [hyp], tree = beam_search(lm, p, num_beams=k, max_new_tokens=max_new_tokens, length_penalty=0.0,
                                      early_stopping="never", return_tree=True)  # fmt: skip
            found.append(float(source.token_logprobs(hyp.tokens)[len(p) - 1 :].sum()))  # exact, float64
            expansions.append(tree.expansions)
        seconds = time.perf_counter() - t0
        gaps = [max(0.0, o - f) for o, f in zip(optimum, found, strict=True)]
        rows.append(BeamWidthRow(
            k, statistics.fmean(found), statistics.fmean(gaps), statistics.fmean(g < 1e-9 for g in gaps),
            statistics.fmean(expansions), seconds,
        ))  # fmt: skip
    return rows


@dataclass(frozen=True)
class ErrorRecord:
    """One decoder's output for one prompt, judged by the model and by the truth (log-probabilities in nats)."""

    decoder: str  # "greedy", "beam 4", "exact"
    prompt: tuple[int, ...]
    generated: tuple[int, ...]  # the generated tokens (the prompt left out)
    model_logprob: float  # log p_model(generated | prompt)
    true_logprob: float  # log p_true(generated | prompt)
    model_best: float  # log p_model of the model's most probable continuation (exact search's output)
    true_best: float  # log p_true of the truth's most probable continuation
    truth_best: bool  # generated is the truth's most probable continuation

    @property
    def search_error(self) -> bool:
        """The model itself rates another continuation (its most probable one) higher than this output."""
        return self.model_logprob < self.model_best - 1e-6


def error_records(
    model: nn.Module,
    source: MarkovSource,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    beam_widths: Sequence[int] = (2, 4),
    max_expansions: int = 20_000,
) -> list[ErrorRecord]:
    """Greedy, beam search (each width) and exact search with ``model`` on every prompt, judged both ways.

    One :class:`ErrorRecord` per prompt and decoder, prompt by prompt, decoders in the order greedy,
    ``beam K`` for each width, exact. The model's most probable continuation is found by
    :func:`lmlab.generation.exact_search`, the truth's by :meth:`MarkovSource.most_likely_continuation`
    (dynamic programming). No EOS: every output has ``max_new_tokens`` tokens, so no length penalty is
    needed (beam search runs with ``length_penalty=0``, ``early_stopping="never"``: textbook beam search).
    """
    _check_source(source)
    check_max_new_tokens(max_new_tokens, minimum=1)
    prompts = [list(p) for p in prompts]
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    with eval_mode(model, no_grad=False):
        return _error_records(model, source, prompts, max_new_tokens, beam_widths, max_expansions)


def _error_records(
    model: nn.Module, source: MarkovSource, prompts: list[list[int]], max_new_tokens: int,
    beam_widths: Sequence[int], max_expansions: int,
) -> list[ErrorRecord]:
    records = []
    for p in prompts:
        P = len(p)
        truth_best, true_best = source.most_likely_continuation(p, max_new_tokens)
        outputs = {"greedy": greedy(model, p, max_new_tokens=max_new_tokens)}
        for k in beam_widths:
            [hyp] = beam_search(model, p, num_beams=k, max_new_tokens=max_new_tokens, length_penalty=0.0,
                                early_stopping="never")  # fmt: skip
            outputs[f"beam {k}"] = hyp.tokens
        outputs["exact"] = exact_search(model, p, max_new_tokens=max_new_tokens, max_expansions=max_expansions,
                                        return_tree=False).tokens  # fmt: skip
        best_lp = _logprob(model, outputs["exact"], P)
        for name, tokens in outputs.items():
            records.append(ErrorRecord(
                name, tuple(p), tuple(tokens[P:]), _logprob(model, tokens, P),
                float(source.token_logprobs(tokens)[P - 1 :].sum()), best_lp, true_best, tokens[P:] == truth_best,
            ))  # fmt: skip
    return records


@dataclass(frozen=True)
class ErrorRow:
    """One decoder over many prompts: how often it missed the model's best, and how the truth rates its output."""

    decoder: str  # "greedy", "beam 4", "exact"
    search_errors: float  # fraction of prompts where its output is less probable *under the model* than exact's
    model_logprob: float  # mean log p_model(output | prompt)
    true_logprob: float  # mean log p_true(output | prompt)
    true_optimum: float  # fraction of prompts where its output is the truth's most probable continuation


def summarize_errors(records: Sequence[ErrorRecord]) -> list[ErrorRow]:
    """One :class:`ErrorRow` per decoder of :func:`error_records`' output, in the order they first appear."""
    groups: dict[str, list[ErrorRecord]] = {}
    for r in records:
        if not isinstance(r, ErrorRecord):
            raise TypeError(f"records must be ErrorRecord objects (from error_records), got {type(r).__name__}")
        groups.setdefault(r.decoder, []).append(r)
    if not groups:
        raise ValueError("records must hold at least one record")
    return [
        ErrorRow(name, statistics.fmean(r.search_error for r in rs), statistics.fmean(r.model_logprob for r in rs),
                 statistics.fmean(r.true_logprob for r in rs), statistics.fmean(r.truth_best for r in rs))
        for name, rs in groups.items()
    ]  # fmt: skip


def search_and_model_errors(
    model: nn.Module,
    source: MarkovSource,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    beam_widths: Sequence[int] = (2, 4),
    max_expansions: int = 20_000,
) -> list[ErrorRow]:
    """Greedy, beam search and exact search with ``model``, judged by the model and by the true ``source``.

    A **search error** is a decoder output that the model itself rates below the model's most probable
    continuation (found by :func:`lmlab.generation.exact_search`). A **model error** is when even that most
    probable continuation is not the truth's (:meth:`MarkovSource.most_likely_continuation`): the "exact"
    row's ``true_optimum`` below 1 measures it. No EOS; every output has ``max_new_tokens`` tokens.
    :func:`summarize_errors` of :func:`error_records`, which keeps the prompt-by-prompt numbers.
    """
    return summarize_errors(error_records(model, source, prompts, max_new_tokens=max_new_tokens,
                                          beam_widths=beam_widths, max_expansions=max_expansions))  # fmt: skip


@dataclass(frozen=True)
class LengthRow:
    """One decoder with an end-of-sentence token, over many prompts."""

    decoder: str  # "exact", "beam 4, length_penalty 1", "sampling", ...
    mean_length: float  # generated tokens, the end token included
    mean_logprob: float  # mean log p(output | prompt) under the model (nats)
    hit_limit: float  # fraction of outputs cut at max_new_tokens without the end token
    lengths: tuple[int, ...] = ()  # every output's length, prompt by prompt (the end token included)


def length_study(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    eos_token_id: int,
    max_new_tokens: int,
    num_beams: int = 4,
    length_penalties: Sequence[float] = (0.0, 1.0, 2.0),
    samples_per_prompt: int = 4,
    seed: int = 0,
    max_expansions: int = 20_000,
) -> list[LengthRow]:
    """How long are the outputs of exact search, beam search (per length penalty) and sampling?

    Every decoder stops at ``eos_token_id`` (counted in the length) or after ``max_new_tokens``. Exact
    search returns the single most probable complete output; beam search ranks finished hypotheses by
    ``logprob / length ** length_penalty`` (transformers' convention); sampling draws ``samples_per_prompt``
    outputs per prompt at temperature 1, seeded by ``seed`` (with the true model of a source, these are
    the language's own sentence endings). Each row keeps every output's length in ``lengths``.
    """
    prompts = [list(p) for p in prompts]
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    check_max_new_tokens(max_new_tokens, minimum=1)
    outputs: dict[str, list[tuple[int, float, bool]]] = {}

    def record(name: str, tokens: list[int], P: int, logprob: float) -> None:
        gen = tokens[P:]
        outputs.setdefault(name, []).append((len(gen), logprob, gen[-1] != eos_token_id))

    g = torch.Generator().manual_seed(seed)
    for p in prompts:
        P = len(p)
        best = exact_search(model, p, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                            max_expansions=max_expansions, return_tree=False)  # fmt: skip
        record("exact search", best.tokens, P, _logprob(model, best.tokens, P))
        for lp in length_penalties:
            [hyp] = beam_search(model, p, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                eos_token_id=eos_token_id, length_penalty=lp)  # fmt: skip
            record(f"beam {num_beams}, length_penalty {lp:g}", hyp.tokens, P, _logprob(model, hyp.tokens, P))
        for _ in range(samples_per_prompt):
            tokens = sample(model, p, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, generator=g)
            record("sampling", tokens, P, _logprob(model, tokens, P))
    return [
        LengthRow(name, statistics.fmean(r[0] for r in rs), statistics.fmean(r[1] for r in rs),
                  statistics.fmean(r[2] for r in rs), tuple(r[0] for r in rs))
        for name, rs in outputs.items()
    ]  # fmt: skip


@dataclass(frozen=True)
class QualityRow:
    """Samples drawn with one setting of the knobs, scored against the true source."""

    setting: str  # e.g. "temperature 0.5"
    options: dict[str, Any]  # the warp options used
    true_logprob_per_token: float  # mean log p_true(token | context) of the sampled tokens: quality
    distinct: float  # distinct-n of the samples: diversity


def quality_diversity(
    model: nn.Module,
    source: MarkovSource,
    prompt_ids: Sequence[int],
    settings: Mapping[str, Mapping[str, Any]],
    *,
    num_samples: int = 32,
    max_new_tokens: int = 32,
    n: int = 3,
    seed: int = 0,
) -> list[QualityRow]:
    """For each ``{name: warp options}`` draw ``num_samples`` continuations and measure them against the truth.

    Quality: the mean log-probability per generated token under the true ``source`` (higher: more typical
    of the language; the entropy rate's negative is what the source's own samples score on average).
    Diversity: :func:`lmlab.generation.distinct_n` of the samples. Each setting uses its own generator seeded with
    ``seed``, so the rows are reproducible and independent of the order of ``settings``.
    """
    _check_source(source)
    prompt = [int(t) for t in prompt_ids]
    P = len(prompt)
    rows = []
    for name, options in settings.items():
        g = torch.Generator().manual_seed(seed)
        samples = sample_batch(model, prompt, num_samples=num_samples, max_new_tokens=max_new_tokens, generator=g,
                               **dict(options))  # fmt: skip
        full = np.concatenate([np.tile(prompt, (num_samples, 1)), samples.numpy()], axis=1)
        lp = source.token_logprobs(full)[:, P - 1 :]  # (num_samples, max_new_tokens)
        rows.append(QualityRow(name, dict(options), float(lp.mean()), distinct_n(samples, n)))
    return rows


@dataclass(frozen=True)
class CacheTimingRow:
    """Greedy decoding of ``new_tokens`` tokens, with and without the KV cache."""

    new_tokens: int
    ms_per_token_cache: float
    ms_per_token_no_cache: float
    tokens_read_cache: int  # tokens the model reads in all: prompt once + 1 per step
    tokens_read_no_cache: int  # the whole prefix at every step

    @property
    def slowdown(self) -> float:
        return self.ms_per_token_no_cache / self.ms_per_token_cache


def cache_timing(
    model: nn.Module, prompt_ids: Sequence[int], lengths: Sequence[int], *, repeats: int = 3
) -> list[CacheTimingRow]:
    """Time :func:`lmlab.generation.greedy` with ``use_cache`` True and False for each number of new tokens.

    Also counts the tokens the model reads: with the cache, the prompt once and then one token per step;
    without it, the whole prefix every step (P + (P+1) + ... ), which grows with the square of the length.
    Times are the median of ``repeats`` runs. ``lengths`` must fit in the model's context limit.
    """
    prompt = [int(t) for t in prompt_ids]
    P = len(prompt)
    check_int("repeats", repeats, 1)
    window = context_limit(model)
    rows = []
    for n in lengths:
        check_int("length", n, 1)
        if window is not None and P + n > window:
            raise ValueError(f"prompt ({P}) + {n} new tokens do not fit in the context limit {window}")
        ms = {}
        for use_cache in (True, False):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                greedy(model, prompt, max_new_tokens=n, use_cache=use_cache)
                times.append(time.perf_counter() - t0)
            ms[use_cache] = 1e3 * statistics.median(times) / n
        read_no_cache = sum(P + i for i in range(n))  # step i reads the prompt and i generated tokens
        rows.append(CacheTimingRow(n, ms[True], ms[False], P + n - 1, read_no_cache))
    return rows
