"""A recurrent language model: token embedding, a stack of GRU or LSTM layers, an output layer.

The recurrent baseline of lesson 03: the same interface as :class:`lmlab.models.GPT` (:mod:`lmlab.lm`),
so training, likelihood scoring and every decoder of the generation engine run on it unchanged. Where a
Transformer keeps every earlier key and value, a recurrent network squeezes the whole prefix into a state
of fixed size: one hidden vector per layer (and a cell vector for an LSTM). So it reads texts of any
length (``context_limit`` is None) at a cost per token that does not grow with the length, and decoding
keeps that state in a :class:`~lmlab.models.cache.StateCache`.

Shapes: ``B`` batch, ``T`` time (tokens), ``E`` embedding width (``n_embd``), ``H`` hidden width
(``n_hidden``), ``V`` vocabulary size.

The cells are PyTorch's ``nn.GRU`` / ``nn.LSTM`` (one single-layer module per layer, ``batch_first``):

- GRU (Cho et al. 2014, with PyTorch's placement of the reset gate):
  ``r = σ(W_ir x + b_ir + W_hr h + b_hr)``, ``z = σ(W_iz x + b_iz + W_hz h + b_hz)``,
  ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``, ``h' = (1 - z) ⊙ n + z ⊙ h``;
- LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000):
  ``i, f, o = σ(W_i* x + b_i* + W_h* h + b_h*)``, ``g = tanh(W_ig x + b_ig + W_hg h + b_hg)``,
  ``c' = f ⊙ c + i ⊙ g``, ``h' = o ⊙ tanh(c')``.

Dropout, when on, is applied to the non-recurrent connections only (the embeddings, between layers, and
before the output layer), as in Zaremba et al. 2014, "Recurrent Neural Network Regularization".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn as nn

from lmlab.checks import check_token_batch
from lmlab.lm import HiddenLMOutput, LMOutput, lm_loss
from lmlab.models.cache import StateCache

__all__ = ["CELLS", "RNN_PRESETS", "RNNConfig", "RNNLM"]

CELLS = ("gru", "lstm")  # the recurrent cells: gated recurrent unit, long short-term memory
GATES = {"gru": 3, "lstm": 4}  # blocks of H rows in each cell's weight matrices (r, z, n / i, f, g, o)
INIT_RANGE = 0.1  # embedding, projection and untied output weights ~ U(-0.1, 0.1) (Zaremba et al. 2014)


@dataclass
class RNNConfig:
    """Shape and options of an :class:`RNNLM`. Build one directly or from a preset: ``RNNConfig.preset("tiny")``."""

    vocab_size: int = 256  # number of token ids; 256 fits the byte tokenizer
    n_embd: int = 128  # width of the token embedding (E)
    n_hidden: int = 128  # width of each layer's hidden state (H)
    n_layer: int = 2  # recurrent layers, stacked: layer l + 1 reads layer l's hidden states
    cell: str = "gru"  # "gru" (Cho et al. 2014) or "lstm" (Hochreiter & Schmidhuber 1997)
    dropout: float = 0.0  # dropout on embeddings, between layers and before the output layer (0 = off)
    tie_weights: bool = True  # the output layer reuses the token embedding (Press & Wolf 2017); when
    # n_hidden != n_embd a bias-free projection H -> E comes first so that the shapes fit

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_embd", "n_hidden", "n_layer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"RNNConfig.{name} must be a positive integer, got {type(value).__name__} {value!r}")
            if value < 1:
                raise ValueError(f"RNNConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.cell, str):
            raise TypeError(f"RNNConfig.cell must be a string, one of {CELLS}, got {type(self.cell).__name__}")
        if self.cell not in CELLS:
            raise ValueError(f"RNNConfig.cell must be one of {CELLS}, got {self.cell!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise TypeError(f"RNNConfig.dropout must be a number in [0, 1), got {type(self.dropout).__name__}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"RNNConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.tie_weights, bool):
            raise TypeError(f"RNNConfig.tie_weights must be True or False, got {self.tie_weights!r}")

    @property
    def projects(self) -> bool:
        """True when a projection H -> E sits before a tied output layer (tie_weights and n_hidden != n_embd)."""
        return self.tie_weights and self.n_hidden != self.n_embd

    @property
    def head_width(self) -> int:
        """Width of what the output layer reads: E after a projection or when tied, else H (they are equal
        when tied without a projection)."""
        return self.n_embd if self.tie_weights else self.n_hidden

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RNNConfig:
        """A named configuration, optionally changed: ``RNNConfig.preset("micro", cell="lstm")``.

        Presets (GRU, parameters counted with the byte vocabulary of 256, the tied embedding included):
        ``micro`` ~41k (1 layer, 64 wide), ``tiny`` ~231k (2 layers, 128 wide).
        """
        if name not in RNN_PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(RNN_PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown RNNConfig field(s) {unknown}; fields are: {', '.join(sorted(known))}")
        return replace(RNN_PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary of every field (for checkpoints and JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RNNConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing ones take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RNNConfig field(s) {unknown}; fields are: {', '.join(sorted(known))}")
        return cls(**d)


# Sized for a 2-core CPU: a training step of micro on 8 windows of 64 tokens took 15 ms on one idle core.
RNN_PRESETS: dict[str, RNNConfig] = {
    "micro": RNNConfig(vocab_size=256, n_embd=64, n_hidden=64, n_layer=1),
    "tiny": RNNConfig(vocab_size=256, n_embd=128, n_hidden=128, n_layer=2),
}


def _dropout(p: float) -> nn.Module:
    """Dropout, or a no-op module when p == 0."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class RNNLM(nn.Module):
    """Recurrent language model: embedding, ``n_layer`` GRU or LSTM layers, (projection,) output layer.

    ``model(idx)`` maps token ids ``(B, T)`` to next-token logits ``(B, T, V)``: ``logits[:, t]`` scores the
    token at position ``t + 1`` given tokens ``0..t``, read through the hidden state after token t.

    Initialisation: the recurrent weights and biases keep PyTorch's default ``U(-1/√H, 1/√H)``; the
    embedding, the projection and an untied output layer are ``U(-0.1, 0.1)`` (Zaremba et al. 2014), so the
    first logits are small and the first loss is close to ln V; an LSTM's forget-gate bias starts at 1 (in
    ``bias_ih``; Gers et al. 2000, Jozefowicz et al. 2015), so the cell remembers by default. Deterministic
    for a seed: ``torch.manual_seed(s)`` before construction.
    """

    context_limit = None  # reads any length: the state summarises the whole prefix

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        if not isinstance(config, RNNConfig):
            raise TypeError(f"RNNLM needs an RNNConfig, got {type(config).__name__}")
        self.config = config
        E, H = config.n_embd, config.n_hidden
        cell = nn.GRU if config.cell == "gru" else nn.LSTM
        self.wte = nn.Embedding(config.vocab_size, E)  # token embedding
        self.drop = _dropout(config.dropout)
        # one single-layer module per layer: its state is one (B, H) entry of the cache, batch first
        self.layers = nn.ModuleList(
            cell(E if i == 0 else H, H, num_layers=1, batch_first=True) for i in range(config.n_layer)
        )
        self.proj = nn.Linear(H, E, bias=False) if config.projects else None
        self.lm_head = nn.Linear(config.head_width, config.vocab_size, bias=False)
        self._init_weights()
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight  # one (V, E) matrix, two uses (Press & Wolf 2017)

    def _init_weights(self) -> None:
        for w in (self.wte.weight, self.lm_head.weight, *([] if self.proj is None else [self.proj.weight])):
            nn.init.uniform_(w, -INIT_RANGE, INIT_RANGE)
        if self.config.cell == "lstm":
            H = self.config.n_hidden
            with torch.no_grad():
                for layer in self.layers:  # gate order i, f, g, o: rows H..2H are the forget gate
                    layer.bias_ih_l0[H : 2 * H].fill_(1.0)
                    layer.bias_hh_l0[H : 2 * H].zero_()

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        loss_mask: torch.Tensor | None = None,
        reduction: str = "mean",
        cache: StateCache | None = None,
        return_hidden: bool = False,
    ) -> LMOutput | HiddenLMOutput:
        """Logits for every position, and the cross-entropy loss when ``targets`` are given.

        Args:
            idx: (B, T) integer token ids, ``0 <= id < vocab_size`` (not range-checked here, as in GPT: data,
                likelihood, generation and the CLI check ids where they enter).
            targets: (B, T) next-token ids; entries equal to -100 are not scored.
            loss_mask: (B, T) bool or 0/1 tensor, 1 where a position counts in the loss.
            reduction: "mean" (over scored tokens), "sum" (nats), or "none" ((B, T), 0 where unscored).
            cache: the decoding state from :meth:`new_cache`; ``idx`` then continues from the cached state,
                which is replaced by the state after ``idx`` (``cache.length`` grows by T).
            return_hidden: also return what the output layer reads, (B, T, head_width).

        Returns:
            ``LMOutput(logits (B, T, V), loss)``; with ``return_hidden``,
            ``HiddenLMOutput(logits, loss, hidden (B, T, head_width))``.
        """
        idx = check_token_batch(idx)  # int16/uint8 ids become int64 for nn.Embedding
        B, T = idx.shape
        if cache is not None:
            self._check_cache(cache, B)
        x = self.drop(self.wte(idx))  # (B, T, E)
        for i, layer in enumerate(self.layers):
            state = None if cache is None else cache.get(i)  # None: a zero initial state
            x, final = layer(x, self._to_module_state(state))  # x (B, T, H)
            if cache is not None:
                cache.set(i, self._from_module_state(final))
            x = self.drop(x)  # between layers, and before the output layer
        if cache is not None:
            cache.advance(T)
        if self.proj is not None:
            x = self.proj(x)  # (B, T, E): the width of the tied output layer
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = lm_loss(logits, targets, loss_mask=loss_mask, reduction=reduction)
        return HiddenLMOutput(logits, loss, x) if return_hidden else LMOutput(logits, loss)

    def _check_cache(self, cache: Any, B: int) -> None:
        if not isinstance(cache, StateCache):
            raise TypeError(f"cache must be a StateCache from RNNLM.new_cache, got {type(cache).__name__}")
        if len(cache.states) != self.config.n_layer:
            raise ValueError(f"cache holds {len(cache.states)} layers' states but the model has {self.config.n_layer}")
        if cache.batch_size != B:
            raise ValueError(f"cache holds {cache.batch_size} sequences but idx has batch size {B}")
        want = (B, self.config.n_hidden)
        for i, state in enumerate(cache.states):
            if state is not None and any(tuple(t.shape) != want for t in state):
                got = [tuple(t.shape) for t in state]
                raise ValueError(f"cache state of layer {i} has shapes {got}; this model needs {want} per tensor")

    def _to_module_state(self, state: tuple[torch.Tensor, ...] | None) -> Any:
        """Cache state, tensors (B, H), to what nn.GRU / nn.LSTM take: (1, B, H), or a pair for an LSTM."""
        if state is None:
            return None
        h = tuple(t.unsqueeze(0) for t in state)  # (num_layers = 1, B, H)
        return h if self.config.cell == "lstm" else h[0]

    def _from_module_state(self, final: Any) -> tuple[torch.Tensor, ...]:
        """nn.GRU's h_n or nn.LSTM's (h_n, c_n), each (1, B, H), to the cache's batch-first (B, H) tensors."""
        parts = final if isinstance(final, tuple) else (final,)
        return tuple(t.squeeze(0) for t in parts)

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> StateCache:
        """An empty decoding state for ``batch_size`` sequences: a :class:`~lmlab.models.cache.StateCache` whose
        layer ``l`` holds ``(h,)`` for a GRU or ``(h, c)`` for an LSTM, each (B, H), after the first token.

        Its size does not grow with the text, and its ``capacity`` is None: a recurrent state has no length
        limit. ``max_len`` is accepted (and must be a positive int or None) for the cache interface that the
        generation engine calls, but nothing limits the length.
        """
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"max_len must be a positive int or None, got {max_len!r}")
        return StateCache(self.config.n_layer, batch_size, max_len=None)

    # ------------------------------------------------------------------ counting
    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (shared tensors counted once).

        With ``non_embedding=True`` the token embedding table is left out, as in the parameter counts of
        scaling-law papers (Kaplan et al. 2020, section 2.1); with tied weights that is also the output
        layer, as for :class:`~lmlab.models.GPT`. An untied output layer is counted.
        """
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def flops_per_token(self, T: int | None = None) -> int:
        """Training FLOPs per token (forward + backward): 6 N, the same at every context length ``T``.

        6 FLOPs per matmul weight per token, 2 forward and 4 backward (Kaplan et al. 2020, section 2.1;
        PaLM, Chowdhery et al. 2022, Appendix B). N counts the weights used in matmuls:
        ``sum over layers of g·H·(in_l + H)`` (g = 3 gate blocks for a GRU, 4 for an LSTM; in_l = E for the
        first layer, H after), plus ``H·E`` for a projection, plus the output layer ``V·head_width`` (a
        matmul even when it shares the embedding's weights). Biases, gate nonlinearities and the embedding
        lookup are O(H) or O(1) per token and left out. Unlike attention there is no term growing with T:
        each token updates a fixed-size state. ``T`` (>= 1) is accepted for the interface of
        :class:`lmlab.train.Trainer`'s FLOP budgets.
        """
        if T is not None and (isinstance(T, bool) or not isinstance(T, int) or T < 1):
            raise ValueError(f"T must be an int >= 1 or None, got {T!r}")
        c = self.config
        g, E, H = GATES[c.cell], c.n_embd, c.n_hidden
        N = sum(g * H * ((E if i == 0 else H) + H) for i in range(c.n_layer))
        N += H * E if c.projects else 0
        N += c.vocab_size * c.head_width
        return 6 * N
