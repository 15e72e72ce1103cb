"""Generating text from a language model: greedy decoding, sampling, beam search and exact search.

Every strategy takes ``prompt_ids`` (a list of ints or a 1-D tensor) and returns token lists that *include*
the prompt. Shapes: ``B`` rows (beams), ``L`` tokens so far, ``V`` vocabulary size.

The pieces, each usable alone (gpt-fast's ``generate.py`` and nanochat's ``engine.py`` are split the same way):

- :func:`prefill` reads the prompt once into a KV cache and returns the first next-token logits and a
  :class:`DecodeState`; :func:`decode_one_token` feeds one new token per row and returns the next logits.
- :func:`warp_logits` reshapes a next-token distribution (repetition penalty, temperature, top-k, top-p,
  min-p) exactly as Hugging Face transformers' logits processors do; :func:`sample_next_token` draws from it
  with an explicit ``torch.Generator``.
- :func:`greedy`, :func:`sample`, :func:`beam_search` (transformers' ``generate(num_beams=...)``
  semantics) and :func:`exact_search` (the most probable continuation, by uniform-cost search).
- With ``return_tree=True`` greedy, beam and exact search also return a :class:`SearchTree`: every
  candidate they looked at, and which were kept, pruned or finished. ``plot_search_tree`` draws it.

KV cache and ``block_size``: generation reuses the keys and values of earlier tokens when the model has
``new_cache`` (``use_cache=False`` turns this off; the tokens are the same either way). Beams share the
prompt's prefill: it is read once with batch 1, and the cache rows are then selected per beam
(``KVCache.reorder``). Past ``block_size`` the context window *slides*, for every strategy: once prompt +
generated tokens no longer fit, each next token is predicted from the last ``block_size`` tokens only,
recomputed without a cache. (transformers' GPT-2 fails past ``n_positions``.) Models
without ``new_cache`` (for example ``MarkovSource.as_model()``) are re-run on the whole prefix each step.

Call ``model.eval()`` first: in training mode dropout makes every strategy random.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lmlab.model import KVCache

__all__ = [
    "Hypothesis",
    "SearchNode",
    "SearchTree",
    "SearchBudgetExceeded",
    "DecodeState",
    "prefill",
    "decode_one_token",
    "warp_logits",
    "sample_next_token",
    "greedy",
    "sample",
    "beam_search",
    "exact_search",
    "next_token_logits_stream",
    "plot_search_tree",
]

STATUSES = ("expanded", "kept", "pruned", "finished")
EARLY_STOPPING = (True, False, "never")
NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Hypothesis:
    """One finished sequence: ``tokens`` (prompt + generated, EOS included), its ``score`` and ``logprob``.

    ``logprob`` is the natural-log probability of the generated tokens given the prompt. ``score`` is what the
    search ranked by: ``logprob`` itself for greedy and exact search, ``logprob / generated_length **
    length_penalty`` for beam search.
    """

    tokens: list[int]
    score: float
    logprob: float


@dataclass
class SearchNode:
    """One prefix a search looked at. ``tokens`` are the generated tokens only (the prompt is in the tree)."""

    id: int  # index in SearchTree.nodes
    parent: int | None  # id of the prefix this one extends (None for the root: the prompt alone)
    token: int | None  # the token this node appends (None for the root)
    tokens: tuple[int, ...]  # generated tokens so far
    logprob: float  # log p(tokens | prompt), nats
    score: float  # what the search ranks by (logprob, or the length-penalised score once finished)
    step: int  # len(tokens): the decoding step that produced this node
    status: str  # "expanded", "kept", "pruned" or "finished" (see SearchTree)


@dataclass
class SearchTree:
    """The record of a search: every candidate prefix it considered, in the order it considered them.

    Statuses: ``"expanded"``: the model was run on this prefix (the root, and every node exact search pops);
    ``"kept"``: chosen to continue (greedy's token, beam search's running beams); ``"pruned"``: considered
    and dropped (greedy's runner-up, beam candidates outside the beam); ``"finished"``: a complete hypothesis
    (EOS or the length limit) that entered the result set. ``results`` lists the node ids of the returned
    hypotheses, best first; ``expansions`` counts next-token distributions computed (model calls).
    """

    method: str  # "greedy", "beam" or "exact"
    prompt: list[int]
    nodes: list[SearchNode] = field(default_factory=list)
    results: list[int] = field(default_factory=list)
    expansions: int = 0

    def add(
        self, parent: int | None, token: int | None, tokens: tuple[int, ...], logprob: float, score: float,
        status: str,
    ) -> int:
        """Append a node and return its id."""
        node = SearchNode(len(self.nodes), parent, token, tokens, logprob, score, len(tokens), status)
        self.nodes.append(node)
        return node.id

    def children(self, node_id: int) -> list[SearchNode]:
        """The recorded nodes that extend ``node_id`` by one token."""
        return [n for n in self.nodes if n.parent == node_id]

    def by_status(self, status: str) -> list[SearchNode]:
        """Every node with this status (one of ``STATUSES``)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        return [n for n in self.nodes if n.status == status]

    def path(self, node_id: int) -> list[SearchNode]:
        """The nodes from the root to ``node_id``, root first."""
        out = []
        current: int | None = node_id
        while current is not None:
            out.append(self.nodes[current])
            current = self.nodes[current].parent
        return out[::-1]


class SearchBudgetExceeded(RuntimeError):
    """Exact search ran out of ``max_expansions`` before it could prove which continuation is best.

    ``expansions`` and ``tree`` (the partial record) say how far it got.
    """

    def __init__(self, message: str, expansions: int, tree: SearchTree) -> None:
        super().__init__(message)
        self.expansions = expansions
        self.tree = tree


# ---------------------------------------------------------------------------------------------- input checks
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():  # e.g. MarkovLM keeps its tables as buffers and has no parameters
        return t.device
    return torch.device("cpu")


def _vocab_size(model: torch.nn.Module) -> int | None:
    v = getattr(model, "vocab_size", None)
    return v if _is_int(v) else None


def _as_prompt(prompt_ids: Sequence[int] | torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """The prompt as a 1-D long tensor (P,) on the model's device, checked against its vocabulary."""
    device = _device(model)
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() != 1:
            raise ValueError(f"prompt_ids must be 1-D, got shape {tuple(prompt_ids.shape)}")
        if prompt_ids.is_floating_point() or prompt_ids.is_complex() or prompt_ids.dtype == torch.bool:
            raise TypeError(f"prompt_ids must hold integer token ids, got dtype {prompt_ids.dtype}")
        ids = prompt_ids.to(device=device, dtype=torch.long)
    else:
        if isinstance(prompt_ids, str):
            raise TypeError("prompt_ids must be token ids; encode the text with a tokenizer first")
        values = list(prompt_ids)
        if not all(_is_int(v) or (isinstance(v, torch.Tensor) and v.dim() == 0) for v in values):
            raise TypeError("prompt_ids must be a list of int token ids or a 1-D integer tensor")
        ids = torch.tensor([int(v) for v in values], dtype=torch.long, device=device)
    if ids.numel() == 0:
        raise ValueError(
            "prompt_ids is empty: give at least one token (for example a newline or BOS token); "
            "lmlab has no implicit BOS token"
        )
    V = _vocab_size(model)
    if V is not None:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= V:
            raise ValueError(f"prompt_ids has token id {lo if lo < 0 else hi}, outside the vocabulary [0, {V})")
    return ids


def _check_count(max_new_tokens: int, minimum: int = 0) -> None:
    if not _is_int(max_new_tokens) or max_new_tokens < minimum:
        raise ValueError(f"max_new_tokens must be an integer >= {minimum}, got {max_new_tokens!r}")


def _check_eos(eos_token_id: int | None, model: torch.nn.Module) -> None:
    if eos_token_id is None:
        return
    V = _vocab_size(model)
    if not _is_int(eos_token_id) or eos_token_id < 0 or (V is not None and eos_token_id >= V):
        allowed = f"an integer in [0, {V})" if V is not None else "an integer >= 0"
        raise ValueError(f"eos_token_id must be None or {allowed}, got {eos_token_id!r}")


def _check_warp_options(
    temperature: float, top_k: int | None, top_p: float | None, min_p: float | None, repetition_penalty: float
) -> None:
    if not _is_number(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy, 1 leaves logits unchanged), got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise ValueError(f"top_k must be None or an integer >= 0 (0 means no cut), got {top_k!r}")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1] (1 means no cut), got {top_p!r}")
    if min_p is not None and (not _is_number(min_p) or not 0 <= min_p <= 1):
        raise ValueError(f"min_p must be None or a number in [0, 1] (0 means no cut), got {min_p!r}")
    if not _is_number(repetition_penalty) or repetition_penalty <= 0:
        raise ValueError(
            f"repetition_penalty must be a number > 0 (1: none, > 1 discourages repeats), got {repetition_penalty!r}"
        )


# ---------------------------------------------------------------------------------------------- model state
@dataclass
class DecodeState:
    """What generation carries from one step to the next.

    ``ids`` (B, capacity) holds every row's tokens in ``ids[:, :length]`` (prompt first). ``cache`` is the
    model's KV cache while the context fits in it, else None (then each step re-reads the last ``window``
    tokens, or the whole prefix when ``window`` is None).
    """

    model: torch.nn.Module
    ids: torch.Tensor  # (B, capacity) long
    length: int  # tokens filled per row
    cache: KVCache | None  # None once the context outgrows it, or when the model has no cache
    window: int | None  # the model's block_size (None: any length)

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    def tokens(self, row: int = 0) -> list[int]:
        """Row ``row``'s tokens so far (prompt included)."""
        return self.ids[row, : self.length].tolist()

    def append(self, tokens: torch.Tensor) -> None:
        """Write one new token per row, tokens (B,), without running the model."""
        if self.length == self.ids.shape[1]:  # only next_token_logits_stream generates without a limit
            self.ids = torch.cat([self.ids, torch.empty_like(self.ids)], dim=1)
        self.ids[:, self.length] = tokens
        self.length += 1

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (B',) of the tokens and the cache: picks beams, or copies one prompt to many."""
        if self.cache is not None:
            self.cache.reorder(index)
        self.ids = self.ids.index_select(0, index)


def _run(state: DecodeState, n_new: int) -> torch.Tensor:
    """Next-token logits (B, V) after the last ``n_new`` tokens of ``state.ids`` (the only unread ones)."""
    L, cache = state.length, state.cache
    if cache is not None:
        if cache.length + n_new <= cache.max_len:
            return state.model(state.ids[:, L - n_new : L], cache=cache).logits[:, -1]
        state.cache = None  # the cache is full: from here on the window slides (recomputed each step)
    lo = 0 if state.window is None else max(0, L - state.window)
    return state.model(state.ids[:, lo:L]).logits[:, -1]


def _prefill(
    model: torch.nn.Module, prompt: torch.Tensor, capacity: int, use_cache: bool
) -> tuple[torch.Tensor, DecodeState]:
    """prefill without argument checks: ``capacity`` tokens in all (prompt included)."""
    P = prompt.numel()
    window = getattr(model, "block_size", None)
    ids = torch.empty(1, max(capacity, P), dtype=torch.long, device=prompt.device)
    ids[0, :P] = prompt
    cache = None
    if use_cache and hasattr(model, "new_cache") and (window is None or P <= window):
        needed = max(P, capacity - 1)  # the last generated token is returned, never fed back
        cache = model.new_cache(1, needed if window is None else min(needed, window))
    state = DecodeState(model, ids, P, cache, window)
    return _run(state, P), state


@torch.inference_mode()
def prefill(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    use_cache: bool = True,
) -> tuple[torch.Tensor, DecodeState]:
    """Read the prompt (P,) once. Returns next-token logits (1, V) and the :class:`DecodeState` to go on from.

    The KV cache is sized for ``max_new_tokens`` more tokens (capped at ``block_size``; beyond that the
    window slides).
    """
    _check_count(max_new_tokens)
    prompt = _as_prompt(prompt_ids, model)
    return _prefill(model, prompt, prompt.numel() + max_new_tokens, use_cache)


def _decode(state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
    state.append(tokens)
    return _run(state, 1)


@torch.inference_mode()
def decode_one_token(state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
    """Feed one new token per row, tokens (B,) long; returns the next-token logits (B, V)."""
    if tokens.shape != (state.batch_size,):
        raise ValueError(f"tokens must have shape ({state.batch_size},), one per row, got {tuple(tokens.shape)}")
    return _decode(state, tokens)


def next_token_logits_stream(model: torch.nn.Module, prompt: torch.Tensor) -> Callable[[int | None], torch.Tensor]:
    """Return ``step(token)``: feed one token (None for the first call) and get the next logits (V,).

    Kept for older notebooks; :func:`prefill` and :func:`decode_one_token` are the same thing as functions.
    """
    holder: dict[str, DecodeState] = {}

    @torch.inference_mode()
    def step(token: int | None) -> torch.Tensor:
        if token is None:
            ids = _as_prompt(prompt, model)
            room = getattr(model, "block_size", None) or 64  # DecodeState.append grows the buffer past this
            logits, holder["state"] = _prefill(model, ids, ids.numel() + room, True)
            return logits[0]
        state = holder["state"]
        return _decode(state, torch.tensor([token], device=state.ids.device))[0]

    return step


# ---------------------------------------------------------------------------------------------- logits -> token
def _repetition_penalty(scores: torch.Tensor, prev: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019, eq. 2) as transformers applies it to scores (B, V).

    Every token in ``prev`` (B, L) counts once however often it occurred: a positive score is divided by
    the penalty and a negative one multiplied, so penalty > 1 always lowers it.
    """
    picked = torch.gather(scores, 1, prev)  # (B, L)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, prev, picked)


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep every token scoring at least the k-th highest (ties at the boundary are all kept; Fan et al. 2018)."""
    k = min(max(k, 1), scores.shape[-1])
    kth = torch.topk(scores, k)[0][..., -1, None]  # (B, 1)
    return scores.masked_fill(scores < kth, NEG_INF)


def _top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the most probable tokens whose probabilities sum to >= p.

    transformers' formulation: sort ascending, remove tokens while the cumulative probability of the
    *least* probable ones stays <= 1 - p; the most probable token is always kept.
    """
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return scores.masked_fill(remove, NEG_INF)


def _min_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Min-p filtering (Nguyen et al. 2024): drop tokens less probable than ``p`` times the top probability."""
    probs = torch.softmax(scores, dim=-1)
    remove = probs < p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(-1, torch.topk(probs, 1, dim=-1).indices, False)  # the top token always stays
    return scores.masked_fill(remove, NEG_INF)


def _warp(
    scores: torch.Tensor,
    prev: torch.Tensor | None,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None,
    repetition_penalty: float,
) -> torch.Tensor:
    """warp_logits on (B, V) scores without argument checks (the generation loops check once, up front)."""
    if repetition_penalty != 1.0:
        scores = _repetition_penalty(scores, prev, repetition_penalty)
    if temperature == 0:  # the limit T -> 0: only the argmax (lowest id among ties) stays
        keep = scores.argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, NEG_INF).scatter(1, keep, scores.gather(1, keep))
    if temperature != 1.0:
        scores = scores / temperature
    if top_k:
        scores = _top_k(scores, top_k)
    if top_p is not None and top_p < 1.0:
        scores = _top_p(scores, top_p)
    if min_p is not None:
        scores = _min_p(scores, min_p)
    return scores


def warp_logits(
    logits: torch.Tensor,
    prev_ids: Sequence[int] | torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    """Reshape next-token logits (V,) or (B, V); removed tokens get -inf. Returns the same shape.

    Applied in transformers' order (``GenerationMixin._get_logits_processor``) with its semantics:

    1. ``repetition_penalty`` over every token in ``prev_ids`` ((L,) or (B, L), prompt included), once per
       distinct token: positive logits divided by it, negative ones multiplied (``RepetitionPenaltyLogitsProcessor``);
    2. ``temperature``: logits / temperature (``TemperatureLogitsWarper``). ``temperature=0`` (which
       transformers refuses) keeps only the argmax, lowest id among ties, so sampling becomes greedy;
    3. ``top_k``: keep tokens scoring at least the k-th best, ties included (``TopKLogitsWarper``; 0 = no cut);
    4. ``top_p``: keep the smallest most-probable set with probability >= top_p, at least one token
       (``TopPLogitsWarper``);
    5. ``min_p``: drop tokens with probability < min_p x the top probability, after temperature
       (``MinPLogitsWarper``).

    Half-precision logits are computed in float32; float32 and float64 keep their dtype.
    """
    _check_warp_options(temperature, top_k, top_p, min_p, repetition_penalty)
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point torch.Tensor of shape (V,) or (B, V)")
    if logits.dim() not in (1, 2) or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape (V,) or (B, V) with V >= 1, got {tuple(logits.shape)}")
    one_row = logits.dim() == 1
    scores = logits.unsqueeze(0) if one_row else logits
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    prev = None
    if repetition_penalty != 1.0:
        if prev_ids is None:
            raise ValueError("repetition_penalty needs prev_ids: the tokens generated so far (and the prompt)")
        prev = torch.as_tensor(prev_ids, dtype=torch.long, device=scores.device)
        if prev.dim() == 1:
            prev = prev.unsqueeze(0).expand(scores.shape[0], -1)
        if prev.dim() != 2 or prev.shape[0] != scores.shape[0]:
            raise ValueError(
                f"prev_ids must have shape (L,) or (B, L) with B = {scores.shape[0]}, got {tuple(prev.shape)}"
            )
        if prev.numel() and (int(prev.min()) < 0 or int(prev.max()) >= scores.shape[-1]):
            raise ValueError(f"prev_ids must be token ids in [0, {scores.shape[-1]})")
    out = _warp(scores, prev, temperature, top_k, top_p, min_p, repetition_penalty)
    return out[0] if one_row else out


def sample_next_token(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token from softmax(logits): logits (..., V) -> token ids (...), long.

    ``generator``: a seeded ``torch.Generator`` on the logits' device for reproducible draws (None uses
    PyTorch's global generator). Tokens at -inf are never drawn.
    """
    probs = torch.softmax(logits, dim=-1)
    if probs.dim() == 1:
        return torch.multinomial(probs, 1, generator=generator)[0]
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


# ---------------------------------------------------------------------------------------------- greedy, sample
def _generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | None,
    choose: Callable[[torch.Tensor, DecodeState], torch.Tensor],
    use_cache: bool,
) -> list[int]:
    """Prompt + up to ``max_new_tokens`` tokens, each picked by ``choose(logits (1, V), state) -> (1,)``."""
    _check_count(max_new_tokens)
    _check_eos(eos_token_id, model)
    prompt = _as_prompt(prompt_ids, model)
    if max_new_tokens == 0:
        return prompt.tolist()
    logits, state = _prefill(model, prompt, prompt.numel() + max_new_tokens, use_cache)
    for i in range(max_new_tokens):
        token = choose(logits, state)  # (1,)
        if i == max_new_tokens - 1 or (eos_token_id is not None and int(token) == eos_token_id):
            state.append(token)
            break
        logits = _decode(state, token)
    return state.tokens()


def _greedy_choice(logits: torch.Tensor, state: DecodeState) -> torch.Tensor:
    return logits.argmax(dim=-1)  # ties go to the lowest id, as torch.argmax and transformers do


def _greedy_tree(
    model: torch.nn.Module, prompt: torch.Tensor, max_new_tokens: int, eos_token_id: int | None, use_cache: bool,
    length_penalty: float,
) -> tuple[list[int], float, SearchTree]:
    """Greedy decoding that also records, at each step, the chosen token and the runner-up.

    Returns (tokens, log-probability of the generated tokens, tree); the finished node's score is
    ``logprob / generated_length ** length_penalty`` (0 for greedy itself, the beam formula for num_beams=1).
    """
    tree = SearchTree("greedy", prompt.tolist())
    parent = tree.add(None, None, (), 0.0, 0.0, "expanded")
    logprob, gen = 0.0, ()
    logits, state = _prefill(model, prompt, prompt.numel() + max_new_tokens, use_cache)
    for i in range(max_new_tokens):
        tree.expansions += 1
        logp = torch.log_softmax(logits[0].float(), dim=-1)  # (V,)
        token = logits[0].argmax().view(1)  # (1,), the same choice as greedy()
        tok = int(token)
        values, tokens = torch.topk(logp, min(2, logp.numel()))
        for v, t in zip(values.tolist(), tokens.tolist(), strict=True):
            if t != tok:  # the runner-up
                tree.add(parent, t, gen + (t,), logprob + v, logprob + v, "pruned")
        logprob += float(logp[tok])
        gen = gen + (tok,)
        done = i == max_new_tokens - 1 or tok == eos_token_id
        score = logprob / (len(gen) ** length_penalty) if done else logprob
        parent = tree.add(parent, tok, gen, logprob, score, "finished" if done else "kept")
        if done:
            state.append(token)
            break
        logits = _decode(state, token)
    tree.results = [parent]
    return state.tokens(), logprob, tree


@torch.inference_mode()
def greedy(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    use_cache: bool = True,
    return_tree: bool = False,
) -> list[int] | tuple[list[int], SearchTree]:
    """Append the single most probable token ``max_new_tokens`` times, or until ``eos_token_id`` (included).

    Ties go to the lowest token id. With ``return_tree=True`` returns ``(tokens, SearchTree)``; the tree
    holds, per step, the chosen token ("kept", the last one "finished") and the runner-up ("pruned").
    """
    if not return_tree:
        return _generate(model, prompt_ids, max_new_tokens, eos_token_id, _greedy_choice, use_cache)
    _check_count(max_new_tokens)
    _check_eos(eos_token_id, model)
    prompt = _as_prompt(prompt_ids, model)
    if max_new_tokens == 0:
        tree = SearchTree("greedy", prompt.tolist())
        tree.results = [tree.add(None, None, (), 0.0, 0.0, "finished")]
        return prompt.tolist(), tree
    tokens, _, tree = _greedy_tree(model, prompt, max_new_tokens, eos_token_id, use_cache, length_penalty=0.0)
    return tokens, tree


@torch.inference_mode()
def sample(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
) -> list[int]:
    """Draw each next token from the model's distribution reshaped by :func:`warp_logits`.

    The warp options (``temperature``, ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``) mean what they
    mean in :func:`warp_logits` and in transformers' ``generate(do_sample=True, ...)``; the repetition
    penalty counts the prompt. ``temperature=0`` means greedy decoding (after the repetition penalty, if
    any). Pass a seeded ``torch.Generator`` (on the model's device) for reproducible samples.
    """
    _check_warp_options(temperature, top_k, top_p, min_p, repetition_penalty)
    if temperature == 0 and repetition_penalty == 1.0:
        return greedy(model, prompt_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, use_cache=use_cache)

    def choose(logits: torch.Tensor, state: DecodeState) -> torch.Tensor:
        scores = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        prev = state.ids[:, : state.length] if repetition_penalty != 1.0 else None
        scores = _warp(scores, prev, temperature, top_k, top_p, min_p, repetition_penalty)
        if temperature == 0:
            return scores.argmax(dim=-1)
        return sample_next_token(scores[0], generator).view(1)

    return _generate(model, prompt_ids, max_new_tokens, eos_token_id, choose, use_cache)


# ---------------------------------------------------------------------------------------------- beam search
def _check_beam_args(
    num_beams: int, num_return_sequences: int, length_penalty: float, early_stopping: bool | str
) -> None:
    if not _is_int(num_beams) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1 (1 is greedy decoding), got {num_beams!r}")
    if not _is_int(num_return_sequences) or not 1 <= num_return_sequences <= num_beams:
        raise ValueError(
            f"num_return_sequences must be an integer in [1, num_beams={num_beams}], got {num_return_sequences!r}"
        )
    if not _is_number(length_penalty):
        raise ValueError(f"length_penalty must be a finite number (0: none, > 0: favours long), got {length_penalty!r}")
    if not any(early_stopping is e for e in EARLY_STOPPING):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")


@torch.inference_mode()
def beam_search(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    eos_token_id: int | None = None,
    num_return_sequences: int = 1,
    use_cache: bool = True,
    return_tree: bool = False,
) -> list[Hypothesis] | tuple[list[Hypothesis], SearchTree]:
    """Beam search with the semantics of transformers' ``generate(num_beams=..., do_sample=False)``.

    Returns up to ``num_return_sequences`` :class:`Hypothesis` objects, best first (fewer only when fewer
    distinct continuations exist); with ``return_tree=True``, ``(hypotheses, SearchTree)``.

    The algorithm of transformers 5.x ``GenerationMixin._beam_search``, step by step:

    - running beams start as the prompt alone; each step scores every (beam, token) by the beam's summed
      log-probability plus log p(token), and keeps the best ``2 * num_beams`` candidates;
    - a candidate that ends with ``eos_token_id`` (or reaches ``max_new_tokens``) *finishes*, but only if it
      ranks among the first ``num_beams`` candidates; its score is
      ``sum_logprobs / generated_length ** length_penalty``, where generated_length counts the new tokens,
      EOS included, not the prompt. The best ``num_beams`` finished hypotheses are kept;
    - the best ``num_beams`` unfinished candidates become the next running beams;
    - ``early_stopping=True`` stops as soon as ``num_beams`` hypotheses are finished. Otherwise, once they
      are, search stops when the best running beam can no longer beat the worst finished one, estimated as
      ``running_sum / L ** length_penalty`` with L = its current generated length (``False``), or with
      L = max_new_tokens when ``"never"`` and length_penalty > 0 (an exact bound then). With
      ``early_stopping="never"`` and ``length_penalty=0`` this is textbook beam search.

    ``num_beams=1`` is greedy decoding, as in transformers (which then runs greedy search whatever
    ``early_stopping`` says); its score is computed with the same formula. Past ``block_size`` the window
    slides (module docstring); transformers' GPT-2 cannot go there. Deviation: when the first step has
    fewer than ``2 * num_beams`` real candidates (vocab_size < 2 * num_beams), transformers fills the gap
    with placeholder beams scored -1e9; lmlab runs with fewer beams instead.
    """
    _check_beam_args(num_beams, num_return_sequences, length_penalty, early_stopping)
    _check_count(max_new_tokens, minimum=1)
    _check_eos(eos_token_id, model)
    prompt = _as_prompt(prompt_ids, model)
    prompt_list = prompt.tolist()
    if num_beams == 1:
        tokens, logprob, tree = _greedy_tree(model, prompt, max_new_tokens, eos_token_id, use_cache, length_penalty)
        tree.method = "beam"
        hyp = Hypothesis(tokens, logprob / ((len(tokens) - len(prompt_list)) ** length_penalty), logprob)
        return ([hyp], tree) if return_tree else [hyp]

    K = num_beams
    tree = SearchTree("beam", prompt_list) if return_tree else None
    root = tree.add(None, None, (), 0.0, 0.0, "expanded") if tree is not None else -1
    logits, state = _prefill(model, prompt, prompt.numel() + max_new_tokens, use_cache)
    running_scores = torch.zeros(1, dtype=torch.float32, device=logits.device)  # (n,) summed log-probs
    running_gen: list[tuple[int, ...]] = [()]  # generated tokens of each running beam
    running_node = [root]  # their nodes in the tree
    finished: list[tuple[float, float, tuple[int, ...], int]] = []  # (score, logprob, tokens, node), best first
    for step in range(max_new_tokens):
        gen_len = step + 1  # generated length of every candidate of this step
        last = gen_len == max_new_tokens
        logp = torch.log_softmax(logits.float(), dim=-1)  # (n, V)
        V = logp.shape[-1]
        totals = (logp + running_scores.unsqueeze(1)).view(-1)  # (n * V,) beam-major, as in transformers
        top_vals, top_idx = torch.topk(totals, min(2 * K, totals.numel()))  # (2K,) best first
        # a finished hypothesis' score as transformers computes it: a float32 tensor / a python float
        finish_scores = (top_vals / (gen_len**length_penalty)).tolist()
        keep_rank, keep_parent, keep_token, keep_node = [], [], [], []
        new_finished = []
        for rank, (value, flat) in enumerate(zip(top_vals.tolist(), top_idx.tolist(), strict=True)):
            beam, token = divmod(flat, V)
            gen = running_gen[beam] + (token,)
            if last or token == eos_token_id:
                score = finish_scores[rank]
                node = -1 if tree is None else tree.add(running_node[beam], token, gen, value, score, "pruned")
                if rank < K:  # only candidates ranked within the first num_beams may finish
                    new_finished.append((score, value, gen, node))
            elif len(keep_rank) < K:  # the best num_beams unfinished candidates run on
                keep_rank.append(rank)
                keep_parent.append(beam)
                keep_token.append(token)
                keep_node.append(-1 if tree is None else tree.add(running_node[beam], token, gen, value, value, "kept"))
            elif tree is not None:
                tree.add(running_node[beam], token, gen, value, value, "pruned")
        if tree is not None:
            tree.expansions += len(running_gen)
        if new_finished:  # keep the best num_beams; sorted() is stable, so older hypotheses win exact ties
            finished = sorted(finished + new_finished, key=lambda h: -h[0])[:K]
            if tree is not None:
                for h in finished:
                    tree.nodes[h[3]].status = "finished"
        if last or not keep_rank:
            break
        running_gen = [running_gen[b] + (t,) for b, t in zip(keep_parent, keep_token, strict=True)]
        running_node = keep_node
        if keep_rank == list(range(len(keep_rank))):
            running_scores = top_vals[: len(keep_rank)]
        else:
            running_scores = top_vals[torch.tensor(keep_rank, device=top_vals.device)]
        if len(finished) == K:
            if early_stopping is True:
                break
            # transformers' _check_early_stop_heuristic: can the best running beam still beat the worst
            # finished one? Its best length is a guess with early_stopping=False, a bound with "never".
            best_len = max_new_tokens if (early_stopping == "never" and length_penalty > 0) else gen_len
            best_possible = float(running_scores[:1] / (best_len**length_penalty))
            if not best_possible > finished[-1][0]:
                break
        if keep_parent != list(range(state.batch_size)):
            state.reorder(torch.tensor(keep_parent, device=state.ids.device))  # first time: prompt -> K rows
        logits = _decode(state, torch.tensor(keep_token, device=state.ids.device))

    best = finished[:num_return_sequences]
    hyps = [Hypothesis(prompt_list + list(gen), score, lp) for score, lp, gen, _ in best]
    if tree is not None:
        tree.results = [node for *_, node in best]
        return hyps, tree
    return hyps


# ---------------------------------------------------------------------------------------------- exact search
@torch.inference_mode()
def exact_search(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    max_expansions: int = 100_000,
    return_tree: bool = True,
) -> tuple[Hypothesis, SearchTree] | Hypothesis:
    """The most probable continuation, found by uniform-cost (best-first) search; returns ``(hypothesis, tree)``.

    A continuation ends at ``eos_token_id`` (included) or after ``max_new_tokens`` tokens. The search is
    Dijkstra's algorithm (Dijkstra 1959; "uniform-cost search", Russell & Norvig, AIMA 4th ed., sec. 3.4.2)
    on the tree of prefixes with edge cost -log p(token | prefix): costs are non-negative, so the first
    *complete* prefix taken off the queue is the most probable one (score = its total log-probability,
    natural log). Children are generated lazily, best first, so memory grows with expansions, not with
    expansions x V. Without an EOS token the answer is the most probable sequence of exactly
    ``max_new_tokens`` tokens. Stahlberg & Byrne (2019) used exact search to show that the most probable
    translation is often empty: the search errors of beam search hide model errors.

    Each expansion runs the model once (the prompt is prefilled once; a prefix re-reads only its generated
    tokens against the prompt's cached keys and values). If more than ``max_expansions`` are needed,
    :class:`SearchBudgetExceeded` says how many were made. ``return_tree=False`` returns the hypothesis alone.
    """
    _check_count(max_new_tokens)
    _check_eos(eos_token_id, model)
    if not _is_int(max_expansions) or max_expansions < 1:
        raise ValueError(f"max_expansions must be an integer >= 1, got {max_expansions!r}")
    prompt = _as_prompt(prompt_ids, model)
    prompt_list, P = prompt.tolist(), prompt.numel()
    tree = SearchTree("exact", prompt_list)

    def done(hyp: Hypothesis, node: int) -> tuple[Hypothesis, SearchTree] | Hypothesis:
        tree.nodes[node].status = "finished"
        tree.results = [node]
        return (hyp, tree) if return_tree else hyp

    root = tree.add(None, None, (), 0.0, 0.0, "expanded")
    if max_new_tokens == 0:
        return done(Hypothesis(prompt_list, 0.0, 0.0), root)
    logits, state = _prefill(model, prompt, P + max_new_tokens, use_cache=True)
    cache = state.cache
    device = state.ids.device

    def next_logits(gen: tuple[int, ...]) -> torch.Tensor:
        """Next-token logits (V,) after prompt + gen: cached prompt, uncached suffix (or a sliding window)."""
        if cache is not None and P + len(gen) <= cache.max_len:
            cache.crop(P)
            return model(torch.tensor([gen], device=device), cache=cache).logits[0, -1]
        ids = torch.tensor([prompt_list + list(gen)], device=device)
        if state.window is not None:
            ids = ids[:, -state.window :]
        return model(ids).logits[0, -1]

    # children[node] = (log-probs sorted best first (V,), their tokens (V,)): lazy successor generation
    children: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    heap: list[tuple[float, tuple[int, ...], int, int]] = []  # (cost = -logprob, tokens, parent node, rank)

    def expand(node: int, cost: float, gen: tuple[int, ...], step_logits: torch.Tensor) -> None:
        logp = torch.log_softmax(step_logits.double(), dim=-1)
        values, tokens = torch.sort(logp, descending=True, stable=True)  # ties: lowest id first
        children[node] = (values, tokens)
        tree.expansions += 1
        push(node, cost, gen, 0)

    def push(parent: int, parent_cost: float, gen: tuple[int, ...], rank: int) -> None:
        values, tokens = children[parent]
        if rank < values.numel():
            lp = float(values[rank])
            if lp > NEG_INF:  # impossible tokens (and the rest, sorted after them) are never pushed
                heapq.heappush(heap, (parent_cost - lp, gen + (int(tokens[rank]),), parent, rank))

    expand(root, 0.0, (), logits[0])
    while heap:
        cost, gen, parent, rank = heapq.heappop(heap)
        parent_cost = -tree.nodes[parent].logprob
        push(parent, parent_cost, gen[:-1], rank + 1)  # the next-best sibling becomes reachable
        if len(gen) == max_new_tokens or gen[-1] == eos_token_id:  # complete: nothing can beat it
            node = tree.add(parent, gen[-1], gen, -cost, -cost, "finished")
            return done(Hypothesis(prompt_list + list(gen), -cost, -cost), node)
        if tree.expansions >= max_expansions:
            raise SearchBudgetExceeded(
                f"exact search made {tree.expansions} expansions (max_expansions={max_expansions}) without "
                f"proving which continuation is most probable; the best unfinished prefix so far has "
                f"log-probability {-cost:.3f} after {len(gen)} of {max_new_tokens} tokens. Raise max_expansions, "
                f"lower max_new_tokens, give an eos_token_id, or use beam_search for an approximate answer",
                tree.expansions,
                tree,
            )
        node = tree.add(parent, gen[-1], gen, -cost, -cost, "expanded")
        expand(node, cost, gen, next_logits(gen))
    raise RuntimeError("exact search ran out of candidates: every continuation has probability 0")  # pragma: no cover


def plot_search_tree(tree: SearchTree, tokenizer: object | None = None, ax: object | None = None) -> object:
    """Draw a :class:`SearchTree` with matplotlib; see :func:`lmlab.search_plot.plot_search_tree`."""
    from lmlab.search_plot import plot_search_tree as _plot

    return _plot(tree, tokenizer=tokenizer, ax=ax)


if __name__ == "__main__":
    # Greedy, beam and exact search on a language whose probabilities are known exactly: python -m lmlab.decoding
    from lmlab.synthetic import MarkovSource

    source = MarkovSource(8, order=2, seed=3)
    lm, prompt, eos = source.as_model(), [1, 2], 0
    print(f"prompt {source.decode(prompt)!r}, EOS {source.decode([eos])!r}, at most 6 new words")
    g = greedy(lm, prompt, max_new_tokens=6, eos_token_id=eos)
    print(f"greedy          {source.decode(g)!r}  log p = {float(source.token_logprobs(g)[1:].sum()):.3f}")
    for k in (2, 4):
        [b] = beam_search(lm, prompt, num_beams=k, max_new_tokens=6, eos_token_id=eos, length_penalty=0.0)
        print(f"beam search, {k}  {source.decode(b.tokens)!r}  log p = {b.logprob:.3f}")
    best, tree = exact_search(lm, prompt, max_new_tokens=6, eos_token_id=eos)
    print(f"exact search    {source.decode(best.tokens)!r}  log p = {best.logprob:.3f} ({tree.expansions} expansions)")
