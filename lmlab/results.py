"""The grader's side of a test's results: decoding the plain data a test cell sent, and comparing it with
the reference solution's (:func:`compare_results`). Used in the grader's own process, which never imports
torch; the kernel's side (``reported``, ``expect_equal``, ``expect_close``, ``encode_plain``) is
:mod:`lmlab.grading`, which re-exports these names.
"""

from __future__ import annotations

from math import isclose as _isclose
from typing import Any

__all__ = ["RESULT_MIME", "VARIANT_VARIABLE", "decode_plain", "compare_results"]

RESULT_MIME = "application/vnd.lmlab.result+json"  # a test's result on its way to the grader
VARIANT_VARIABLE = "LMLAB_COURSE_VARIANT"  # the course setting that selects a private variant (an int seed)


def decode_plain(data: Any) -> Any:
    """The plain data that :func:`lmlab.grading.encode_plain` wrote; a TypeError for anything it could
    not have written."""
    if not isinstance(data, list) or not data or data[0] not in ("b", "i", "f", "s", "n", "y", "l", "t", "d"):
        raise TypeError(f"not encoded plain data: {str(data)[:80]}")
    tag, rest = data[0], data[1:]
    if tag == "n":
        return None
    if len(rest) != 1:
        raise TypeError(f"not encoded plain data: {str(data)[:80]}")
    (body,) = rest
    kinds = {"b": bool, "i": int, "f": str, "s": str, "y": str, "l": list, "t": list, "d": dict}
    if type(body) is not kinds[tag]:
        raise TypeError(f"not encoded plain data: {str(data)[:80]}")
    if tag == "f":
        return float.fromhex(body)
    if tag == "y":
        return bytes.fromhex(body)
    if tag in ("l", "t"):
        items = [decode_plain(v) for v in body]
        return items if tag == "l" else tuple(items)
    if tag == "d":
        return {str(k): decode_plain(v) for k, v in body.items()}
    return body


def compare_results(results: list[dict], reference: list[dict]) -> str | None:
    """Why a test's results (as sent by :func:`lmlab.grading.reported`, :func:`~lmlab.grading.expect_equal`,
    :func:`~lmlab.grading.expect_close`) differ
    from the reference ones, the instructor's solution's on the same test; None when they agree.

    The reference decides the kind of comparison and the tolerances; the reasons never show a reference
    value (hidden tests send results too).
    """
    if len(results) != len(reference):
        return (f"the test sent {len(results)} result(s) to the grader where the instructor's solution sends "
                f"{len(reference)}")
    for i, (got, ref) in enumerate(zip(results, reference, strict=True), start=1):
        label = f"result {i} ({str(ref.get('what', 'the result'))[:80]})"
        try:
            a, r = decode_plain(got.get("value") if isinstance(got, dict) else None), decode_plain(ref["value"])
        except TypeError:
            return f"{label} did not reach the grader as plain data"
        close = ref.get("kind") == "close"
        why = _differs(a, r, close, float(ref.get("rel", 0.0)), float(ref.get("abs", 0.0)))
        if why:
            return f"{label} differs from the reference solution's: {why}"
    return None


def _differs(a: Any, r: Any, close: bool, rel: float, abs_: float) -> str | None:
    """How plain value ``a`` differs from plain value ``r``, without showing ``r``; None when they agree."""
    numbers = (int, float)
    if close and type(r) in numbers and type(a) in numbers and type(a) is not bool and type(r) is not bool:
        if a != a and r != r:  # both NaN
            return None
        if not _isclose(float(a), float(r), rel_tol=rel, abs_tol=abs_):
            return f"got {a!r}, which is not within the tolerance"
        return None
    if type(a) is not type(r):
        return f"got type {type(a).__name__} where the reference has type {type(r).__name__}"
    if type(r) in (list, tuple):
        if len(a) != len(r):
            return f"got {len(a)} items where the reference has {len(r)}"
        if type(r) is tuple and len(r) == 4 and r[0] in ("tensor", "ndarray") and type(r[2]) is tuple:
            if a[:3] != r[:3]:
                return f"got a {a[0]} of dtype {a[1]} and shape {a[2]}, where the reference's is {r[1]}, {r[2]}"
            why = _differs(a[3], r[3], close, rel, abs_)
            return f"in its values {why}" if why else None
        for j, (x, y) in enumerate(zip(a, r, strict=True)):
            why = _differs(x, y, close, rel, abs_)
            if why:
                return f"at [{j}]: {why}"
        return None
    if type(r) is dict:
        if sorted(a) != sorted(r):
            return "got other keys than the reference"
        for k in r:
            why = _differs(a[k], r[k], close, rel, abs_)
            if why:
                return f"at [{k!r}]: {why}"
        return None
    if type(r) is float and a != a and r != r:
        return None
    return None if a == r else "got another value"
