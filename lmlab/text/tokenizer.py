"""Tokenizers: turn text into integer token ids and back.

Two simple, exact schemes:

- :class:`CharTokenizer`: one token per character, the vocabulary being the sorted distinct characters of a
  training text (Karpathy's char-rnn). Small vocabulary, but characters outside it need a policy.
- :class:`ByteTokenizer`: one token per UTF-8 byte, vocabulary 256. Every string can be encoded; a
  character outside ASCII costs 2 to 4 tokens.

Both save to and load from a small JSON file with a ``"type"`` field, so :func:`load_tokenizer` can read
either kind back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from lmlab.fileio import atomic_open

__all__ = [
    "ByteTokenizer",
    "CharTokenizer",
    "Tokenizer",
    "TOKENIZER_KINDS",
    "UNKNOWN_CHAR",
    "UNKNOWN_POLICIES",
    "get_tokenizer",
    "load_tokenizer",
]

TOKENIZER_KINDS = ("char", "byte")
UNKNOWN_POLICIES = (None, "replace", "skip")  # what CharTokenizer.encode does with unknown characters
UNKNOWN_CHAR = "\ufffd"  # the Unicode replacement character, the reserved unknown token of unknown="replace"
DECODE_ERRORS = ("replace", "strict")  # how ByteTokenizer.decode treats bytes that are not valid UTF-8
FORMAT_VERSION = 1  # version of the JSON file written by save()


@runtime_checkable
class Tokenizer(Protocol):
    """What the rest of lmlab needs from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Any) -> str: ...


# ---------------------------------------------------------------------------------------------- helpers
def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        hint = ""
        if isinstance(text, bytes | bytearray):
            hint = " (decode bytes to str first, e.g. data.decode('utf-8'))"
        raise TypeError(f"encode takes a str, got {type(text).__name__}{hint}")
    return text


def _as_id_list(ids: Any, vocab_size: int) -> list[int]:
    """Token ids as a list of Python ints, from a list/tuple of ints or a 0-D/1-D integer tensor or array."""
    if isinstance(ids, str | bytes | bytearray):
        raise TypeError(f"decode takes token ids (a list of ints or a 1-D tensor), got {type(ids).__name__}")
    if isinstance(ids, torch.Tensor | np.ndarray):
        is_int = (
            not ids.is_floating_point() and not ids.is_complex() and ids.dtype != torch.bool
            if isinstance(ids, torch.Tensor)
            else np.issubdtype(ids.dtype, np.integer)
        )
        if not is_int:
            raise TypeError(f"decode needs integer token ids, got {type(ids).__name__} of dtype {ids.dtype}")
        if ids.ndim > 1:
            raise ValueError(f"decode takes a 0-D or 1-D sequence of ids, got shape {tuple(ids.shape)}")
        out = ids.reshape(-1).tolist()
    elif isinstance(ids, int | np.integer) and not isinstance(ids, bool):
        raise TypeError(f"decode takes a sequence of ids; wrap a single id in a list: decode([{int(ids)}])")
    else:
        try:
            out = list(ids)
        except TypeError:
            raise TypeError(f"decode wants a list of ints or 1-D tensor, got {type(ids).__name__}") from None
        for i in out:
            if isinstance(i, bool) or not isinstance(i, int | np.integer):
                raise TypeError(f"token ids must be ints, got {i!r} of type {type(i).__name__}")
        out = [int(i) for i in out]
    if out:
        lo, hi = min(out), max(out)
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"token id {lo if lo < 0 else hi} is outside the vocabulary [0, {vocab_size})")
    return out


def _read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{os.fspath(path)}: not a tokenizer file, it is not valid JSON ({err})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{os.fspath(path)}: not a tokenizer file, it holds a JSON {type(d).__name__}")
    if d.get("type") not in TOKENIZER_KINDS:
        raise ValueError(
            f"{os.fspath(path)}: not a tokenizer file, its 'type' is {d.get('type')!r}; "
            f"expected one of {TOKENIZER_KINDS}"
        )
    return d


def _write_json(path: str | os.PathLike[str], d: dict[str, Any]) -> None:
    with atomic_open(path, text=True) as f:
        json.dump(d, f, indent=1)  # ensure_ascii: any str, lone surrogates included, survives the trip
        f.write("\n")


# ---------------------------------------------------------------------------------------------- char
class _SavedAsJson:
    """``save``/``load`` for tokenizers that describe themselves with a ``to_dict()`` method."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer to ``path`` as JSON (atomically: a temporary file, then a rename)."""
        _write_json(path, self.to_dict())  # type: ignore[attr-defined]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """Read a tokenizer written by :meth:`save`; ValueError if the file holds another kind."""
        tok = load_tokenizer(path)
        if not isinstance(tok, cls):
            what = type(tok).__name__
            raise ValueError(f"{os.fspath(path)} holds a {what}, not a {cls.__name__}; use load_tokenizer")
        return tok


