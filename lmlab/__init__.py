"""lmlab: a small GPT, tokenizers, corpora, likelihood, decoding and training for learning how LLMs work.

The names below are loaded when first used (PEP 562), so that ``import lmlab.kernelguard`` or
``lmlab.results``, which the course's grader imports in every grading process, does not import torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmlab.models import GPT, GPTConfig
    from lmlab.text import ByteTokenizer, CharTokenizer, MarkovSource, TokenData, load_corpus, load_data
    from lmlab.train import TrainConfig, Trainer

try:
    __version__ = version("lmlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

# public name -> the module that defines it
_HOME = {
    "GPT": "lmlab.models",
    "GPTConfig": "lmlab.models",
    "ByteTokenizer": "lmlab.text",
    "CharTokenizer": "lmlab.text",
    "MarkovSource": "lmlab.text",
    "TokenData": "lmlab.text",
    "load_corpus": "lmlab.text",
    "load_data": "lmlab.text",
    "TrainConfig": "lmlab.train",
    "Trainer": "lmlab.train",
}

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


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'lmlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
