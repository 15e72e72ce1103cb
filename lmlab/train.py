"""Training loop for :class:`lmlab.models.GPT`: AdamW, warmup + cosine schedule, budgets, evaluation,
callbacks, atomic checkpoints with exact resume, and DistributedDataParallel under ``torchrun``.

In a notebook::

    trainer = Trainer(model, data, TrainConfig(max_steps=500))
    history = trainer.fit()
    history.evals[-1]["val_loss"]

Vocabulary. A *step* is one optimizer update. Each step draws one *global batch* of
``batch_size * grad_accum_steps * world_size`` windows of ``block_size`` tokens from a seeded CPU generator;
micro-batch ``i`` on process ``r`` is rows ``(i * world_size + r) * batch_size`` onwards. One process with
``batch_size=8`` therefore sees exactly the same examples as 2 accumulation steps of 4, or 2 processes of 4.
``tokens_per_step = batch_size * block_size * grad_accum_steps * world_size``. Losses are mean negative
log-likelihoods in nats per token.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from lmlab.device import resolve_device
from lmlab.fileio import atomic_open
from lmlab.lm import IGNORE_INDEX, context_limit, eval_mode

__all__ = [
    "TrainConfig",
    "Trainer",
    "History",
    "Callback",
    "lr_at",
    "weight_decay_groups",
    "load_checkpoint",
    "CHECKPOINT_KEYS",
    "STOP_REASONS",
]

CHECKPOINT_FORMAT = "lmlab.train checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_KEYS = (
    "format", "version", "model", "optimizer", "step", "tokens", "flops", "elapsed", "history",
    "batch_generator", "rng_cpu", "rng_cuda", "model_config", "train_config", "world_size",
)  # fmt: skip
BUDGETS = ("max_steps", "max_tokens", "max_flops", "max_seconds")
STOP_REASONS = (*BUDGETS, "callback", "interrupt")  # values of History.stop_reason
# TrainConfig fields that change the sequence of updates; a resume with other values warns
_TRAJECTORY_FIELDS = (
    "batch_size", "block_size", "grad_accum_steps", "lr", "min_lr", "warmup_steps", "decay_steps",
    "weight_decay", "betas", "grad_clip", "amp", "seed",
)  # fmt: skip


def _clock() -> float:
    """Seconds on a monotonic clock (a module function so that tests can replace it)."""
    return time.perf_counter()


# ---------------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything :class:`Trainer` needs besides the model and the data. Give at least one budget."""

    # batches
    batch_size: int = 12  # sequences per micro-batch on each process
    block_size: int | None = None  # tokens per sequence; None = the model's block_size
    grad_accum_steps: int = 1  # micro-batches whose gradients are summed into one optimizer step
    # budgets: training stops at the first one reached (checked before each step)
    max_steps: int | None = None  # optimizer steps
    max_tokens: float | None = None  # training tokens, all processes together
    max_flops: float | None = None  # training FLOPs, model.flops_per_token(block_size) per token
    max_seconds: float | None = None  # wall-clock seconds, including the time of runs resumed from
    # optimizer: AdamW (Loshchilov & Hutter 2019) and its schedule (see lr_at)
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-4  # learning rate at the end of the cosine decay
    warmup_steps: int = 10  # steps of linear warmup, from lr / warmup_steps up to lr
    decay_steps: int | None = None  # step where the cosine reaches min_lr; None: max_steps, else estimated
    weight_decay: float = 0.1  # decoupled weight decay, on the weights of Linear layers only
    betas: tuple[float, float] = (0.9, 0.95)  # Adam's moment decay rates (GPT-3's values)
    grad_clip: float | None = 1.0  # largest global gradient norm (clipped above); None = no clipping
    # evaluation
    eval_interval: int = 100  # evaluate every this many steps, and always at the end
    eval_batches: int | None = None  # None = exact loss over the whole val split; n = n random batches
    # hardware
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1" or "mps"
    amp: bool | str = "auto"  # bf16 autocast on CUDA; "auto" = when the GPU supports bf16; CPU/MPS use fp32
    compile: bool = False  # torch.compile the model for training (faster on GPUs, slow first step)
    # reproducibility, checkpoints, logging
    seed: int = 0  # seeds the batch sampler and the dropout RNG at the start of a fresh run
    checkpoint_path: str | None = None  # checkpoint file (str or Path); None = no checkpoints
    checkpoint_interval: int | None = None  # also save every this many steps; None = at the end and on Ctrl-C
    resume: bool = False  # start from checkpoint_path when that file exists (else start fresh)
    progress: bool = True  # tqdm progress bar (never on processes of rank > 0)
    log_interval: int = 1  # add a train record (and call on_step) every this many steps

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum_steps", "warmup_steps", "eval_interval", "log_interval"):
            _check_int(name, getattr(self, name), minimum=0 if name == "warmup_steps" else 1)
        if self.checkpoint_interval is not None:
            _check_int("checkpoint_interval", self.checkpoint_interval, minimum=1)
        for name in ("block_size", "max_steps", "decay_steps", "eval_batches"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        for name in ("max_tokens", "max_flops", "max_seconds", "grad_clip"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or not value > 0):
                raise ValueError(f"TrainConfig.{name} must be a positive number or None, got {value!r}")
        if all(getattr(self, name) is None for name in BUDGETS):
            raise ValueError(
                "give TrainConfig at least one budget: max_steps, max_tokens, max_flops or max_seconds "
                "(e.g. TrainConfig(max_steps=1000))"
            )
        if not _is_number(self.lr) or not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if not _is_number(self.min_lr) or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"TrainConfig.min_lr must be in [0, lr={self.lr}], got {self.min_lr!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        betas_ok = isinstance(self.betas, tuple | list) and len(self.betas) == 2
        if not betas_ok or not all(_is_number(b) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if self.amp not in (True, False, "auto"):
            raise ValueError(f"TrainConfig.amp must be True, False or 'auto', got {self.amp!r}")
        if isinstance(self.device, torch.device):
            self.device = str(self.device)
        if self.checkpoint_path is not None:
            self.checkpoint_path = str(self.checkpoint_path)
        elif self.checkpoint_interval is not None or self.resume:
            raise ValueError("checkpoint_interval and resume need a checkpoint_path")
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            warnings.warn(
                f"warmup_steps ({self.warmup_steps}) > max_steps ({self.max_steps}): the learning rate never "
                f"reaches lr={self.lr}; lower warmup_steps",
                UserWarning,
                stacklevel=3,
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary of every field (stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}")
        return cls(**d)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"TrainConfig.{name} must be an integer >= {minimum}, got {value!r}")


# ---------------------------------------------------------------------------------------------- schedule
def lr_at(step: int, config: TrainConfig, decay_steps: int | None = None) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine decay to ``min_lr``.

    - ``step < warmup_steps``: ``lr * (step + 1) / warmup_steps`` (linear warmup, as GPT-3, Brown et al. 2020,
      appendix B);
    - ``warmup_steps <= step < decay_steps``: ``min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2`` with
      ``p = (step - warmup_steps) / (decay_steps - warmup_steps)`` (cosine annealing without restarts, SGDR,
      Loshchilov & Hutter 2017, eq. 5);
    - ``step >= decay_steps``: ``min_lr``.

    ``decay_steps`` defaults to ``config.decay_steps``, then ``config.max_steps``; when all are None (a run
    bounded by time only) the rate stays at ``lr`` after warmup. The rate depends on the step number only.
    """
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    if decay_steps is None:
        decay_steps = config.decay_steps if config.decay_steps is not None else config.max_steps
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if decay_steps is None:
        return config.lr
    if step >= decay_steps:
        return config.min_lr
    progress = (step - config.warmup_steps) / (decay_steps - config.warmup_steps)  # in [0, 1)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


# ---------------------------------------------------------------------------------------------- optimizer
def weight_decay_groups(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters with weight decay, and of those without.

    Decay goes to the 2-D weights of ``nn.Linear`` layers only; biases, LayerNorm parameters and embeddings
    are not decayed (the GPT-2 / nanoGPT convention, Karpathy's nanoGPT ``configure_optimizers``). A tensor
    shared by an Embedding and a Linear layer (tied input/output embeddings) is listed once, as not decayed,
    as nanoGPT did. Names are those of ``model.named_parameters()``, which lists a shared tensor once.
    """
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(False)}
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear) and m.weight.dim() >= 2}
    decay: list[str] = []
    no_decay: list[str] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if id(p) in linear and id(p) not in embeddings else no_decay).append(name)
    return decay, no_decay


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over two groups (see :func:`weight_decay_groups`).

    The fused kernel (one pass over all parameters) is used on CPU and CUDA when this PyTorch has it: on
    the ``tiny`` model it takes 0.6 ms per step on two cores against 3.4 ms for the default ``foreach``.
    """
    decay, no_decay = weight_decay_groups(model)
    params = dict(model.named_parameters())
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": config.weight_decay},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0},
    ]
    devices = {p.device.type for p in params.values()}
    if len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params.values()):
        try:
            return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a PyTorch without the fused kernel for this device
            pass
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


# ---------------------------------------------------------------------------------------------- records
class History(list):
    """The records of a run, oldest first: a list of plain dicts (``pandas.DataFrame(history)`` works).

    Train records, one every ``log_interval`` steps::

        {"kind": "train", "step": 10, "tokens": 3840, "flops": 1.9e9, "elapsed": 1.5, "lr": 0.001,
         "train_loss": 3.1, "grad_norm": 0.8, "tokens_per_s": 25000.0}

    Eval records, every ``eval_interval`` steps and at the end::

        {"kind": "eval", "step": 100, "tokens": 38400, "flops": 1.9e10, "elapsed": 15.2,
         "val_loss": 2.9, "val_tokens": 50000}

    ``step`` counts completed optimizer steps; ``tokens`` and ``flops`` are totals over all processes (flops
    is None for models without ``flops_per_token``); ``elapsed`` is wall-clock seconds since training began;
    ``train_loss`` is the mean over the step's global batch; ``grad_norm`` is measured before clipping;
    ``tokens_per_s`` is measured over the steps since the previous record. ``stop_reason`` is one of
    :data:`STOP_REASONS` once :meth:`Trainer.fit` has returned.
    """

    stop_reason: str | None = None

    @property
    def train(self) -> list[dict[str, Any]]:
        """The train records."""
        return [r for r in self if r["kind"] == "train"]

    @property
    def evals(self) -> list[dict[str, Any]]:
        """The eval records."""
        return [r for r in self if r["kind"] == "eval"]


class Callback:
    """Base class for callbacks: override any of the methods; they run on the process of rank 0 only.

    ``on_step`` gets each train record, ``on_eval`` each eval record, ``on_end`` the history when ``fit``
    returns. Set ``trainer.should_stop = True`` to end the run after the current step (it still evaluates
    and saves a final checkpoint). A plain function ``f(trainer, record)`` in ``callbacks`` is called with
    every record, train and eval. Objects with only some of the three methods work too.
    """

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        pass

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        pass

    def on_end(self, trainer: Trainer, history: History) -> None:
        pass


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[Trainer, dict[str, Any]], Any]) -> None:
        self.on_step = self.on_eval = fn


def _as_callback(cb: Any) -> Any:
    if any(hasattr(cb, m) for m in ("on_step", "on_eval", "on_end")):
        return cb
    if callable(cb):
        return _FunctionCallback(cb)
    raise TypeError(
        f"a callback must be a function f(trainer, record) or an object with on_step, on_eval or on_end "
        f"methods, got {type(cb).__name__}"
    )


# ---------------------------------------------------------------------------------------------- checkpoints
def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.

    ``os.replace`` is atomic on POSIX and Windows, so ``path`` always holds either the previous complete
    checkpoint or the new one, never a partial file, even if the process dies mid-write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        torch.save(obj, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :class:`Trainer` (with ``torch.load(weights_only=True)``) and check it.

    Returns the checkpoint dict; its keys are :data:`CHECKPOINT_KEYS` (see :meth:`Trainer.save_checkpoint`).
    Raises FileNotFoundError for a missing file and ValueError for a damaged file or one not written here.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, unsupported objects: torch raises many kinds
        detail = str(err).splitlines()[0][:200] if str(err) else ""
        raise ValueError(
            f"checkpoint file {path} is damaged or is not a PyTorch checkpoint (was it truncated by a crash "
            f"or a full disk?): {type(err).__name__}: {detail}"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by lmlab.train (no tag {CHECKPOINT_FORMAT!r})")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks the entries {missing}; it was not written by lmlab.train")
    if ckpt["version"] > CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {ckpt['version']}; lmlab reads <= {CHECKPOINT_VERSION}")
    return ckpt


def _distributed_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank): from an initialised process group, from torchrun, or (0, 1, 0)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank
    if all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank
    return 0, 1, 0


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Trains a language model on :class:`lmlab.text.data.TokenData`-like data.

    Args:
        model: a :class:`lmlab.models.GPT` (any module with ``model(x, y, reduction=...) -> (logits, loss)``
            works; ``max_flops`` also needs ``model.flops_per_token(T)``). It is moved to the device.
        data: has ``get_batch(split, batch_size, block_size, generator=, device=)`` and
            ``iter_split(split, batch_size, block_size, device=)``.
        config: a :class:`TrainConfig`; keyword ``overrides`` replace its fields, or build one when
            ``config`` is None: ``Trainer(model, data, max_steps=200)``.
        callbacks: :class:`Callback` objects or functions ``f(trainer, record)``.

    Under ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK set, WORLD_SIZE > 1) the process group is initialised if
    needed (NCCL on CUDA, Gloo on CPU) and left initialised; the model is wrapped in DistributedDataParallel.
    ``batch_size`` is per process. Evaluation is shared out between the processes and all-reduced, so every
    process gets the same val loss; only rank 0 shows progress, runs callbacks and writes checkpoints.

    Resuming (:meth:`restore`, ``fit(resume_from=...)``, ``TrainConfig.resume``) is bit for bit in one process
    on the CPU: with the same seed, data, model shape and trajectory fields of the config, on the same machine,
    PyTorch build and number of threads, an interrupted and resumed run has the same losses, learning rates,
    evaluations and final weights as an uninterrupted one. Under DDP the world size must be the one the
    checkpoint was written with (another one is a ValueError): every process then draws the same global
    batches and takes the same rows of them as in the uninterrupted run, from the same weights and optimizer
    state, and rank 0 gets its CPU and CUDA RNG states back; processes of rank > 0 get fresh dropout streams
    (the checkpoint holds rank 0's only), so with dropout their masks differ. On GPUs the result is not
    bitwise either way unless the kernels are deterministic (``torch.use_deterministic_algorithms(True)``
    with ``CUBLAS_WORKSPACE_CONFIG`` set); without that, losses agree to rounding only.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        config: TrainConfig | None = None,
        callbacks: Iterable[Any] | None = None,
        **overrides: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module such as GPT, got {type(model).__name__}")
        for method in ("get_batch", "iter_split"):
            if not callable(getattr(data, method, None)):
                raise TypeError(
                    f"data must have a {method} method (see lmlab.text.data.TokenData), got {type(data).__name__}"
                )
        unknown = sorted(set(overrides) - {f.name for f in fields(TrainConfig)})
        if unknown:
            known = ", ".join(f.name for f in fields(TrainConfig))
            raise TypeError(f"unknown TrainConfig field(s) {unknown}; fields are: {known}")
        if config is None:
            config = TrainConfig(**overrides)
        elif not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        elif overrides:
            config = replace(config, **overrides)
        self.model, self.data, self.config = model, data, config
        self.callbacks = [_as_callback(cb) for cb in (callbacks or [])]

        model_block = context_limit(model)
        self.block_size: int = config.block_size or model_block
        if self.block_size is None:
            raise ValueError("set TrainConfig.block_size: the model reads any length (its context_limit is None)")
        if model_block is not None and self.block_size > model_block:
            raise ValueError(
                f"TrainConfig.block_size {self.block_size} exceeds the model's context limit {model_block}; "
                f"use block_size <= {model_block}"
            )
        data_vocab, model_vocab = getattr(data, "vocab_size", None), getattr(model, "vocab_size", None)
        if data_vocab is not None and model_vocab is not None and data_vocab > model_vocab:
            raise ValueError(
                f"the data has vocab_size {data_vocab} but the model only {model_vocab} token ids; "
                f"build the model with GPTConfig(vocab_size={data_vocab})"
            )

        self.rank, self.world_size, local_rank = _distributed_env()
        self.is_main = self.rank == 0
        self.device = resolve_device(config.device)
        if self.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        if config.amp is True and self.device.type != "cuda":
            raise ValueError(f"amp=True needs a CUDA device, but training runs on {self.device}; use 'auto'")
        self.amp = config.amp is True or (
            config.amp == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        model.to(self.device)

        self.tokens_per_step = config.batch_size * self.block_size * config.grad_accum_steps * self.world_size
        flops_fn = getattr(model, "flops_per_token", None)
        self.flops_per_token: int | None = int(flops_fn(self.block_size)) if callable(flops_fn) else None
        if config.max_flops is not None and self.flops_per_token is None:
            raise ValueError("max_flops needs a model with a flops_per_token(T) method, like lmlab.models.GPT")
        self.decay_steps = self._decay_horizon()  # cosine horizon passed to lr_at

        self.optimizer = _make_optimizer(model, config)
        self._train_model: nn.Module = torch.compile(model) if config.compile else model
        if self.world_size > 1:
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._train_model = DistributedDataParallel(self._train_model, device_ids=ids)

        self.generator = torch.Generator()  # CPU generator for training batches; batches go to the device
        self.step = 0  # optimizer steps completed
        self.tokens = 0  # training tokens seen, all processes together
        self.flops = 0.0 if self.flops_per_token is not None else None  # tokens * flops_per_token
        self.elapsed = 0.0  # wall-clock seconds of training, across resumed runs
        self.history = History()
        self.should_stop = False  # a callback sets it to end the run after the current step
        self.stop_reason: str | None = None
        self._started = False
        self._updating = False  # True while the optimizer changes the weights (a checkpoint would be torn)
        self._rng_snapshot: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None] | None = None
        self._last_eval_step = -1

    # ------------------------------------------------------------------ public
    def fit(self, resume_from: str | os.PathLike | None = None) -> History:
        """Train until the first budget is reached, a callback stops it, or Ctrl-C; return the history.

        A fresh run seeds the batch generator with ``config.seed`` and the global torch RNG (dropout) with
        ``seed + rank``. ``resume_from`` (or ``config.resume`` with an existing ``checkpoint_path``)
        restores a checkpoint first (see :meth:`restore`: bit for bit in one process on the CPU; under DDP
        with the checkpoint's world size only, see the class docstring). Calling ``fit`` again on the same
        trainer continues from where it stopped (raise a budget first). Ctrl-C saves a checkpoint (when
        ``checkpoint_path`` is set) and returns the history instead of raising. The model trains in training
        mode (evaluations switch to eval mode and back); ``fit`` gives it back in the mode it had.
        """
        c = self.config
        if resume_from is not None:
            self.restore(resume_from)
        elif c.resume and not self._started and c.checkpoint_path and Path(c.checkpoint_path).is_file():
            self.restore(c.checkpoint_path)
        elif not self._started:
            self.generator.manual_seed(c.seed)
            torch.manual_seed(c.seed + self.rank)  # dropout masks: reproducible, different on each process
            self._snapshot_rng()
        self._started = True
        self.should_stop, self.stop_reason = False, None
        self._start_time, self._start_elapsed = _clock(), self.elapsed
        self._window = [0, 0.0]  # tokens and seconds of training since the last train record
        self._postfix: dict[str, str] = {}  # what the progress bar shows after the counts
        was_training = self.model.training
        self.model.train()
        bar = tqdm(
            total=self._planned_steps(), initial=self.step, desc="train", unit="step",
            disable=not (c.progress and self.is_main), dynamic_ncols=True,
        )  # fmt: skip
        try:
            while (reason := self._sync_stop(self._local_stop_reason())) is None:
                record = self._train_step()
                bar.update(1)
                if record is not None:
                    self.history.append(record)
                    self._postfix.update(loss=f"{record['train_loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
                    bar.set_postfix(self._postfix)
                    self._run_callbacks("on_step", record)
                if self.step % c.eval_interval == 0:
                    self._eval_and_record(bar)
                if c.checkpoint_interval is not None and self.step % c.checkpoint_interval == 0:
                    self.save_checkpoint()
            self.stop_reason = reason
            if self._last_eval_step != self.step:
                self._eval_and_record(bar)
            if c.checkpoint_path is not None:
                self.save_checkpoint()
        except KeyboardInterrupt:
            self.stop_reason = "interrupt"
            if self._updating:
                warnings.warn("interrupted while updating the weights; no checkpoint written", stacklevel=2)
            elif c.checkpoint_path is not None:
                self.save_checkpoint()
        finally:
            bar.close()
            self.model.train(was_training)
        self.history.stop_reason = self.stop_reason
        if self.is_main:
            for cb in self.callbacks:
                if hasattr(cb, "on_end"):
                    cb.on_end(self, self.history)
        return self.history

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean validation loss in nats per token (see ``TrainConfig.eval_batches``); records nothing.

        The model is evaluated in eval mode (no dropout) and left in the mode it had.
        """
        return self._evaluate()[0]

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write a checkpoint atomically to ``path`` (default ``config.checkpoint_path``); rank 0 only.

        Contents (all loadable with ``torch.load(weights_only=True)``): ``format`` (a tag), ``version`` (1),
        ``model`` (state_dict), ``optimizer`` (state_dict), ``step``, ``tokens``, ``flops``, ``elapsed``
        (seconds), ``history`` (list of record dicts), ``batch_generator`` (the batch sampler's
        ``get_state()``), ``rng_cpu`` (``torch.get_rng_state()``), ``rng_cuda`` (list of CUDA RNG states or
        None), ``model_config`` (``model.config.to_dict()`` or None), ``train_config``
        (``TrainConfig.to_dict()``), ``world_size``. Returns the path, or None on ranks other than 0.
        """
        if path is None and self.config.checkpoint_path is None:
            raise ValueError("no checkpoint path: pass one or set TrainConfig.checkpoint_path")
        path = Path(path if path is not None else self.config.checkpoint_path)
        if not self.is_main:
            return None
        if self._rng_snapshot is None:
            self._snapshot_rng()
        batch_state, cpu_state, cuda_state = self._rng_snapshot
        model_config = getattr(self.model, "config", None)
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "tokens": self.tokens,
            "flops": None if self.flops is None else float(self.flops),
            "elapsed": float(self.elapsed),
            "history": [dict(r) for r in self.history],
            "batch_generator": batch_state,
            "rng_cpu": cpu_state,
            "rng_cuda": cuda_state,
            "model_config": model_config.to_dict() if hasattr(model_config, "to_dict") else None,
            "train_config": self.config.to_dict(),
            "world_size": self.world_size,
        }
        _atomic_save(state, path)
        return path

    # ------------------------------------------------------------------ one step
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer update on one global batch: what :meth:`fit` runs at every step.

        ``x`` and ``y`` are the input ids and targets of the whole global batch, each of shape
        ``(batch_size * grad_accum_steps * world_size, block_size)``; every process passes the same batch
        and uses micro-batch ``i``'s rows ``(i * world_size + rank) * batch_size`` onwards. The step sets
        the learning rate of step ``self.step`` (:func:`lr_at`), sums the gradients of the micro-batches
        (under bf16 autocast when ``self.amp``; DDP all-reduces them at the last one), clips their global
        norm to ``grad_clip``, steps AdamW and advances ``step``, ``tokens`` and ``flops``. The model is in
        training mode during the step and is left in the mode it had.

        Returns ``(loss, grad_norm)``, 0-d tensors on the device that have not been waited for: the mean
        training loss of this process's rows in nats per token, and the global gradient norm before
        clipping. Raises ValueError for a batch of another shape.
        """
        c, n = self.config, self.config.batch_size
        rows = n * c.grad_accum_steps * self.world_size
        for name, t in (("x", x), ("y", y)):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != (rows, self.block_size):
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(
                    f"train_step needs {name} of shape (batch_size * grad_accum_steps * world_size, block_size) "
                    f"= ({rows}, {self.block_size}), got {shape}"
                )
        x, y = x.to(self.device), y.to(self.device)
        lr = lr_at(self.step, c, self.decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        was_training = self.model.training
        if not was_training:
            self.model.train()
        try:
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=self.device)
            for i in range(c.grad_accum_steps):
                lo = (i * self.world_size + self.rank) * n
                xb, yb = x[lo : lo + n], y[lo : lo + n]  # (n, T) each
                last = i == c.grad_accum_steps - 1
                no_sync = self.world_size > 1 and not last  # DDP all-reduces gradients at the last micro-batch
                with self._train_model.no_sync() if no_sync else contextlib.nullcontext():
                    with self._autocast():
                        loss = self._train_model(xb, yb).loss
                    # every window scores block_size tokens, so the mean of the micro-batch means is the mean
                    # over the global batch, and the summed gradients are those of one big batch
                    (loss / c.grad_accum_steps).backward()
                loss_sum += loss.detach()
            max_norm = c.grad_clip if c.grad_clip is not None else math.inf  # inf: measure the norm only
            grad_norm = torch.nn.utils.clip_grad_norm_(self._train_model.parameters(), max_norm)
            self._updating = True
            self.optimizer.step()
            self.step += 1
            self.tokens += self.tokens_per_step
            self.flops = float(self.tokens * self.flops_per_token) if self.flops_per_token is not None else None
            self._snapshot_rng()
            self._updating = False
        finally:
            if not was_training:
                self.model.eval()
        return loss_sum / c.grad_accum_steps, grad_norm.detach()

    def _train_step(self) -> dict[str, Any] | None:
        """Draw one global batch and take :meth:`train_step` on it; returns a train record every log_interval steps."""
        c, n = self.config, self.config.batch_size
        t0 = _clock()
        lr = lr_at(self.step, c, self.decay_steps)  # what train_step sets for this step
        x_all, y_all = self.data.get_batch(
            "train", n * c.grad_accum_steps * self.world_size, self.block_size,
            generator=self.generator, device=self.device,
        )  # fmt: skip
        loss, grad_norm = self.train_step(x_all, y_all)
        log = self.step % c.log_interval == 0
        train_loss = self._mean_over_ranks(loss) if log else 0.0  # waits for the GPU
        self._window[0] += self.tokens_per_step
        self._window[1] += _clock() - t0
        if not log:
            return None
        tokens_per_s = self._window[0] / max(self._window[1], 1e-9)
        self._window = [0, 0.0]
        return dict(
            kind="train", step=self.step, tokens=self.tokens, flops=self.flops, elapsed=self._tick(), lr=lr,
            train_loss=train_loss, grad_norm=float(grad_norm), tokens_per_s=tokens_per_s,
        )  # fmt: skip

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _evaluate(self) -> tuple[float, int]:
        """(mean val NLL in nats per token, tokens scored): sum of nats / number of scored tokens."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.int64, device=self.device)
        with eval_mode(self.model):  # no dropout; the caller's train/eval mode comes back afterwards
            for x, y in self._val_batches():
                with self._autocast():
                    total += self.model(x, y, reduction="sum").loss.double()
                count += (y != IGNORE_INDEX).sum()
        if self.world_size > 1:
            dist.all_reduce(total)
            dist.all_reduce(count)
        if int(count) == 0:
            raise ValueError("the val split has no tokens to score; give the data a non-empty val split")
        return float(total) / int(count), int(count)

    def _val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share of the val batches: every world_size-th batch, or its rows of random ones."""
        c, n = self.config, self.config.batch_size
        if c.eval_batches is None:  # exact: each window of the split once, batches dealt out to the processes
            for i, (x, y) in enumerate(self.data.iter_split("val", n, self.block_size, device=self.device)):
                if i % self.world_size == self.rank:
                    yield x, y
            return
        # the same random batches at every evaluation, so that evaluations compare like with like
        generator = torch.Generator().manual_seed(c.seed + 1)
        for _ in range(c.eval_batches):
            x, y = self.data.get_batch(
                "val", n * self.world_size, self.block_size, generator=generator, device=self.device
            )
            lo = self.rank * n
            yield x[lo : lo + n], y[lo : lo + n]

    def _eval_and_record(self, bar: tqdm) -> None:
        val_loss, val_tokens = self._evaluate()
        record = dict(
            kind="eval", step=self.step, tokens=self.tokens, flops=self.flops, elapsed=self._tick(),
            val_loss=val_loss, val_tokens=val_tokens,
        )  # fmt: skip
        self.history.append(record)
        self._last_eval_step = self.step
        self._postfix["val_loss"] = f"{val_loss:.4f}"
        bar.set_postfix(self._postfix)
        self._run_callbacks("on_eval", record)

    # ------------------------------------------------------------------ budgets
    def _tick(self) -> float:
        """Update and return ``elapsed``."""
        self.elapsed = self._start_elapsed + (_clock() - self._start_time)
        return self.elapsed

    def _local_stop_reason(self) -> str | None:
        c = self.config
        self._tick()
        if self.should_stop:
            return "callback"
        if c.max_steps is not None and self.step >= c.max_steps:
            return "max_steps"
        if c.max_tokens is not None and self.tokens >= c.max_tokens:
            return "max_tokens"
        if c.max_flops is not None and self.flops >= c.max_flops:
            return "max_flops"
        if c.max_seconds is not None and self.elapsed >= c.max_seconds:
            return "max_seconds"
        return None

    def _sync_stop(self, reason: str | None) -> str | None:
        """Rank 0's decision for everyone (clocks and callbacks differ between processes)."""
        if self.world_size == 1:
            return reason
        code = torch.tensor([0 if reason is None else STOP_REASONS.index(reason) + 1], device=self.device)
        dist.broadcast(code, src=0)
        return None if int(code) == 0 else STOP_REASONS[int(code) - 1]

    def _decay_horizon(self) -> int | None:
        """Cosine horizon: decay_steps, else max_steps, else the steps that max_tokens/max_flops allow."""
        c = self.config
        if c.decay_steps is not None or c.max_steps is not None:
            return c.decay_steps if c.decay_steps is not None else c.max_steps
        estimates = []
        if c.max_tokens is not None:
            estimates.append(math.ceil(c.max_tokens / self.tokens_per_step))
        if c.max_flops is not None:
            estimates.append(math.ceil(c.max_flops / (self.flops_per_token * self.tokens_per_step)))
        return min(estimates) if estimates else None  # None: max_seconds only, constant lr after warmup

    def _planned_steps(self) -> int | None:
        c = self.config
        steps = [c.max_steps] if c.max_steps is not None else []
        if c.max_tokens is not None:
            steps.append(math.ceil(c.max_tokens / self.tokens_per_step))
        if c.max_flops is not None:
            steps.append(math.ceil(c.max_flops / (self.flops_per_token * self.tokens_per_step)))
        return min(steps) if steps else None

    # ------------------------------------------------------------------ helpers
    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def _mean_over_ranks(self, value: torch.Tensor) -> float:
        if self.world_size > 1:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world_size
        return float(value)

    def _run_callbacks(self, method: str, record: dict[str, Any]) -> None:
        if self.is_main:
            for cb in self.callbacks:
                fn = getattr(cb, method, None)
                if fn is not None:
                    fn(self, record)

    def _snapshot_rng(self) -> None:
        """RNG states as of the end of the last completed step: what a checkpoint of that step stores."""
        cuda = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        self._rng_snapshot = (self.generator.get_state(), torch.get_rng_state(), cuda)

    def restore(self, path: str | os.PathLike) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint` into this trainer; the next :meth:`fit` continues it.

        Restores the weights, the optimizer state, the counters (step, tokens, flops, elapsed seconds), the
        history and the RNG states (batch sampler; rank 0's CPU and CUDA generators), so that the run goes on
        as if it had not stopped: bit for bit in one process on the CPU, and under DDP with the same world size
        the same batches on every process (see the class docstring for what differs on GPUs and on ranks > 0).

        Raises FileNotFoundError for a missing file, and ValueError for a damaged or foreign file, a checkpoint
        of another world size or of another model configuration (naming the fields that differ), all before
        the trainer changes, or for weights and optimizer state that do not fit. A resume with other trajectory
        fields of the config (batch size, learning rates, seed, ...) warns that the run will differ.
        """
        path = Path(path)
        ckpt = load_checkpoint(path)
        saved_world = int(ckpt["world_size"])
        if saved_world != self.world_size:
            how = "one process, without torchrun" if saved_world == 1 else f"torchrun --nproc-per-node={saved_world}"
            raise ValueError(
                f"checkpoint {path} was written by a run with world_size {saved_world} but this run has "
                f"world_size {self.world_size}: each step's global batch is batch_size x grad_accum_steps x "
                f"world_size windows from the saved sampler state, so another number of processes would train on "
                f"other batches; resume it with {saved_world} process(es) ({how}), or start a fresh run"
            )
        saved = ckpt["model_config"]
        model_config = getattr(self.model, "config", None)
        if saved is not None and hasattr(model_config, "to_dict"):
            ours = model_config.to_dict()
            diffs = [f"{k} (checkpoint {saved.get(k)!r}, model {ours.get(k)!r})"
                     for k in sorted(set(saved) | set(ours)) if saved.get(k) != ours.get(k)]  # fmt: skip
            if diffs:
                raise ValueError(
                    f"checkpoint {path} was written for another model; fields that differ: {', '.join(diffs)}"
                )
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"checkpoint {path} does not fit this model or optimizer: {err}") from err
        self.step, self.tokens = int(ckpt["step"]), int(ckpt["tokens"])
        self.flops = ckpt["flops"] if self.flops_per_token is not None else None
        self.elapsed = float(ckpt["elapsed"])
        self.history = History(ckpt["history"])
        evals = self.history.evals
        self._last_eval_step = evals[-1]["step"] if evals else -1
        self.generator.set_state(ckpt["batch_generator"])
        if self.rank == 0:
            torch.set_rng_state(ckpt["rng_cpu"])
            if ckpt["rng_cuda"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
        else:  # the checkpoint holds rank 0's RNG only; give the other processes fresh, distinct streams
            torch.manual_seed(self.config.seed + self.rank + self.world_size * self.step)
        self._snapshot_rng()
        self._started = True
        changed = [k for k in _TRAJECTORY_FIELDS if ckpt["train_config"].get(k) != self.config.to_dict()[k]]
        if changed:
            warnings.warn(
                f"resuming {path} with different {changed}: the run will differ from an uninterrupted one",
                UserWarning,
                stacklevel=3,
            )