@dataclass(eq=True)
class CharTokenizer(_SavedAsJson):
    """One token per character; token id ``i`` is the character ``chars[i]``.

    Build one with :meth:`from_text`. ``unknown`` decides what :meth:`encode` does with a character that
    is not in the vocabulary:

    - ``None`` (default): raise ``ValueError`` naming the character and its position;
    - ``"replace"``: map it to a reserved unknown token, the character ``UNKNOWN_CHAR`` ("\\ufffd"), which
      is appended to the vocabulary (if the text did not already hold it) and so adds one to ``vocab_size``;
    - ``"skip"``: drop it.
    """

    chars: tuple[str, ...]  # the vocabulary: chars[i] is token i
    unknown: str | None = None  # unknown-character policy, one of UNKNOWN_POLICIES
    _stoi: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {self.unknown!r}")
        if isinstance(self.chars, str):
            self.chars = tuple(self.chars)
        if not isinstance(self.chars, Sequence) or not self.chars:
            raise ValueError("a CharTokenizer needs a non-empty sequence of characters")
        for c in self.chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"every vocabulary entry must be a single character, got {c!r}")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("the vocabulary has repeated characters; each character must appear once")
        self.chars = tuple(self.chars)
        if self.unknown == "replace" and UNKNOWN_CHAR not in self.chars:
            self.chars = self.chars + (UNKNOWN_CHAR,)
        self._stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str, *, unknown: str | None = None) -> CharTokenizer:
        """A tokenizer whose vocabulary is the sorted distinct characters of ``text``."""
        text = _check_text(text)
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(tuple(sorted(set(text))), unknown=unknown)

    @property
    def vocab_size(self) -> int:
        """Number of token ids (distinct characters, plus the unknown token with unknown="replace")."""
        return len(self.chars)

    @property
    def unknown_id(self) -> int | None:
        """Id of the unknown token with unknown="replace", else None."""
        return self._stoi[UNKNOWN_CHAR] if self.unknown == "replace" else None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, one per character (fewer with unknown="skip")."""
        text = _check_text(text)
        stoi = self._stoi
        if self.unknown == "replace":
            unk = stoi[UNKNOWN_CHAR]
            return [stoi.get(c, unk) for c in text]
        if self.unknown == "skip":
            return [stoi[c] for c in text if c in stoi]
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pos, c = next((i, c) for i, c in enumerate(text) if c not in stoi)
            raise ValueError(
                f"character {c!r} (U+{ord(c):04X}) at position {pos} is not in the vocabulary of "
                f"{self.vocab_size} characters; build the tokenizer from text that contains it, or allow "
                f"unknown characters: CharTokenizer.from_text(text, unknown='replace') maps them to "
                "U+FFFD, unknown='skip' drops them"
            ) from None

    def decode(self, ids: Any) -> str:
        """The text of token ``ids`` (a list of ints, or a 0-D/1-D integer tensor or array)."""
        return "".join([self.chars[i] for i in _as_id_list(ids, self.vocab_size)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "char",
            "format_version": FORMAT_VERSION,
            "unknown": self.unknown,
            "chars": list(self.chars),
        }


    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unknown={self.unknown!r})"


# ---------------------------------------------------------------------------------------------- byte
@dataclass(eq=True)
class ByteTokenizer(_SavedAsJson):
    """One token per UTF-8 byte: vocabulary 256, and every string round-trips.

    :meth:`decode` of a byte sequence that is not valid UTF-8 (say, a character cut in the middle by
    sampling) replaces each bad piece with "\\ufffd" by default; pass ``errors="strict"`` to get a
    ``ValueError`` instead.
    """

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text`` as token ids in [0, 256)."""
        text = _check_text(text)
        try:
            return list(text.encode("utf-8"))
        except UnicodeEncodeError as err:  # lone surrogates, e.g. from errors="surrogateescape"
            raise ValueError(
                f"character {text[err.start]!r} at position {err.start} cannot be encoded as UTF-8 "
                "(a lone surrogate); clean the text first"
            ) from None

    def decode(self, ids: Any, *, errors: str = "replace") -> str:
        """Text of the bytes ``ids``; ``errors``: "replace" (default: bad bytes become U+FFFD) or "strict"."""
        if errors not in DECODE_ERRORS:
            raise ValueError(f"errors must be one of {DECODE_ERRORS}, got {errors!r}")
        data = bytes(_as_id_list(ids, 256))
        try:
            return data.decode("utf-8", errors=errors)
        except UnicodeDecodeError as err:
            raise ValueError(
                f"bytes {data[err.start:err.end]!r} at position {err.start} are not valid UTF-8 "
                f"({err.reason}); use errors='replace' to decode them as '\\ufffd'"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "byte", "format_version": FORMAT_VERSION}



# ---------------------------------------------------------------------------------------------- factories
def load_tokenizer(path: str | os.PathLike[str]) -> CharTokenizer | ByteTokenizer:
    """Read either kind of tokenizer written by ``save``; the file's "type" field says which."""
    d = _read_json(path)
    if d.get("format_version") != FORMAT_VERSION:
        version = d.get("format_version")
        raise ValueError(f"{os.fspath(path)}: format_version is {version!r}; lmlab reads {FORMAT_VERSION}")
    if d["type"] == "byte":
        return ByteTokenizer()
    chars, unknown = d.get("chars"), d.get("unknown")
    if not isinstance(chars, list):
        raise ValueError(f"{os.fspath(path)}: 'chars' must be a list of characters, got {chars!r:.40}")
    try:
        return CharTokenizer(tuple(chars), unknown=unknown)
    except ValueError as err:
        raise ValueError(f"{os.fspath(path)}: not a valid char tokenizer: {err}") from None


def get_tokenizer(kind: str, text: str | None = None) -> CharTokenizer | ByteTokenizer:
    """A tokenizer by name: ``"char"`` (vocabulary from ``text``, which is then required) or ``"byte"``."""
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        if text is None:
            raise ValueError("a 'char' tokenizer builds its vocabulary from text; pass text=...")
        return CharTokenizer.from_text(text)
    raise ValueError(f"unknown tokenizer kind {kind!r}; allowed kinds: {', '.join(TOKENIZER_KINDS)}")
