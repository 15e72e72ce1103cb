"""Corpora and token data for language modelling.

- :func:`load_corpus` gives the text of a named corpus or a local file. ``"python-docs"`` is built into
  Python and works offline; ``"tiny-shakespeare"`` is downloaded once, checked by SHA-256 and cached.
- :class:`TokenData` holds the train and validation token ids and serves random training batches
  (:meth:`TokenData.get_batch`) and an exact, every-token-once pass for evaluation
  (:meth:`TokenData.iter_split`).
- :func:`load_data` does both in one call.

Shapes: ``B`` batch, ``T`` block size (tokens per window), ``N`` tokens in a split.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.checks import check_int
from lmlab.device import resolve_device
from lmlab.fileio import atomic_open
from lmlab.lm import IGNORE_INDEX
from lmlab.text.tokenizer import ByteTokenizer, CharTokenizer, Tokenizer, get_tokenizer

__all__ = [
    "BUILTIN_CORPORA",
    "CORPORA",
    "CorpusChecksumError",
    "CorpusDownloadError",
    "CorpusInfo",
    "TokenData",
    "cache_dir_default",
    "load_corpus",
    "load_data",
    "write_bin",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
DOWNLOAD_TIMEOUT = 30.0  # seconds without data before a download is abandoned
CHUNK_BYTES = 1 << 16  # downloads are streamed in chunks of this size
BIN_DTYPES = (np.dtype("<u2"), np.dtype("<u4"))  # token files: little-endian uint16 or uint32


@dataclass(frozen=True)
class CorpusInfo:
    """A downloadable corpus: where it lives, its SHA-256, and the file name it is cached under."""

    url: str
    sha256: str  # hex digest of the exact bytes
    filename: str  # name of the cached file inside the cache directory
    description: str


# Known downloadable corpora. Tests replace entries (monkeypatch.setitem) to point at a local server.
CORPORA: dict[str, CorpusInfo] = {
    "tiny-shakespeare": CorpusInfo(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        filename="tinyshakespeare.txt",
        description="40,000 lines of Shakespeare's plays (1,115,394 bytes), from Karpathy's char-rnn",
    ),
}
BUILTIN_CORPORA: dict[str, str] = {
    "python-docs": "CPython's reference documentation topics (pydoc_data.topics), ~0.5 MB, always offline",
}


class CorpusDownloadError(ConnectionError):
    """A corpus could not be downloaded (network failure, or offline mode and no cached copy)."""


class CorpusChecksumError(ValueError):
    """Downloaded bytes do not have the expected SHA-256; nothing was cached."""


# ---------------------------------------------------------------------------------------------- corpora
def cache_dir_default() -> Path:
    """The cache directory: ``$LMLAB_CACHE`` if set, else ``~/.cache/lmlab``."""
    env = os.environ.get("LMLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmlab"


def _python_docs() -> str:
    from pydoc_data.topics import topics  # ships with CPython

    return "\n\n".join(topics[k].strip("\n") for k in sorted(topics)) + "\n"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _stream(name: str, info: CorpusInfo, dest: Path) -> Iterator[bytes]:
    """The bytes at ``info.url`` in chunks; any network failure becomes a :class:`CorpusDownloadError`."""
    try:
        request = urllib.request.Request(info.url, headers={"User-Agent": "lmlab"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
            length, received = response.headers.get("Content-Length"), 0
            while chunk := response.read(CHUNK_BYTES):
                received += len(chunk)
                yield chunk
        if length is not None and received != int(length):  # http.client returns b"" on an early close
            raise http.client.IncompleteRead(b"", int(length) - received)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:  # OSError: sockets, TLS
        reason = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else repr(err)
        raise CorpusDownloadError(_manual_help(name, info, dest, f"download failed: {reason}")) from err


def _download(name: str, info: CorpusInfo, dest: Path) -> None:
    """Stream ``info.url`` into a temporary file next to ``dest``, check it, then rename it to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading corpus %r from %s to %s", name, info.url, dest)
    with atomic_open(dest) as f:  # any exception inside deletes the temporary file
        h, received = hashlib.sha256(), 0
        for chunk in _stream(name, info, dest):  # disk errors from f.write stay OSErrors
            f.write(chunk)
            h.update(chunk)
            received += len(chunk)
        got = h.hexdigest()
        if got != info.sha256:
            raise CorpusChecksumError(
                f"corpus {name!r} downloaded from {info.url} has the wrong checksum: expected sha256 "
                f"{info.sha256}, got {got} ({received} bytes); the file was not cached"
            )


