"""Text to token ids: tokenizers (:mod:`lmlab.text.tokenizer`), corpora and token data (:mod:`lmlab.text.data`),
languages whose true distribution is known, with associative recall tasks (:mod:`lmlab.text.synthetic`),
and path-star graphs, a planning task (:mod:`lmlab.text.pathstar`)."""

from lmlab.text.data import TokenData, load_corpus, load_data
from lmlab.text.pathstar import PathStar, PathStarData, pathstar_accuracy
from lmlab.text.synthetic import (
    AssociativeRecall,
    MarkovSource,
    RecallData,
    markov_token_data,
    recall_accuracy,
    recall_accuracy_by_distance,
)
from lmlab.text.tokenizer import ByteTokenizer, CharTokenizer, get_tokenizer, load_tokenizer

__all__ = [
    "ByteTokenizer",
    "CharTokenizer",
    "get_tokenizer",
    "load_tokenizer",
    "TokenData",
    "load_corpus",
    "load_data",
    "MarkovSource",
    "markov_token_data",
    "AssociativeRecall",
    "RecallData",
    "recall_accuracy",
    "recall_accuracy_by_distance",
    "PathStar",
    "PathStarData",
    "pathstar_accuracy",
]
