"""Decoding strategies: greedy decoding, sampling, beam search and exact search.

Every strategy takes ``prompt_ids`` (a list of ints or a 1-D tensor) and returns token lists that *include*
the prompt. Shapes: ``B`` rows (beams), ``L`` tokens so far, ``V`` vocabulary size.

All of them run on one engine (:mod:`lmlab.generation.engine`: prefill, then one token per row at a time)
and reshape distributions with :mod:`lmlab.generation.warp`:

- :func:`greedy`, :func:`sample`, :func:`beam_search` (transformers' ``generate(num_beams=...)``
  semantics) and :func:`exact_search` (the most probable continuation, by uniform-cost search);
- with ``return_tree=True`` greedy, beam and exact search also return a :class:`~lmlab.generation.tree.SearchTree`:
  every candidate they looked at, and which were kept, pruned or finished (:func:`lmlab.plots.plot_search_tree`
  draws it).

Caches: generation reuses the model's decoding state when the model has ``new_cache`` (``use_cache=False``
turns this off; the tokens are the same either way). Beams share the prompt's prefill: it is read once
with batch 1, and the cache rows are then selected per beam. Past the model's context limit the window
*slides*, for every strategy (transformers' GPT-2 fails past ``n_positions``).

Call ``model.eval()`` first: in training mode dropout makes every strategy random.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

import torch

from lmlab.checks import check_int, is_int, is_number
from lmlab.generation.engine import DecodeState, as_prompt, check_eos, check_max_new_tokens, decode_loop, start
from lmlab.generation.tree import Hypothesis, SearchBudgetExceeded, SearchTree, TreeRecorder
from lmlab.generation.warp import apply_warp, check_warp_options, sample_next_token

__all__ = ["greedy", "sample", "sample_batch", "beam_search", "exact_search"]

EARLY_STOPPING = (True, False, "never")
EXACT_CHUNK = 16  # children ranked and kept per node expanded by exact search (grows x4 when used up)
NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------- greedy, sample
def _greedy_choice(logits: torch.Tensor, state: DecodeState) -> torch.Tensor:
    return logits.argmax(dim=-1)  # ties go to the lowest id, as torch.argmax and transformers do


def _greedy_recorder(rec: TreeRecorder, length_penalty: float) -> tuple[Callable[..., None], dict[str, float]]:
    """An ``on_step`` for :func:`decode_loop` that records greedy decoding's tree: at each step the chosen token
    ("kept", the last one "finished") and the runner-up ("pruned"). Also sums the generated tokens' log-probs.

    The finished node's score is ``logprob / generated_length ** length_penalty`` (the beam formula, for
    ``num_beams=1``; 0 gives the log-probability itself).
    """
    walk = {"node": rec.add(None, None, (), 0.0, 0.0, "expanded"), "logprob": 0.0}
    gen: list[int] = []

    def on_step(logits: torch.Tensor, tokens: torch.Tensor, final: bool) -> None:
        rec.expanded()
        logp = torch.log_softmax(logits[0].float(), dim=-1)  # (V,)
        tok, lp = int(tokens[0]), walk["logprob"]
        values, ranked = torch.topk(logp, min(2, logp.numel()))
        for v, t in zip(values.tolist(), ranked.tolist(), strict=True):
            if t != tok:  # the runner-up
                rec.add(walk["node"], t, (*gen, t), lp + v, lp + v, "pruned")
        walk["logprob"] = lp = lp + float(logp[tok])
        gen.append(tok)
        score = lp / (len(gen) ** length_penalty) if final else lp
        walk["node"] = rec.add(walk["node"], tok, tuple(gen), lp, score, "finished" if final else "kept")

    return on_step, walk


def _greedy_with_tree(
    model: torch.nn.Module, prompt: torch.Tensor, max_new_tokens: int, eos_token_id: int | None, use_cache: bool,
    length_penalty: float, method: str,
) -> tuple[list[int], float, SearchTree]:
    """Greedy decoding with its tree recorded beside the loop: (tokens, log p of the generated tokens, tree)."""
    rec = TreeRecorder(method, prompt.tolist())
    on_step, walk = _greedy_recorder(rec, length_penalty)
    logits, state = start(model, prompt, prompt.numel() + max_new_tokens, use_cache)
    decode_loop(logits, state, max_new_tokens, _greedy_choice, eos_token_id=eos_token_id, on_step=on_step)
    tree = rec.finish([int(walk["node"])])
    assert tree is not None
    return state.tokens(), walk["logprob"], tree


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
    check_max_new_tokens(max_new_tokens)
    check_eos(eos_token_id, model)
    prompt = as_prompt(prompt_ids, model)
    if max_new_tokens == 0:
        if not return_tree:
            return prompt.tolist()
        tree = SearchTree("greedy", prompt.tolist())
        tree.results = [tree.add(None, None, (), 0.0, 0.0, "finished")]
        return prompt.tolist(), tree
    if return_tree:
        tokens, _, tree = _greedy_with_tree(model, prompt, max_new_tokens, eos_token_id, use_cache, 0.0, "greedy")
        return tokens, tree
    logits, state = start(model, prompt, prompt.numel() + max_new_tokens, use_cache)
    return decode_loop(logits, state, max_new_tokens, _greedy_choice, eos_token_id=eos_token_id).tokens()


def _sampler(
    generator: torch.Generator | None, temperature: float, top_k: int | None, top_p: float | None,
    min_p: float | None, repetition_penalty: float,
) -> Callable[[torch.Tensor, DecodeState], torch.Tensor]:
    """``choose`` for :func:`decode_loop`: warp each row's logits, then draw one token per row from ``generator``."""

    def choose(logits: torch.Tensor, state: DecodeState) -> torch.Tensor:
        scores = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        prev = state.ids[:, : state.length] if repetition_penalty != 1.0 else None
        scores = apply_warp(scores, prev, temperature, top_k, top_p, min_p, repetition_penalty)  # (B, V)
        if temperature == 0:
            return scores.argmax(dim=-1)
        return sample_next_token(scores, generator)  # (B,): row after row from the one generator

    return choose


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
    any). Pass a seeded ``torch.Generator`` (on the model's device) for reproducible samples. One row of
    :func:`sample_batch`, returned as a list that includes the prompt and stops after ``eos_token_id``.
    """
    check_warp_options(temperature, top_k, top_p, min_p, repetition_penalty)
    if temperature == 0 and repetition_penalty == 1.0:
        return greedy(model, prompt_ids, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, use_cache=use_cache)
    check_max_new_tokens(max_new_tokens)
    check_eos(eos_token_id, model)
    prompt = as_prompt(prompt_ids, model).tolist()
    if max_new_tokens == 0:
        return prompt
    row = sample_batch(model, prompt, num_samples=1, max_new_tokens=max_new_tokens, generator=generator,
                       eos_token_id=eos_token_id, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                       repetition_penalty=repetition_penalty, use_cache=use_cache)  # fmt: skip
    return prompt + row[0].tolist()  # one row stops right after its EOS token


@torch.inference_mode()
def sample_batch(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    num_samples: int,
    max_new_tokens: int,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
) -> torch.Tensor:
    """``num_samples`` independent continuations of one prompt, drawn together: (num_samples, max_new_tokens).

    The prompt is read once, its decoding state copied to every row, and each step draws one token per row
    from the warped distribution (:func:`lmlab.generation.warp.warp_logits`), all rows from the one
    ``generator``. Only the generated tokens are returned, on the CPU. A row that produced ``eos_token_id``
    repeats it to the end (the other rows go on); the tensor is cut after the step where every row has
    finished. ``temperature=0`` gives greedy decoding in every row.
    """
    check_int("num_samples", num_samples, 1)
    check_max_new_tokens(max_new_tokens, minimum=1)
    check_warp_options(temperature, top_k, top_p, min_p, repetition_penalty)
    check_eos(eos_token_id, model)
    prompt = as_prompt(prompt_ids, model)
    P = prompt.numel()
    logits, state = start(model, prompt, P + max_new_tokens, use_cache)
    if num_samples > 1:
        state.reorder(torch.zeros(num_samples, dtype=torch.long, device=logits.device))  # copy the prompt's state
        logits = logits.expand(num_samples, -1)
    choose = _sampler(generator, temperature, top_k, top_p, min_p, repetition_penalty)
    decode_loop(logits, state, max_new_tokens, choose, eos_token_id=eos_token_id)
    return state.ids[:, P : state.length].cpu()


# ---------------------------------------------------------------------------------------------- beam search
def _check_beam_args(
    num_beams: int, num_return_sequences: int, length_penalty: float, early_stopping: bool | str
) -> None:
    if not is_int(num_beams) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1 (1 is greedy decoding), got {num_beams!r}")
    if not is_int(num_return_sequences) or not 1 <= num_return_sequences <= num_beams:
        raise ValueError(
            f"num_return_sequences must be an integer in [1, num_beams={num_beams}], got {num_return_sequences!r}"
        )
    if not is_number(length_penalty):
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
    ``early_stopping`` says); its score is computed with the same formula. Past the context limit the window
    slides (module docstring); transformers' GPT-2 cannot go there. Deviation: when the first step has
    fewer than ``2 * num_beams`` real candidates (vocab_size < 2 * num_beams), transformers fills the gap
    with placeholder beams scored -1e9; lmlab runs with fewer beams instead.
    """
    _check_beam_args(num_beams, num_return_sequences, length_penalty, early_stopping)
    check_max_new_tokens(max_new_tokens, minimum=1)
    check_eos(eos_token_id, model)
    prompt = as_prompt(prompt_ids, model)
    prompt_list = prompt.tolist()
    if num_beams == 1:
        tokens, logprob, tree = _greedy_with_tree(
            model, prompt, max_new_tokens, eos_token_id, use_cache, length_penalty, "beam"
        )
        hyp = Hypothesis(tokens, logprob / ((len(tokens) - len(prompt_list)) ** length_penalty), logprob)
        return ([hyp], tree) if return_tree else [hyp]

    K = num_beams
    rec = TreeRecorder("beam", prompt_list, enabled=return_tree)  # beside the search: keeps nothing when off
    root = rec.add(None, None, (), 0.0, 0.0, "expanded")
    logits, state = start(model, prompt, prompt.numel() + max_new_tokens, use_cache)
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
                node = rec.add(running_node[beam], token, gen, value, score, "pruned")
                if rank < K:  # only candidates ranked within the first num_beams may finish
                    new_finished.append((score, value, gen, node))
            elif len(keep_rank) < K:  # the best num_beams unfinished candidates run on
                keep_rank.append(rank)
                keep_parent.append(beam)
                keep_token.append(token)
                keep_node.append(rec.add(running_node[beam], token, gen, value, value, "kept"))
            else:
                rec.add(running_node[beam], token, gen, value, value, "pruned")
        rec.expanded(len(running_gen))
        if new_finished:  # keep the best num_beams; sorted() is stable, so older hypotheses win exact ties
            finished = sorted(finished + new_finished, key=lambda h: -h[0])[:K]
            for h in finished:
                rec.mark(h[3], "finished")
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
        logits = state.feed(torch.tensor(keep_token, device=state.ids.device))

    best = finished[:num_return_sequences]
    hyps = [Hypothesis(prompt_list + list(gen), score, lp) for score, lp, gen, _ in best]
    tree = rec.finish([node for *_, node in best])
    return (hyps, tree) if return_tree else hyps


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
    natural log). Children are generated lazily, best first: each expanded prefix keeps only its best
    ``EXACT_CHUNK`` children and ranks them again (one more model call, counted) if the search needs more,
    so memory grows with expansions, not with expansions x V. Without an EOS token the answer is the most
    probable sequence of exactly ``max_new_tokens`` tokens. Stahlberg & Byrne (2019) used exact search to
    show that the most probable translation is often empty: the search errors of beam search hide model
    errors.

    Each expansion runs the model once (the prompt is prefilled once; a prefix re-reads only its generated
    tokens from the prompt's saved decoding state: ``snapshot``/``restore`` of the cache protocol). If more
    than ``max_expansions`` are needed, :class:`SearchBudgetExceeded` says how many were made.
    ``return_tree=False`` returns the hypothesis alone.
    """
    check_max_new_tokens(max_new_tokens)
    check_eos(eos_token_id, model)
    if not is_int(max_expansions) or max_expansions < 1:
        raise ValueError(f"max_expansions must be an integer >= 1, got {max_expansions!r}")
    prompt = as_prompt(prompt_ids, model)
    prompt_list, P = prompt.tolist(), prompt.numel()
    tree = SearchTree("exact", prompt_list)

    def done(hyp: Hypothesis, node: int) -> tuple[Hypothesis, SearchTree] | Hypothesis:
        tree.nodes[node].status = "finished"
        tree.results = [node]
        return (hyp, tree) if return_tree else hyp

    root = tree.add(None, None, (), 0.0, 0.0, "expanded")
    if max_new_tokens == 0:
        return done(Hypothesis(prompt_list, 0.0, 0.0), root)
    logits, state = start(model, prompt, P + max_new_tokens, use_cache=True)
    cache = state.cache
    device = state.ids.device
    prompt_state = None if cache is None else cache.snapshot()  # the decoding state after the prompt

    def next_logits(gen: tuple[int, ...]) -> torch.Tensor:
        """Next-token logits (V,) after prompt + gen: cached prompt, uncached suffix (or a sliding window)."""
        if cache is not None and (cache.capacity is None or P + len(gen) <= cache.capacity):
            cache.restore(prompt_state)  # back to the prompt alone (a crop for a KV cache)
            return model(torch.tensor([gen], device=device), cache=cache).logits[0, -1]
        ids = torch.tensor([prompt_list + list(gen)], device=device)
        if state.window is not None:
            ids = ids[:, -state.window :]
        return model(ids).logits[0, -1]

    # Lazy successor generation. children[node] = (log-probs best first, their tokens, exhausted): the best
    # EXACT_CHUNK children of each expanded node as Python lists (all V for the root). Only when the search
    # needs a node's next child past them is its distribution computed again (the same call, so the same
    # numbers) and a chunk four times larger kept. Memory: O(expansions x EXACT_CHUNK), not O(expansions x V).
    children: dict[int, tuple[list[float], list[int], bool]] = {}
    heap: list[tuple[float, tuple[int, ...], int, int]] = []  # (cost = -logprob, tokens, parent node, rank)

    def ranked(step_logits: torch.Tensor, keep: int | None) -> tuple[list[float], list[int], bool]:
        logp = torch.log_softmax(step_logits.double(), dim=-1)
        values, tokens = torch.sort(logp, descending=True, stable=True)  # ties: lowest id first
        V = values.numel()
        keep = V if keep is None else min(keep, V)
        return values[:keep].tolist(), tokens[:keep].tolist(), keep == V

    def expand(node: int, cost: float, gen: tuple[int, ...], step_logits: torch.Tensor, keep: int | None) -> None:
        children[node] = ranked(step_logits, keep)
        tree.expansions += 1
        push(node, cost, gen, 0)

    def push(parent: int, parent_cost: float, gen: tuple[int, ...], rank: int) -> None:
        values, tokens, complete = children[parent]
        if rank >= len(values) and not complete:  # past the kept chunk: rank the children again, keep more
            values, tokens, complete = children[parent] = ranked(next_logits(gen), 4 * len(values))
            tree.expansions += 1  # a model call like any other
        if rank < len(values):
            lp = values[rank]
            if lp > NEG_INF:  # impossible tokens (and the rest, sorted after them) are never pushed
                heapq.heappush(heap, (parent_cost - lp, gen + (tokens[rank],), parent, rank))

    expand(root, 0.0, (), logits[0], None)
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
        expand(node, cost, gen, next_logits(gen), EXACT_CHUNK)
    raise RuntimeError("exact search ran out of candidates: every continuation has probability 0")  # pragma: no cover


if __name__ == "__main__":
    # Greedy, beam and exact search on a language with known probabilities: python -m lmlab.generation.search
    from lmlab.text.synthetic import MarkovSource

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
