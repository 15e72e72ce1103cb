"""lmlab: a small GPT, tokenizers, corpora, likelihood, decoding and training for learning how LLMs work."""

from importlib.metadata import PackageNotFoundError, version

from lmlab.model import GPT, GPTConfig

try:
    __version__ = version("lmlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["GPT", "GPTConfig", "__version__"]
