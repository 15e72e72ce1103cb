"""Grading mode: lessons run shorter when nbgrader executes them.

nbgrader 0.9 sets the environment variable ``NBGRADER_EXECUTION`` while it runs a notebook's kernel:
``"autograde"`` during ``nbgrader autograde`` and ``"validate"`` during ``nbgrader validate`` and the
Validate button of nbgrader's JupyterLab extension (``nbgrader/converters/autograde.py``,
``nbgrader/validator.py``). It is unset otherwise, also in ``generate_assignment``, which runs no code.

A lesson asks ``grading_mode()`` to shrink what only takes time, never what its tests check::

    from lmlab.grading import grading_mode
    steps = 30 if grading_mode() else 600

To try a notebook in grading mode yourself, start Jupyter with ``NBGRADER_EXECUTION=autograde``.

Course variants: an instructor who grades from a private copy sets the course setting
``LMLAB_COURSE_VARIANT`` (an integer seed; unset or 0 is the public variant). ``python -m course
questions`` then permutes the options of every concept question by it, and hidden tests draw their random
inputs from :func:`variant_generator`, so neither the answer letters nor the hidden inputs are those of the
public repository::

    from lmlab.grading import variant_generator
    g = variant_generator("cross_entropy")      # one stream per exercise
    logits = torch.randn(5, 7, generator=g)

No shortcuts: an exercise that asks for something PyTorch or lmlab already provides names what may not be
used, and its tests, visible and hidden, call the student's function inside :func:`forbid`::

    with forbid(F.cross_entropy, F.log_softmax, torch.logsumexp, torch.Tensor.logsumexp):
        mine = cross_entropy(logits, targets)
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = [
    "grading_mode",
    "VARIANT_VARIABLE",
    "course_variant",
    "variant_seed",
    "variant_generator",
    "forbid",
]

VARIANT_VARIABLE = "LMLAB_COURSE_VARIANT"


def grading_mode() -> bool:
    """True while nbgrader executes the notebook (autograde or validate), False when a person runs it."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def course_variant() -> int:
    """The course variant: the integer in ``LMLAB_COURSE_VARIANT``, 0 (the public variant) when unset."""
    raw = os.environ.get(VARIANT_VARIABLE, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{VARIANT_VARIABLE} must be an integer >= 0 (0 is the public variant), got {raw!r}")
    return value


def variant_seed(name: str, variant: int | None = None) -> int:
    """A 63-bit seed for the random inputs of the hidden test ``name`` in a course variant.

    ``variant`` defaults to :func:`course_variant`. The seed is a hash of both (SHA-256, so the same on
    every machine and Python version): another name or variant gives an unrelated stream.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string naming the test, got {name!r}")
    if variant is None:
        variant = course_variant()
    if isinstance(variant, bool) or not isinstance(variant, int) or variant < 0:
        raise ValueError(f"variant must be an integer >= 0, got {variant!r}")
    digest = hashlib.sha256(f"{variant}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def variant_generator(name: str, variant: int | None = None) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`variant_seed` ``(name, variant)``."""
    return torch.Generator().manual_seed(variant_seed(name, variant))


def _name(f: Any) -> str:
    """``torch.Tensor.log_softmax``, ``torch.nn.functional.cross_entropy``, ``lmlab.generation.search.greedy``."""
    if getattr(f, "__objclass__", None) is torch._C.TensorBase:  # a Tensor method
        return f"torch.Tensor.{f.__name__}"
    module = getattr(f, "__module__", None) or ""
    qual = getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or repr(f)
    if qual.startswith("_VariableFunctionsClass."):  # torch.logsumexp and the other C functions of torch
        module, qual = "torch", f.__name__
    elif module.startswith("torch._C._"):  # torch.special.logsumexp is torch._C._special.special_logsumexp
        sub = module.removeprefix("torch._C._")
        module, qual = f"torch.{sub}", qual.removeprefix(f"{sub}_")
    return f"{module}.{qual}" if module else qual


class _Forbidden(TorchFunctionMode):
    """Sees every torch function and Tensor method called while it is active (``__torch_function__``)."""

    def __init__(self, banned: dict[Any, str], calls: list[str]) -> None:
        super().__init__()
        self.banned, self.calls = banned, calls

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = self.banned.get(func)
        if name is not None:
            self.calls.append(name)
            raise AssertionError(f"{name} is not allowed here: write it yourself")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def forbid(*functions: Callable[..., Any]) -> Iterator[list[str]]:
    """Inside the block, a call of any of ``functions``, directly or through other code, fails the test.

    ``functions`` are torch functions and Tensor methods (``F.cross_entropy``, ``torch.logsumexp``,
    ``torch.Tensor.log_softmax``: caught by a ``TorchFunctionMode``, whatever name the student imported
    them under) and Python functions (``lmlab.generation.greedy``: caught by their code object, through
    ``sys.setprofile``). The call raises an AssertionError naming the function; if the student's code
    catches it, leaving the block raises it again. Yields the list of forbidden calls seen so far.
    """
    if not functions:
        raise ValueError("forbid needs at least one function")
    banned: dict[Any, str] = {}
    codes: dict[Any, str] = {}
    for f in functions:
        if not callable(f):
            raise TypeError(f"forbid takes functions, got {f!r}")
        banned[f] = _name(f)
        code = getattr(inspect.unwrap(f), "__code__", None)  # a decorated function's own code
        if code is not None:
            codes[code] = banned[f]
    calls: list[str] = []
    previous = sys.getprofile()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in codes:
            calls.append(codes[frame.f_code])
            raise AssertionError(f"{codes[frame.f_code]} is not allowed here: write it yourself")
        if previous is not None:
            previous(frame, event, arg)

    if codes:
        sys.setprofile(profile)  # (an exception raised here also switches the profile function off)
    try:
        with _Forbidden(banned, calls):
            yield calls
    finally:
        if codes:
            sys.setprofile(previous)
    if calls:
        raise AssertionError(f"{calls[0]} is not allowed here: write it yourself")
