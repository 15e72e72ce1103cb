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

Exact comparisons: a student's function may return an object whose ``==`` is always true, a float or Tensor
subclass that overrides comparison, or a Tensor subclass whose ``__torch_function__`` answers anything.
Test cells compare through :func:`expect_equal` and :func:`expect_close`, which first turn the result into
plain data of exact built-in types (:func:`plain`) with functions captured when this module was imported
(the grading kernel imports it before any notebook code)::

    expect_close(mean([1, 2, 3]), 2.0)              # a float (or int) within rel 1e-9 of 2.0
    expect_close(cross_entropy(z, y), ref, rel=1e-5)  # a torch.Tensor of ref's shape and dtype
    expect_equal(answer_q1, "C")                    # exactly the str "C"

Compared outside the kernel: a test cell runs in the kernel that ran the student's code, so a student's
function can still reach into it (rebind a name of the test cell through its caller's frame, say). When
``nbgrader autograde`` runs a notebook, :func:`expect_equal`, :func:`expect_close` and :func:`reported` also
send the student's result, as plain data, to the grader, which compares it with the result of the
instructor's solution on the same test (``course/reference.py``, ``course/execute.py``), in its own
process. A test whose results are missing, extra or different scores 0::

    _out = reported(greedy_decode(model, prompt, 5))   # exact(), and the grader compares it too
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

from lmlab.results import RESULT_MIME, VARIANT_VARIABLE, compare_results, decode_plain

__all__ = [
    "exact",
    "reported",
    "RESULT_MIME",
    "encode_plain",
    "decode_plain",
    "compare_results",
    "expect_equal",
    "expect_close",
    "plain",
    "grading_mode",
    "VARIANT_VARIABLE",
    "course_variant",
    "variant_seed",
    "variant_generator",
    "forbid",
]


# captured at import, before any notebook code can replace them
_type, _float, _int, _str, _bool, _len, _isinstance = type, float, int, str, bool, len, isinstance
_list, _tuple, _dict, _zip, _abs, _repr = list, tuple, dict, zip, abs, repr
_isclose = __import__("math").isclose
_Tensor, _tolist, _shape = torch.Tensor, torch.Tensor.tolist, torch.Tensor.size
_detach, _cpu = torch.Tensor.detach, torch.Tensor.cpu
_PLAIN_SCALARS = (int, float, str, bool, type(None), bytes)
_environ_get, _hex = os.environ.get, float.hex
try:  # the kernel's display channel, as it is before any notebook code runs
    from IPython.core.display_functions import publish_display_data as _publish
except ImportError:  # pragma: no cover -- IPython is a dependency of the course, not of the library
    _publish = None


def plain(value: Any, what: str = "the result") -> Any:
    """``value`` as plain data of exact built-in types, or an AssertionError that says what it is instead.

    Accepted: ``int``, ``float``, ``str``, ``bool``, ``None``, ``bytes``; ``list``/``tuple`` of accepted
    values (kept as list/tuple); ``dict`` with ``str`` keys; a ``torch.Tensor`` (exactly that type, no
    subclass) becomes ``("tensor", dtype name, shape tuple, nested list)``; a NumPy scalar or array (NumPy's
    own types) becomes its Python number or ``("ndarray", dtype name, shape, nested list)``.
    """
    t = _type(value)
    if t in _PLAIN_SCALARS:
        return value
    if t is _list or t is _tuple:
        items = [plain(v, what) for v in value]
        return items if t is _list else _tuple(items)
    if t is _dict:
        out = {}
        for k, v in _dict.items(value):
            if _type(k) is not _str:
                raise AssertionError(f"{what}: dict keys must be str, got {_type(k).__name__}")
            out[k] = plain(v, what)
        return out
    if t is _Tensor:
        data = _cpu(_detach(value))
        return ("tensor", _str(value.dtype), _tuple(_shape(data)), _tolist(data))
    module = getattr(t, "__module__", "")
    if module == "numpy":
        import numpy

        if t is numpy.ndarray:
            return ("ndarray", _str(value.dtype), _tuple(value.shape), value.tolist())
        if _isinstance(value, numpy.generic):  # numpy's own scalar types (a subclass has another module)
            return value.item()
    raise AssertionError(f"{what} must be a plain value (int, float, str, bool, list, tuple, dict, "
                         f"torch.Tensor), got an object of type {t.__module__}.{t.__qualname__}")


def exact(value: Any, what: str = "the result") -> Any:
    """``value`` itself, once :func:`plain` has checked that it is made of exact built-in types (a
    ``torch.Tensor`` and not a subclass, a ``list`` and not a subclass, ...). Test cells wrap each call of
    the student's function in it, so that an object that pretends to equal anything fails at once::

        _out = exact(greedy_decode(model, prompt, 5))
    """
    plain(value, what)
    return value


def encode_plain(value: Any) -> Any:
    """Plain data (see :func:`plain`) as JSON that keeps every type: ``["i", 3]``, ``["f", "0x1.8p+1"]`` (a
    float as ``float.hex``, so exact, NaN and infinities included), ``["s", ...]``, ``["b", true]``,
    ``["n"]``, ``["y", hex]`` (bytes), ``["l", [...]]``, ``["t", [...]]``, ``["d", {...}]``."""
    t = _type(value)
    if t is _bool:
        return ["b", value]
    if t is _int:
        return ["i", value]
    if t is _float:
        return ["f", _hex(value)]
    if t is _str:
        return ["s", value]
    if value is None:
        return ["n"]
    if t is bytes:
        return ["y", value.hex()]
    if t is _list or t is _tuple:
        return ["l" if t is _list else "t", [encode_plain(v) for v in value]]
    if t is _dict:
        return ["d", {k: encode_plain(v) for k, v in _dict.items(value)}]
    raise TypeError(f"encode_plain takes plain data (see plain()), got {t.__name__}")


def _send(value: Any, kind: str, rel: float, abs: float, what: str) -> None:
    """Send a test's result (plain data) to the grader, while ``nbgrader autograde`` runs the notebook."""
    if _publish is None or _environ_get("NBGRADER_EXECUTION") != "autograde":
        return
    record = {"value": encode_plain(value), "kind": kind, "rel": _float(rel), "abs": _float(abs), "what": _str(what)}
    _publish({RESULT_MIME: record, "text/plain": f"<{what}: sent to the grader>"})


def reported(value: Any, what: str = "the result", *, rel: float = 1e-5, abs: float = 1e-8) -> Any:
    """``value`` itself, once :func:`exact` has checked its types; when ``nbgrader autograde`` runs the
    notebook, it is also sent to the grader, who compares it in its own process with what the instructor's
    solution gave in the same place of the same test (numbers within ``rel``/``abs``, ``math.isclose``;
    everything else exactly).

    Report only what every correct solution computes the same way: a value a correct solution could draw
    differently from a random generator is checked in the test cell, not reported.
    """
    t = _type(rel), _type(abs)
    if not all(k in (_int, _float) for k in t) or rel < 0 or abs < 0:
        raise ValueError(f"rel and abs must be numbers >= 0, got rel={rel!r}, abs={abs!r}")
    data = plain(value, what)
    _send(data, "close", rel, abs, what)
    return value


def _numbers(x: Any, what: str) -> list:
    """Flatten plain data into its numbers (bool counts as a number only where the other side has one)."""
    if _type(x) in (_int, _float, _bool):
        return [x]
    if _type(x) in (_list, _tuple):
        if _len(x) == 4 and x[0] in ("tensor", "ndarray") and _type(x[2]) is _tuple:
            return _numbers(x[3], what)
        out = []
        for v in x:
            out += _numbers(v, what)
        return out
    raise AssertionError(f"{what}: expected numbers, got {_type(x).__name__}")


def expect_equal(actual: Any, expected: Any, what: str = "the result") -> None:
    """Fail unless ``actual`` is exactly ``expected``: same plain data, same types (see :func:`plain`)."""
    a, e = plain(actual, what), plain(expected, "the expected value")
    _send(a, "equal", 0.0, 0.0, what)
    if _type(a) is not _type(e) or _repr(a) != _repr(e):
        raise AssertionError(f"{what}: expected {_repr(e)[:200]}, got {_repr(a)[:200]}")


def expect_close(actual: Any, expected: Any, rel: float = 1e-9, abs: float = 0.0, what: str = "the result") -> None:
    """Fail unless ``actual`` is a number (or tensor, list) of ``expected``'s kind and shape whose every
    value is within ``rel``/``abs`` of the expected one (``math.isclose`` as captured at import).

    A float expected accepts an ``int`` or ``float``; a tensor expected needs a ``torch.Tensor`` of the same
    dtype and shape.
    """
    a, e = plain(actual, what), plain(expected, "the expected value")
    _send(a, "close", rel, abs, what)
    if _type(e) is _float or _type(e) is _int:
        if _type(a) not in (_int, _float):
            raise AssertionError(f"{what} must be a number (int or float), got {_type(a).__name__}")
    elif _type(e) is _tuple and _len(e) == 4 and e[0] in ("tensor", "ndarray"):
        if _type(a) is not _tuple or _len(a) != 4 or a[0] != e[0]:
            raise AssertionError(f"{what} must be a {'torch.Tensor' if e[0] == 'tensor' else 'numpy array'}")
        if a[1] != e[1]:
            raise AssertionError(f"{what} must have dtype {e[1]}, got {a[1]}")
        if a[2] != e[2]:
            raise AssertionError(f"{what} must have shape {e[2]}, got {a[2]}")
    elif _type(a) is not _type(e):
        raise AssertionError(f"{what} must be a {_type(e).__name__}, got {_type(a).__name__}")
    xs, ys = _numbers(a, what), _numbers(e, "the expected value")
    if _len(xs) != _len(ys):
        raise AssertionError(f"{what}: expected {_len(ys)} numbers, got {_len(xs)}")
    for i, (x, y) in enumerate(_zip(xs, ys)):
        if not _isclose(_float(x), _float(y), rel_tol=rel, abs_tol=abs):
            where = f" at position {i}" if _len(ys) > 1 else ""
            raise AssertionError(f"{what}: expected {y!r}{where}, got {x!r}")


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
