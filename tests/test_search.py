"""Exact search (uniform-cost search for the most probable continuation) and search-tree records.

Exact search is checked against brute-force enumeration on tiny vocabularies and against the dynamic
programme of ``MarkovSource.most_likely_continuation``; beam search with enough beams must find the same
answer; the trees must tell the same story as the results; the plot must draw.
"""

import itertools
import math

import pytest
import torch

from lmlab import GPT, GPTConfig, MarkovSource
from lmlab.generation import (
    Hypothesis,
    SearchBudgetExceeded,
    SearchTree,
    beam_search,
    exact_search,
    greedy,
)
from lmlab.plots import plot_search_tree


def peaked_gpt(vocab_size: int, seed: int, block_size: int = 16, scale: float = 0.6) -> GPT:
    """A small random GPT whose next-token distributions are far from uniform (weights of std ``scale``)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" not in name:
                p.normal_(0.0, scale)
    return model


@torch.no_grad()
def sequence_logprob(model, prompt, gen) -> float:
    """log p(gen | prompt) by re-reading the (windowed) prefix for every token: no cache involved."""
    ids, total = list(prompt), 0.0
    window = getattr(model, "block_size", None) or len(prompt) + len(gen)
    for token in gen:
        logits = model(torch.tensor([ids[-window:]])).logits[0, -1]
        total += float(torch.log_softmax(logits.double(), -1)[token])
        ids.append(token)
    return total


def brute_force(model, prompt, n, eos):
    """The most probable continuation by enumeration: every sequence that ends at EOS or has n tokens."""
    V = model.vocab_size
    candidates = []
    for length in range(1, n + 1):
        for gen in itertools.product(range(V), repeat=length):
            if eos is not None and eos in gen[:-1]:
                continue  # nothing follows EOS
            if length < n and gen[-1] != eos:
                continue  # shorter than n only when it ends with EOS
            candidates.append((sequence_logprob(model, prompt, gen), gen))
    return max(candidates)


@pytest.mark.parametrize("seed, vocab_size, n, eos", [(0, 3, 4, 1), (1, 4, 3, 0), (2, 3, 5, None), (3, 4, 3, 2)])
def test_exact_search_equals_brute_force(seed, vocab_size, n, eos):
    model = peaked_gpt(vocab_size, seed)
    prompt = [seed % vocab_size, 1]
    best_lp, best_gen = brute_force(model, prompt, n, eos)
    hyp, tree = exact_search(model, prompt, max_new_tokens=n, eos_token_id=eos)
    assert hyp.tokens == prompt + list(best_gen)
    assert hyp.score == pytest.approx(best_lp, abs=1e-5) and hyp.logprob == hyp.score
    assert 1 <= tree.expansions <= sum(vocab_size**d for d in range(n))


def test_exact_search_past_block_size_uses_the_sliding_window():
    model = peaked_gpt(3, seed=5, block_size=4)
    prompt = [0, 1, 2]  # 3 prompt + 4 new tokens > block_size 4
    best_lp, best_gen = brute_force(model, prompt, 4, eos=None)
    hyp = exact_search(model, prompt, max_new_tokens=4, return_tree=False)
    assert isinstance(hyp, Hypothesis)
    assert hyp.tokens == prompt + list(best_gen) and hyp.score == pytest.approx(best_lp, abs=1e-5)


@pytest.mark.parametrize("seed, order, vocab_size, n", [(0, 1, 6, 8), (1, 2, 5, 7), (2, 3, 4, 6), (3, 2, 8, 5)])
def test_exact_search_equals_the_markov_dynamic_programme(seed, order, vocab_size, n):
    # MarkovLM predicts token t+1 from the last min(t+1, order) tokens, and most_likely_continuation(prefix, n)
    # conditions continuation token j on min(len(prefix) + j, order) tokens: the same conditionals for any
    # non-empty prompt (an empty one would start from the stationary distribution, which generation cannot
    # express: prompts need at least one token). Without EOS, exact search ranks sequences of exactly n tokens.
    source = MarkovSource(vocab_size, order, seed)
    model = source.as_model()  # float64 log-probabilities as logits, no KV cache, no block_size
    for prompt in ([0], [vocab_size - 1, 1, 2]):
        tokens, logprob = source.most_likely_continuation(prompt, n)
        hyp, _ = exact_search(model, prompt, max_new_tokens=n)
        assert hyp.tokens == prompt + tokens
        assert hyp.score == pytest.approx(logprob, abs=1e-9)


def test_exact_search_beats_or_ties_every_other_strategy():
    source = MarkovSource(6, 2, seed=7, concentration=1.0)
    model = source.as_model()
    prompt = [3, 4]
    hyp, _ = exact_search(model, prompt, max_new_tokens=6, eos_token_id=0)
    greedy_ids = greedy(model, prompt, max_new_tokens=6, eos_token_id=0)
    assert hyp.logprob >= sequence_logprob(model, prompt, greedy_ids[2:]) - 1e-12
    for h in beam_search(model, prompt, num_beams=3, max_new_tokens=6, eos_token_id=0, num_return_sequences=3,
                         length_penalty=0.0):
        assert hyp.logprob >= h.logprob - 1e-6


def test_beam_search_with_enough_beams_is_exact():
    # length_penalty=0 and early_stopping="never" is textbook beam search; with more beams than sequences
    # nothing is pruned, and its stopping rule is then an exact bound
    model = peaked_gpt(3, seed=11)
    exact, _ = exact_search(model, [2], max_new_tokens=4, eos_token_id=0)
    [best] = beam_search(model, [2], num_beams=81, max_new_tokens=4, eos_token_id=0, length_penalty=0.0,
                         early_stopping="never")
    assert best.tokens == exact.tokens and best.score == pytest.approx(exact.score, abs=1e-4)


def test_zero_new_tokens_and_the_budget_error():
    model = peaked_gpt(4, seed=0)
    hyp, tree = exact_search(model, [1, 2], max_new_tokens=0)
    assert hyp == Hypothesis([1, 2], 0.0, 0.0) and tree.results == [0] and tree.nodes[0].status == "finished"
    flat = GPT(GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=1, n_embd=8)).eval()  # near-uniform
    with pytest.raises(SearchBudgetExceeded, match=r"made 5 expansions \(max_expansions=5\)") as info:
        exact_search(flat, [1], max_new_tokens=6, max_expansions=5)
    assert "Raise max_expansions" in str(info.value) and isinstance(info.value, RuntimeError)
    assert info.value.expansions == 5 and len(info.value.tree.by_status("expanded")) == 5
    with pytest.raises(ValueError, match="max_expansions must be an integer >= 1"):
        exact_search(flat, [1], max_new_tokens=2, max_expansions=0)


# ---------------------------------------------------------------------------------------------- trees
def test_exact_search_tree_pops_prefixes_in_order_of_probability():
    model = peaked_gpt(4, seed=3)
    hyp, tree = exact_search(model, [1], max_new_tokens=4, eos_token_id=2)
    popped = [n for n in tree.nodes if n.parent is not None]
    logprobs = [n.logprob for n in popped]
    assert logprobs == sorted(logprobs, reverse=True)  # Dijkstra: costs come off the queue non-decreasing
    assert popped[-1].status == "finished" and tree.results == [popped[-1].id]
    assert [n.status for n in popped[:-1]] == ["expanded"] * (len(popped) - 1)
    assert tree.expansions == len(popped)  # the root and every popped prefix but the last
    path = tree.path(tree.results[0])
    assert [n.token for n in path[1:]] == hyp.tokens[1:] and path[0].parent is None


def test_greedy_tree_records_the_choice_and_the_runner_up():
    model = peaked_gpt(5, seed=2)
    tokens, tree = greedy(model, [0], max_new_tokens=5, return_tree=True)
    assert isinstance(tree, SearchTree) and tree.method == "greedy"
    assert tokens == greedy(model, [0], max_new_tokens=5)
    chain = tree.path(tree.results[0])
    assert [n.token for n in chain[1:]] == tokens[1:]
    assert [n.status for n in chain[1:]] == ["kept"] * 4 + ["finished"]
    for node in chain[:-1]:
        kids = tree.children(node.id)
        assert len(kids) == 2 and {k.status for k in kids} in ({"kept", "pruned"}, {"finished", "pruned"})
        assert max(kids, key=lambda k: k.logprob).status != "pruned"
    assert chain[-1].logprob == pytest.approx(sequence_logprob(model, [0], tokens[1:]), abs=1e-5)


def test_beam_tree_agrees_with_the_hypotheses():
    model = peaked_gpt(6, seed=4)
    K = 3
    hyps, tree = beam_search(model, [1, 2], num_beams=K, max_new_tokens=5, eos_token_id=0, num_return_sequences=K,
                             return_tree=True)
    assert hyps == beam_search(model, [1, 2], num_beams=K, max_new_tokens=5, eos_token_id=0, num_return_sequences=K)
    assert [tree.nodes[i].tokens for i in tree.results] == [tuple(h.tokens[2:]) for h in hyps]
    assert [tree.nodes[i].score for i in tree.results] == [h.score for h in hyps]
    assert all(tree.nodes[i].status == "finished" for i in tree.results)
    for step in range(1, 6):
        at_step = [n for n in tree.nodes if n.step == step]
        assert len(at_step) <= 2 * K and sum(n.status == "kept" for n in at_step) <= K
        for n in at_step:  # every candidate extends a beam kept at the step before
            assert tree.nodes[n.parent].status in ("kept", "expanded")
            assert n.logprob <= tree.nodes[n.parent].logprob + 1e-6  # log-probabilities only fall along a path


def test_plot_search_tree_draws_every_kind_of_tree():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmlab.text.tokenizer import ByteTokenizer

    model = peaked_gpt(256, seed=0, scale=0.3)
    _, beam_tree = beam_search(model, [72, 105], num_beams=2, max_new_tokens=3, return_tree=True)
    ax = plot_search_tree(beam_tree, tokenizer=ByteTokenizer())
    assert ax.get_title().startswith("beam search:") and len(ax.texts) == len(beam_tree.nodes)
    _, exact_tree = exact_search(peaked_gpt(3, seed=1), [0], max_new_tokens=3)
    fig, ax2 = plt.subplots()
    assert plot_search_tree(exact_tree, ax=ax2) is ax2
    _, big = greedy(model, [1], max_new_tokens=100, return_tree=True)  # 200 nodes: markers only
    assert len(plot_search_tree(big).texts) == 0
    plt.close("all")
    assert math.isfinite(sum(n.logprob for n in big.nodes))