def _manual_help(name: str, info: CorpusInfo, dest: Path, what: str) -> str:
    return (
        f"could not get corpus {name!r}: {what}.\n"
        f"To use it without a network, download {info.url}\n"
        f"and save it as {dest} (expected sha256 {info.sha256}).\n"
        f"Or use the corpus 'python-docs', which is built into Python and works offline."
    )


def load_corpus(
    name_or_path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
) -> str:
    """The text of a named corpus or of a local UTF-8 file.

    Args:
        name_or_path: ``"python-docs"`` (built in, offline), a name in :data:`CORPORA` such as
            ``"tiny-shakespeare"`` (downloaded once, then read from the cache), or a path to a text file.
            A known name wins over a file of the same name; write ``./name`` to mean the file.
        cache_dir: where downloads are kept; default ``$LMLAB_CACHE`` or ``~/.cache/lmlab``.
        offline: never touch the network (a corpus must then be cached); default: true when the
            environment variable ``LMLAB_OFFLINE`` is "1", "true" or "yes".

    Raises:
        CorpusDownloadError (a ConnectionError): the download failed, or offline without a cached copy.
        CorpusChecksumError (a ValueError): the downloaded bytes are not the expected ones.
        ValueError: unknown name, a file that is not UTF-8, or empty text.
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(f"name_or_path must be a corpus name or a path, got {type(name_or_path).__name__}")
    if offline is None:
        offline = os.environ.get("LMLAB_OFFLINE", "").strip().lower() in ("1", "true", "yes")
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_CORPORA:
        return _python_docs()
    if isinstance(name_or_path, str) and name_or_path in CORPORA:
        name, info = name_or_path, CORPORA[name_or_path]
        path = Path(cache_dir).expanduser() if cache_dir is not None else cache_dir_default()
        path = path / info.filename
        cached = path.is_file()
        if not (cached and _sha256_file(path) == info.sha256):
            if offline:
                what = "offline mode is on and " + (
                    f"the cached file {path} has the wrong checksum" if cached else "it is not cached"
                )
                raise CorpusDownloadError(_manual_help(name, info, path, what))
            _download(name, info, path)
        return _read_text(path)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _read_text(path)
    if path.exists():
        raise ValueError(f"{path} is not a regular file; give a text file or a corpus name")
    known = ", ".join(sorted([*BUILTIN_CORPORA, *CORPORA]))
    raise ValueError(
        f"unknown corpus {os.fspath(name_or_path)!r}: not a known name and no such file. "
        f"Known corpora: {known}; a path to a local UTF-8 text file is also accepted"
    )


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path} is empty; a corpus needs some text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); convert it to "
            "UTF-8 (e.g. iconv -f latin1 -t utf-8), or read it yourself with open(path, encoding=..., "
            "errors='replace') and pass the text to TokenData.from_text"
        ) from None


# ---------------------------------------------------------------------------------------------- token files
def _bin_dtype(dtype: Any, vocab_size: int | None) -> np.dtype:
    if dtype is None:
        if vocab_size is None:
            raise ValueError("give dtype or vocab_size to choose the token file's item size")
        return BIN_DTYPES[0] if vocab_size <= 2**16 else BIN_DTYPES[1]
    dt = np.dtype(dtype).newbyteorder("<")
    if dt not in BIN_DTYPES:
        raise ValueError(f"token files hold uint16 or uint32, got dtype {np.dtype(dtype)}")
    return dt


def write_bin(
    path: str | os.PathLike[str], ids: Any, *, dtype: Any = None, vocab_size: int | None = None
) -> np.dtype:
    """Write token ``ids`` as a raw little-endian uint16/uint32 file (atomically); returns the dtype used.

    ``dtype`` defaults to the one :meth:`TokenData.from_bin` infers from ``vocab_size`` (uint16 when
    ``vocab_size <= 65536``); without ``vocab_size`` it is chosen from the largest id. Pass the same
    ``vocab_size`` to both so the reader uses the writer's item size.
    """
    arr = _as_token_array(ids, "ids")
    hi = int(arr.max()) if arr.size else 0
    dt = _bin_dtype(dtype, vocab_size if vocab_size is not None else hi + 1)
    if arr.size and (int(arr.min()) < 0 or hi > np.iinfo(dt).max):
        raise ValueError(f"ids range over [{int(arr.min())}, {hi}], which does not fit in {dt.name}")
    with atomic_open(path) as f:
        arr.astype(dt).tofile(f)
    return dt


def _memmap(path: str | os.PathLike[str], dt: np.dtype) -> np.ndarray:
    size = os.path.getsize(path)  # FileNotFoundError names the path
    if size % dt.itemsize:
        raise ValueError(
            f"{os.fspath(path)} has {size} bytes, not a multiple of {dt.itemsize} ({dt.name}); "
            "wrong dtype or vocab_size, or a truncated file"
        )
    if size == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dt)
    return np.memmap(path, dtype=dt, mode="r")


# ---------------------------------------------------------------------------------------------- TokenData
def _as_token_array(a: Any, name: str) -> np.ndarray:
    """A 1-D integer numpy array from a tensor (CPU memory is shared), an ndarray/memmap, or a sequence."""
    if isinstance(a, torch.Tensor):
        if a.is_floating_point() or a.is_complex() or a.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids, got dtype {a.dtype}")
        a = a.detach().cpu().numpy()
    elif isinstance(a, Sequence) and not isinstance(a, str | bytes):
        a = np.asarray(a, dtype=np.int64)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a 1-D tensor or numpy array of token ids, got {type(a).__name__}")
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integer token ids, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a CPU batch to ``device``; to CUDA through page-locked memory, asynchronously, when possible."""
    if device.type != "cuda":
        return t.to(device)
    try:
        return t.pin_memory().to(device, non_blocking=True)
    except RuntimeError:  # pinning can fail (e.g. no page-locked memory left): copy the ordinary way
        return t.to(device)


