"""What a training run costs: parameters and FLOPs.

The scaling-law papers count the parameters ``N`` of a model and the training compute ``C`` in FLOPs.
``C ≈ 6 N D`` for ``D`` training tokens (Kaplan et al. 2020, section 2.1: 2 FLOPs per weight per token
forward, 4 backward), with ``N`` the non-embedding parameters in Kaplan et al. and all parameters in
Hoffmann et al. (2022). :func:`exact_training_flops` adds what 6ND leaves out, the attention scores and
weighted sums, from the model's own ``flops_per_token``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from lmlab.checks import check_int, is_number
from lmlab.models import GPT, RNNLM, GPTConfig, RNNConfig

__all__ = ["param_count", "training_flops", "exact_training_flops"]


def _as_model(model_or_config: Any) -> nn.Module:
    """A model as given, or one built from a config on the meta device (shapes only: no memory, no init)."""
    if isinstance(model_or_config, GPT | RNNLM):
        return model_or_config
    if isinstance(model_or_config, GPTConfig | RNNConfig):
        with torch.device("meta"):
            return GPT(model_or_config) if isinstance(model_or_config, GPTConfig) else RNNLM(model_or_config)
    raise TypeError(
        f"expected an lmlab GPT or RNNLM, or a GPTConfig or RNNConfig, got {type(model_or_config).__name__}"
    )


def param_count(model_or_config: Any, non_embedding: bool = True) -> int:
    """Parameters of a GPT or RNNLM (or of the one a config builds), shared tensors counted once.

    ``non_embedding=True`` leaves out the token and position embedding tables, as Kaplan et al. (2020,
    section 2.1) count N; ``False`` counts every parameter, as Hoffmann et al. (2022) do. At small scale the
    embeddings are a large share of the model, so the choice moves a fitted exponent (Pearce & Song 2024).
    """
    if not isinstance(non_embedding, bool):
        raise TypeError(f"non_embedding must be True or False, got {non_embedding!r}")
    return int(_as_model(model_or_config).num_params(non_embedding=non_embedding))


def _check_positive(name: str, value: Any) -> float:
    if not is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def training_flops(N: float, D: float) -> float:
    """``6 N D``: training FLOPs of ``N`` parameters over ``D`` tokens (Kaplan et al. 2020, section 2.1)."""
    return 6.0 * _check_positive("N", N) * _check_positive("D", D)


def exact_training_flops(model_or_config: Any, tokens: int, context: int | None = None) -> float:
    """Training FLOPs of ``tokens`` tokens, read with ``context`` tokens per sequence (default the model's
    block size; an RNN's cost does not depend on it): ``tokens * model.flops_per_token(context)``, which for
    a GPT is ``6N + 12 L d T`` per token (the matmul weights, plus the attention scores and weighted sum;
    Chowdhery et al. 2022, appendix B)."""
    check_int("tokens", tokens, 1)
    model = _as_model(model_or_config)
    if context is not None:
        check_int("context", context, 1)
    return float(tokens) * float(model.flops_per_token(context))
