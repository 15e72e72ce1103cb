"""Argument checks shared by the whole library: integers, numbers, token ids, a model's device, generators.

Each check either returns the value in a normalised form or raises a ``TypeError`` (wrong kind of value)
or ``ValueError`` (right kind, not allowed) whose message names the argument, says what was given and
what is allowed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    "is_int",
    "is_number",
    "check_int",
    "check_count",
    "check_number",
    "as_ids",
    "check_vocab",
    "model_device",
    "as_generator",
]


def is_int(value: object) -> bool:
    """True for a Python or NumPy integer (not a bool)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for a finite real Python or NumPy number (not a bool)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool) and math.isfinite(
        value
    )


def check_int(name: str, value: Any, minimum: int = 0, maximum: int | None = None) -> int:
    """``value`` as an int, if it is an integer in [minimum, maximum]; else a ValueError naming ``name``."""
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        allowed = f"an integer in [{minimum}, {maximum}]" if maximum is not None else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int, if it is an integer >= minimum: a TypeError for anything but an integer (bools
    and floats such as ``3.0`` included), a ValueError for an integer below ``minimum``."""
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    """``value`` as a float, if it is a finite number (>= minimum, or > 0 when ``positive``); else ValueError."""
    ok = is_number(value) and (minimum is None or value >= minimum) and (not positive or value > 0)
    if not ok:
        allowed = "a finite number" + (" > 0" if positive else "") + (f" >= {minimum}" if minimum is not None else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def as_ids(
    ids: Any, name: str = "ids", *, dims: tuple[int, ...] = (1, 2), device: torch.device | str | None = None
) -> torch.Tensor:
    """An int64 tensor of token ids from a tensor, a NumPy array or a sequence of ints.

    ``dims`` lists the allowed numbers of dimensions. A string is refused (encode it first), and so are
    float, complex and bool tensors. Tensors stay on their device unless ``device`` is given (lists go to
    ``device``, default the CPU). Values are not range-checked: see :func:`check_vocab`.
    """
    if isinstance(ids, str | bytes):
        raise TypeError(f"{name} must be token ids, not a string; encode the text with a tokenizer first")
    if isinstance(ids, torch.Tensor):
        t = ids.detach()
    else:
        try:
            arr = np.asarray(ids)
            if arr.size == 0:
                arr = arr.astype(np.int64)  # [] would otherwise be float64
            if arr.dtype == object:
                raise TypeError
            t = torch.as_tensor(arr)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a tensor or a sequence of ints, got {type(ids).__name__}") from err
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {t.dtype}")
    if t.dim() not in dims:
        allowed = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {allowed}, got shape {tuple(t.shape)}")
    if device is not None:
        t = t.to(device)
    return t.long()


def check_token_batch(idx: Any) -> torch.Tensor:
    """A model's input ids (B, T), checked: a non-empty 2-D tensor of integer ids. int16 and uint8 ids come
    back as int64 (nn.Embedding takes int32 and int64 only); others unchanged."""
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
    if idx.dim() != 2:
        raise ValueError(f"idx must have shape (B, T), got shape {tuple(idx.shape)}")
    if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
    if idx.shape[0] == 0 or idx.shape[1] == 0:
        raise ValueError(f"idx is empty (shape {tuple(idx.shape)}); give at least one token")
    return idx.long() if idx.dtype in (torch.int16, torch.uint8) else idx


def check_vocab(ids: torch.Tensor, vocab_size: int | None, name: str = "ids") -> None:
    """Raise a ValueError if a token id of ``ids`` lies outside [0, vocab_size) (None: only >= 0 is checked).

    This reads the ids' minimum and maximum, so on a GPU it waits for the device: call it where ids enter
    the library, never inside a model's forward pass.
    """
    if ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or (vocab_size is not None and hi >= vocab_size):
        bad = lo if lo < 0 else hi
        allowed = f"the vocabulary [0, {vocab_size})" if vocab_size is not None else "the ids >= 0"
        raise ValueError(f"{name} has token id {bad}, outside {allowed}")


def model_device(model: Any) -> torch.device:
    """The device of a model's first parameter, or of its first buffer; the CPU for a model with neither."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():  # e.g. MarkovLM keeps its tables as buffers and has no parameters
            return t.device
    return torch.device("cpu")


def as_generator(generator: torch.Generator | int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A ``torch.Generator``: the one given, a new one seeded with an int, or None (PyTorch's global one)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if not is_int(generator):
        raise TypeError(f"generator must be None, a torch.Generator or an int seed, got {type(generator).__name__}")
    return torch.Generator(device=device).manual_seed(int(generator))