def _utf8_chars(arr: np.ndarray) -> int:
    """Characters starting in a run of UTF-8 bytes: the bytes that are not continuations (0b10xxxxxx)."""
    total = 0
    for i in range(0, len(arr), 1 << 24):  # chunks, so a memmap is never read whole into memory
        total += int(np.count_nonzero((np.asarray(arr[i : i + (1 << 24)]) & 0xC0) != 0x80))
    return total


class TokenData:
    """Train and validation token ids for language modelling.

    ``train`` and ``val`` are 1-D integer arrays: torch tensors (kept as numpy views of the same memory),
    numpy arrays, or ``np.memmap`` files of uint16/uint32 for corpora larger than memory. Ids must lie in
    ``[0, vocab_size)``; in-memory arrays are checked here, memory maps batch by batch as they are read.
    """

    def __init__(
        self,
        train: Any,
        val: Any,
        vocab_size: int,
        tokenizer: Tokenizer | None = None,
        *,
        num_chars: dict[str, int] | None = None,
    ) -> None:
        self.vocab_size = check_int("vocab_size", vocab_size, 1)
        if tokenizer is not None and tokenizer.vocab_size > self.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but vocab_size is {self.vocab_size}")
        self.train = _as_token_array(train, "train")
        self.val = _as_token_array(val, "val")
        for split in SPLITS:
            arr = self._split(split)
            if not isinstance(arr, np.memmap):
                self._check_range(arr, split)
        self.tokenizer = tokenizer
        self._num_chars = dict(num_chars or {})

    @classmethod
    def from_text(cls, text: str, tokenizer: Tokenizer | str, *, val_fraction: float = 0.1) -> TokenData:
        """Encode ``text``; the first ``1 - val_fraction`` of the tokens train, the rest validate.

        The split is contiguous (no shuffling), so no validation text leaks into training.
        ``val_fraction`` must be in [0, 1); 0 leaves the validation split empty.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
            raise TypeError(f"val_fraction must be a number, got {val_fraction!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        tok = get_tokenizer(tokenizer, text) if isinstance(tokenizer, str) else tokenizer
        ids = tok.encode(text)
        if not ids:
            raise ValueError("the text encodes to no tokens; give a non-empty corpus")
        dt = np.uint16 if tok.vocab_size <= 2**16 else np.uint32
        ids = np.asarray(ids, dtype=dt)
        n_val = int(len(ids) * val_fraction)
        train, val = ids[: len(ids) - n_val], ids[len(ids) - n_val :]
        chars = None
        if not isinstance(tok, CharTokenizer | ByteTokenizer):  # those two count cheaply on demand
            chars = {"train": len(tok.decode(train.tolist())), "val": len(tok.decode(val.tolist()))}
        return cls(train, val, tok.vocab_size, tok, num_chars=chars)

    @classmethod
    def from_bin(
        cls,
        train_path: str | os.PathLike[str],
        val_path: str | os.PathLike[str],
        *,
        vocab_size: int,
        dtype: Any = None,
        tokenizer: Tokenizer | None = None,
    ) -> TokenData:
        """Memory-map two token files written by :func:`write_bin` (raw little-endian uint16/uint32).

        ``dtype`` defaults to uint16 when ``vocab_size <= 65536``, else uint32. Nothing is read until a
        batch needs it, so corpora larger than memory work.
        """
        dt = _bin_dtype(dtype, check_int("vocab_size", vocab_size, 1))
        return cls(_memmap(train_path, dt), _memmap(val_path, dt), vocab_size, tokenizer)

    # ------------------------------------------------------------------ sizes
    def _split(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.train if split == "train" else self.val

    def _check_range(self, arr: np.ndarray, split: str) -> None:
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= self.vocab_size):
            bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
            raise ValueError(f"{split} has token id {bad}, outside the vocabulary [0, {self.vocab_size})")

    def num_tokens(self, split: str) -> int:
        """Number of tokens in ``split``."""
        return len(self._split(split))

    def num_chars(self, split: str) -> int:
        """Characters of text that ``split`` decodes to: the denominator of bits per character.

        Char tokenizer: one per token. Byte tokenizer: the UTF-8 bytes that start a character (a character
        cut by the train/val boundary counts in the split where it starts). Other tokenizers: counted by
        :meth:`from_text`, or given as ``num_chars={"train": ..., "val": ...}`` to the constructor.
        """
        arr = self._split(split)
        if split not in self._num_chars:
            if isinstance(self.tokenizer, CharTokenizer):
                self._num_chars[split] = len(arr)
            elif isinstance(self.tokenizer, ByteTokenizer):
                self._num_chars[split] = _utf8_chars(arr)
            else:
                raise ValueError(
                    "the number of characters is unknown: build TokenData with a CharTokenizer or "
                    "ByteTokenizer, or pass num_chars={'train': ..., 'val': ...}"
                )
        return self._num_chars[split]

    def ids(self, split: str) -> torch.Tensor:
        """The whole split as a 1-D int64 tensor (reads all of a memory-mapped file into memory)."""
        return torch.from_numpy(np.asarray(self._split(split), dtype=np.int64))

    def num_batches(self, split: str, batch_size: int, block_size: int) -> int:
        """Number of batches :meth:`iter_split` yields."""
        windows = -(-(self.num_tokens(split) - 1) // check_int("block_size", block_size, 1))
        return max(0, -(-windows // check_int("batch_size", batch_size, 1)))

    # ------------------------------------------------------------------ batches
    def get_batch(
        self,
        split: str,
        batch_size: int,
        block_size: int,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` random windows of ``split``: inputs x and next-token targets y, both (B, T) int64.

        Row b is ``ids[i:i+T]`` and ``ids[i+1:i+T+1]`` for a start ``i`` drawn uniformly by
        ``torch.randint(..., generator=generator)``: the same generator seed gives the same batches.
        Only the windows are read, so memory-mapped splits stay on disk.
        """
        arr = self._split(split)
        B, T = check_int("batch_size", batch_size, 1), check_int("block_size", block_size, 1)
        n = len(arr)
        if n < T + 1:
            raise ValueError(
                f"the {split} split has {n} tokens, but a window of block_size {T} needs at least {T + 1} "
                "(T inputs plus one more target); use a smaller block_size, a lower val_fraction, or a "
                "longer corpus"
            )
        starts = torch.randint(n - T, (B,), generator=generator).numpy()  # (B,), i + T <= n - 1
        windows = np.asarray(arr[starts[:, None] + np.arange(T + 1)])  # (B, T + 1), reads only these
        if isinstance(arr, np.memmap):
            self._check_range(windows, split)
        w = torch.from_numpy(windows.astype(np.int64))  # (B, T + 1)
        dev = resolve_device(device)
        return _to_device(w[:, :-1].contiguous(), dev), _to_device(w[:, 1:].contiguous(), dev)

    def iter_split(
        self, split: str, batch_size: int, block_size: int, device: str | torch.device = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every target of ``split`` exactly once, for exact evaluation; yields (x, y), each (b, T) int64.

        Windows are consecutive and do not overlap: window k reads tokens ``kT .. kT+T-1`` and predicts
        ``kT+1 .. kT+T``, so targets 1..N-1 are each scored once (each window starts with a fresh
        context). They come ``batch_size`` at a time (b <= batch_size in the last batch). The last window
        may be shorter: its x is padded with 0 and its y with IGNORE_INDEX (-100), which the loss skips.
        """
        arr = self._split(split)
        B, T = check_int("batch_size", batch_size, 1), check_int("block_size", block_size, 1)
        if len(arr) < 2:
            raise ValueError(f"the {split} split has {len(arr)} tokens; evaluation needs at least 2")
        return self._windows(arr, split, B, T, resolve_device(device))  # errors above come at the call

    def _windows(
        self, arr: np.ndarray, split: str, B: int, T: int, dev: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n_targets = len(arr) - 1
        starts = range(0, n_targets, T)
        for b0 in range(0, len(starts), B):
            rows = starts[b0 : b0 + B]
            lo, hi = rows[0], min(rows[-1] + T, n_targets)  # tokens lo..hi are read
            chunk = np.asarray(arr[lo : hi + 1]).astype(np.int64)
            if isinstance(arr, np.memmap):
                self._check_range(chunk, split)
            x = np.zeros((len(rows), T), dtype=np.int64)  # (b, T)
            y = np.full((len(rows), T), IGNORE_INDEX, dtype=np.int64)  # (b, T)
            for r, s in enumerate(rows):
                L = min(T, n_targets - s)
                x[r, :L] = chunk[s - lo : s - lo + L]
                y[r, :L] = chunk[s - lo + 1 : s - lo + L + 1]
            yield _to_device(torch.from_numpy(x), dev), _to_device(torch.from_numpy(y), dev)

    def __repr__(self) -> str:
        return (
            f"TokenData(train={len(self.train)} tokens, val={len(self.val)} tokens, "
            f"vocab_size={self.vocab_size}, tokenizer={self.tokenizer!r})"
        )


def load_data(
    name_or_path: str | os.PathLike[str] = "python-docs",
    *,
    tokenizer: Tokenizer | str = "char",
    val_fraction: float = 0.1,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
) -> TokenData:
    """Corpus to :class:`TokenData` in one call: :func:`load_corpus`, a tokenizer, then a split.

    ``tokenizer``: ``"char"`` (vocabulary from the whole corpus), ``"byte"``, or a tokenizer object.
    """
    text = load_corpus(name_or_path, cache_dir=cache_dir, offline=offline)
    return TokenData.from_text(text, tokenizer, val_fraction=val_fraction)
