"""lmlab: a small GPT, tokenizers, corpora, likelihood, decoding and training for learning how LLMs work."""

from importlib.metadata import PackageNotFoundError, version

from lmlab.models import GPT, GPTConfig
from lmlab.text import ByteTokenizer, CharTokenizer, MarkovSource, TokenData, load_corpus, load_data
from lmlab.train import TrainConfig, Trainer

try:
    __version__ = version("lmlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "GPT",
    "GPTConfig",
    "ByteTokenizer",
    "CharTokenizer",
    "MarkovSource",
    "TokenData",
    "TrainConfig",
    "Trainer",
    "load_corpus",
    "load_data",
    "__version__",
]
