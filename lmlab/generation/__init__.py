"""Generating text: one engine (:mod:`~lmlab.generation.engine`), distribution warpers
(:mod:`~lmlab.generation.warp`), the decoding strategies (:mod:`~lmlab.generation.search`), self-speculative
greedy decoding of multi-token models (:mod:`~lmlab.generation.speculative`), the records of a search
(:mod:`~lmlab.generation.tree`) and measures of generated text (:mod:`~lmlab.generation.metrics`)."""

from lmlab.generation.engine import DecodeState, decode_one_token, prefill
from lmlab.generation.metrics import distinct_n
from lmlab.generation.search import beam_search, exact_search, greedy, sample, sample_batch
from lmlab.generation.speculative import SpeculativeStats, accept_drafts, speculative_greedy
from lmlab.generation.tree import Hypothesis, SearchBudgetExceeded, SearchNode, SearchTree
from lmlab.generation.warp import sample_next_token, warp_logits

__all__ = [
    "DecodeState",
    "prefill",
    "decode_one_token",
    "warp_logits",
    "sample_next_token",
    "greedy",
    "sample",
    "sample_batch",
    "beam_search",
    "exact_search",
    "speculative_greedy",
    "SpeculativeStats",
    "accept_drafts",
    "Hypothesis",
    "SearchNode",
    "SearchTree",
    "SearchBudgetExceeded",
    "distinct_n",
]
