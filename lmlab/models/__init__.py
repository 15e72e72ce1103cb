"""Language models: the GPT (:mod:`lmlab.models.gpt`) and its multi-token version
(:mod:`lmlab.models.multitoken`), a recurrent baseline (:mod:`lmlab.models.rnn`), a bigram
table (:mod:`lmlab.models.bigram`), and the decoding state they keep between generation steps
(:mod:`lmlab.models.cache`)."""

from lmlab.models.bigram import BigramLM, bigram_counts
from lmlab.models.cache import DecodeCache, KVCache, SlidingWindowCache, StateCache
from lmlab.models.gpt import ATTENTION_IMPLS, ATTENTION_KINDS, GPT, PRESETS, GPTConfig
from lmlab.models.multitoken import MultiTokenGPT, OutputHead
from lmlab.models.rnn import RNNLM, RNNConfig

__all__ = [
    "GPT",
    "GPTConfig",
    "PRESETS",
    "ATTENTION_KINDS",
    "ATTENTION_IMPLS",
    "MultiTokenGPT",
    "OutputHead",
    "RNNLM",
    "RNNConfig",
    "BigramLM",
    "bigram_counts",
    "DecodeCache",
    "KVCache",
    "SlidingWindowCache",
    "StateCache",
]
