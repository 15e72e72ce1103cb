"""Decoding state: what a model keeps between generation steps, behind one small protocol.

The generation engine (:mod:`lmlab.generation.engine`) reads a prompt once (prefill) and then feeds one
token at a time. What the model remembers in between depends on the model:

- full attention keeps every key and value (:class:`KVCache`): memory grows with the length, and the state
  can be cut back to any earlier position (``crop``);
- a sliding-window attention keeps only the last ``window - 1`` keys and values (:class:`SlidingWindowCache`):
  bounded memory, and what was dropped cannot come back, so it is saved and restored whole;
- linear attention and recurrent networks keep a state of fixed size that summarises the whole prefix: it
  cannot be cut back by position, only saved and restored whole.

:class:`DecodeCache` is what the engine relies on, so that all three fit: ``length`` (tokens consumed),
``batch_size``, ``capacity`` (the most tokens it can take, None for no limit), ``reorder(index)`` (select
rows: beams, or one prompt copied to many samples), ``snapshot()`` / ``restore(snapshot)`` (go back to a
saved point: search), and ``can_crop`` with ``crop(length)`` for the caches that can cut back cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["DecodeCache", "KVCache", "SlidingWindowCache", "StateCache"]


@runtime_checkable
class DecodeCache(Protocol):
    """What generation needs from a model's decoding state (a structural type)."""

    length: int  # tokens consumed so far, per row

    @property
    def batch_size(self) -> int: ...

    @property
    def capacity(self) -> int | None:
        """The most tokens this cache can take in all; None: no limit (bounded or fixed-size state)."""
        ...

    @property
    def can_crop(self) -> bool: ...

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (1-D long tensor), in that order; rows may repeat."""
        ...

    def crop(self, length: int) -> None:
        """Forget every token from ``length`` on (only where ``can_crop``)."""
        ...

    def snapshot(self) -> Any:
        """An opaque record of the current state, for :meth:`restore`."""
        ...

    def restore(self, snapshot: Any) -> None:
        """Return to the state recorded by :meth:`snapshot` (same rows)."""
        ...


class KVCache:
    """Keys and values of the tokens seen so far, for incremental decoding with full attention.

    Storage is preallocated per layer as ``(B, nh, max_len, hs)``; ``length`` says how many positions are
    filled. Reusing the keys and values of earlier tokens makes each new token cost O(S) attention work
    instead of re-running the whole prefix. Writes only ever go to positions >= ``length``, so a snapshot is
    just the length, and restoring it is a crop.
    """

    def __init__(
        self,
        n_layer: int,
        n_head: int,
        head_size: int,
        batch_size: int,
        max_len: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size and max_len must be >= 1, got {batch_size} and {max_len}")
        shape = (batch_size, n_head, max_len, head_size)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.length = 0  # positions filled so far
        self.max_len = max_len
        self.step_fn: Callable[..., torch.Tensor] | None = None  # a compiled one-token step (GPT.compile_decoding)

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.max_len

    @property
    def can_crop(self) -> bool:
        return True

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys/values (B, nh, T, hs) at positions ``length..length+T`` of ``layer``.

        Returns all keys and values so far, (B, nh, S, hs) with S = length + T. ``length`` itself is
        advanced by :meth:`advance` once every layer has been updated.
        """
        T = k.shape[2]
        start = self.length
        self.k[layer][:, :, start : start + T] = k
        self.v[layer][:, :, start : start + T] = v
        return self.k[layer][:, :, : start + T], self.v[layer][:, :, : start + T]

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows by ``index`` (1-D long tensor): reorders beams, or expands one prompt to many."""
        self.k = [k.index_select(0, index) for k in self.k]
        self.v = [v.index_select(0, index) for v in self.v]

    def crop(self, length: int) -> None:
        """Forget every position from ``length`` on."""
        if not 0 <= length <= self.length:
            raise ValueError(f"crop length must be in [0, {self.length}], got {length}")
        self.length = length

    def snapshot(self) -> int:
        return self.length

    def restore(self, snapshot: int) -> None:
        self.crop(snapshot)


class SlidingWindowCache:
    """Keys and values of the last ``window - 1`` tokens: what a sliding-window attention needs to go on.

    Each new query sees itself and the ``window - 1`` positions before it, so older keys and values are
    dropped: memory is bounded by the window, however long the text. :meth:`update` returns the kept keys
    and values followed by the new ones, in order (B, nh, S, hs); the attention masks the band. The state
    cannot be cut back by position (what was dropped is gone), so search saves and restores it whole;
    a snapshot is a copy of at most ``window - 1`` positions per layer. ``capacity`` is ``max_len``, the
    model's positional limit (learned positions), not a memory limit.
    """

    def __init__(self, n_layer: int, window: int, batch_size: int, max_len: int) -> None:
        if window < 1 or batch_size < 1 or max_len < 1:
            raise ValueError(f"window, batch_size and max_len must be >= 1, got {window}, {batch_size}, {max_len}")
        self.window = window
        self.max_len = max_len
        self.length = 0  # tokens consumed so far
        self._batch_size = batch_size
        self.k: list[torch.Tensor | None] = [None] * n_layer  # (B, nh, <= window - 1, hs) once written
        self.v: list[torch.Tensor | None] = [None] * n_layer

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def capacity(self) -> int:
        return self.max_len

    @property
    def can_crop(self) -> bool:
        return False

    @property
    def kept(self) -> int:
        """Positions held per layer: at most ``window - 1``."""
        return 0 if self.k[0] is None else self.k[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new keys/values (B, nh, T, hs); returns the kept ones and the new ones, (B, nh, S, hs)."""
        old_k, old_v = self.k[layer], self.v[layer]
        all_k = k if old_k is None else torch.cat([old_k, k], dim=2)
        all_v = v if old_v is None else torch.cat([old_v, v], dim=2)
        keep = max(0, all_k.shape[2] - (self.window - 1))
        self.k[layer] = all_k[:, :, keep:].clone()  # a copy, so the dropped positions are freed
        self.v[layer] = all_v[:, :, keep:].clone()
        return all_k, all_v

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows by ``index`` (1-D long tensor): reorders beams, or expands one prompt to many."""
        self.k = [None if k is None else k.index_select(0, index) for k in self.k]
        self.v = [None if v is None else v.index_select(0, index) for v in self.v]
        self._batch_size = int(index.numel())

    def crop(self, length: int) -> None:
        raise ValueError("a sliding-window cache cannot be cropped (dropped positions are gone); use snapshot/restore")

    def snapshot(self) -> tuple[int, int, list[torch.Tensor | None], list[torch.Tensor | None]]:
        return self.length, self._batch_size, list(self.k), list(self.v)  # update replaces, never writes in place

    def restore(self, snapshot: tuple[int, int, list[torch.Tensor | None], list[torch.Tensor | None]]) -> None:
        self.length, self._batch_size, k, v = snapshot
        self.k, self.v = list(k), list(v)


class StateCache:
    """A fixed-size state per layer that summarises every token read so far: linear attention, RNNs.

    ``states[layer]`` is None before the first token, then a tuple of tensors with the batch as dimension 0
    (for example linear attention's running sums (B, nh, hs, hs) and (B, nh, hs), or an RNN's hidden
    state (B, H)). Its size does not grow with the length of the text. Models read it with :meth:`get` and
    replace it with :meth:`set` (never in place), so a snapshot is a list of references and costs no copy.
    The state cannot be cut back by position, only saved and restored whole. ``capacity`` is ``max_len``
    (a model's positional limit) or None for no limit.
    """

    def __init__(self, n_layer: int, batch_size: int, max_len: int | None = None) -> None:
        if n_layer < 1 or batch_size < 1 or (max_len is not None and max_len < 1):
            raise ValueError(
                f"n_layer and batch_size must be >= 1 and max_len >= 1 or None, got {n_layer}, {batch_size}, {max_len}"
            )
        self.max_len = max_len
        self.length = 0  # tokens consumed so far
        self._batch_size = batch_size
        self.states: list[tuple[torch.Tensor, ...] | None] = [None] * n_layer

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def capacity(self) -> int | None:
        return self.max_len

    @property
    def can_crop(self) -> bool:
        return False

    @property
    def nbytes(self) -> int:
        """Bytes held by the state tensors (the same after 10 tokens or 10,000)."""
        return sum(t.numel() * t.element_size() for s in self.states if s is not None for t in s)

    def get(self, layer: int) -> tuple[torch.Tensor, ...] | None:
        """Layer ``layer``'s state, or None before the first token."""
        return self.states[layer]

    def set(self, layer: int, state: tuple[torch.Tensor, ...]) -> None:
        """Replace layer ``layer``'s state (tensors with the batch first)."""
        self.states[layer] = tuple(state)

    def advance(self, n: int) -> None:
        self.length += n

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows by ``index`` (1-D long tensor): reorders beams, or expands one prompt to many."""
        self.states = [None if s is None else tuple(t.index_select(0, index) for t in s) for s in self.states]
        self._batch_size = int(index.numel())

    def crop(self, length: int) -> None:
        raise ValueError("a fixed-size state cannot be cropped (it summarises every token); use snapshot/restore")

    def snapshot(self) -> tuple[int, int, list[tuple[torch.Tensor, ...] | None]]:
        return self.length, self._batch_size, list(self.states)  # set replaces, never writes in place

    def restore(self, snapshot: tuple[int, int, list[tuple[torch.Tensor, ...] | None]]) -> None:
        self.length, self._batch_size, states = snapshot
        self.states = list(states)
