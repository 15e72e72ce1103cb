"""Benchmarks that compare lmlab with a named peer in the same run and print ratios.

``lmlab bench train``: training steps (forward, backward, AdamW) of lmlab's GPT against transformers'
``GPT2LMHeadModel`` with the same shape and the same weights, on the same batches, fp32, interleaved
repeats, median. On a CUDA device both sides take :meth:`lmlab.train.Trainer.train_step`, the step that
``Trainer.fit`` runs (bf16 autocast where the GPU has it, gradient clipping, fused AdamW). Achieved GFLOP/s
use the PaLM training-FLOP count (``GPT.flops_per_token``) and are compared with this machine's measured fp32
1024x1024 matmul rate (CPU) or the device's data-sheet peak (GPU: MFU; see :func:`peak_tflops`).

``lmlab bench decode``: generation with ``lmlab.generation`` against transformers' ``generate`` on the same
weights (greedy and beam search, batch 1, KV cache on both sides), checking that the outputs are
identical; and lmlab's greedy decoding with and without the KV cache as the output grows.

``lmlab bench attention``: time and peak memory of lmlab's GPT with each attention kind as the sequence
grows (:func:`lmlab.attention_cost.measure`), lengths whose estimated memory exceeds the limit reported as
skipped, power laws fitted past the crossover length, the longest length each kind handled; and, for full
attention, one attention layer of lmlab (``attention_impl="sdpa"``) against the same layer written with
direct calls to PyTorch's ``scaled_dot_product_attention`` (the named peer) on the same input and weights.

``lmlab bench speculative``: self-speculative greedy decoding of multi-token models
(:func:`lmlab.generation.speculative_greedy`, Gloeckle et al. 2024) against plain greedy decoding, the peer,
on the same briefly trained model with 2, 3 and 4 heads: tokens/s, their ratio, the drafts' acceptance rate
and tokens per forward pass, outputs checked identical.

``lmlab bench sweep`` (:mod:`lmlab.bench_sweep`, re-exported here): a scaling sweep in one process and with
parallel workers: runs per minute and their ratio, where the one-process wall time went (training, final
evaluations, between runs), and the GFLOP/s of the smallest and largest model against the one-thread matmul.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from lmlab import attention_cost as ac
from lmlab.bench_sweep import SWEEP_BENCH_CONFIG, SWEEP_BENCH_QUICK_CONFIG, SweepBenchResult, SweepTiming, bench_sweep
from lmlab.checks import check_int, check_number, is_int
from lmlab.device import resolve_device
from lmlab.lm import LMOutput, lm_loss
from lmlab.models import GPT, GPTConfig
from lmlab.train import TrainConfig, Trainer

__all__ = [
    "matmul_gflops",
    "bench_train",
    "TrainBenchResult",
    "bench_decode",
    "DecodeBenchResult",
    "DecodeBenchRow",
    "CacheBenchRow",
    "GPU_PEAK_TFLOPS",
    "peak_tflops",
    "bench_attention",
    "AttentionBenchResult",
    "AttentionBenchRow",
    "SdpaPeerRow",
    "ATTENTION_LENGTHS_CPU",
    "ATTENTION_LENGTHS_GPU",
    "bench_sweep",
    "SweepBenchResult",
    "SweepTiming",
    "SWEEP_BENCH_CONFIG",
    "SWEEP_BENCH_QUICK_CONFIG",
    "bench_speculative",
    "SpeculativeBenchResult",
    "SpeculativeBenchRow",
    "SPECULATIVE_QUICK",
]

# Dense peak TFLOP/s by device name, as torch.cuda.get_device_name reports it: (fp32 on the CUDA cores,
# without TF32; 16-bit tensor cores: bf16, fp16 on the T4, which has no bf16). The data sheets quote the
# tensor-core rates with 2:4 structured sparsity; the dense rates here are half of those. Sources, NVIDIA's
# data sheets: H100 Tensor Core GPU (its SXM, PCIe and NVL columns), H200 Tensor Core GPU (SXM and NVL),
# A100 Tensor Core GPU (SXM and PCIe have the same peaks), L4 Tensor Core GPU, L40S GPU, A10 Tensor Core GPU,
# T4 Tensor Core GPU. Names are matched whole (see peak_tflops), so "NVIDIA L4" is not "NVIDIA L40S".
GPU_PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "NVIDIA H100 80GB HBM3": (67.0, 989.0),  # H100 SXM5
    "NVIDIA H100 PCIe": (51.0, 756.0),
    "NVIDIA H100 NVL": (60.0, 835.0),
    "NVIDIA H200": (67.0, 989.0),  # H200 SXM: the H100 SXM's compute with more memory
    "NVIDIA H200 NVL": (60.0, 835.0),
    "NVIDIA A100-SXM4-40GB": (19.5, 312.0),
    "NVIDIA A100-SXM4-80GB": (19.5, 312.0),
    "NVIDIA A100-PCIE-40GB": (19.5, 312.0),
    "NVIDIA A100 80GB PCIe": (19.5, 312.0),
    "NVIDIA L4": (30.3, 121.0),
    "NVIDIA L40S": (91.6, 362.0),
    "NVIDIA A10": (31.2, 125.0),
    "Tesla T4": (8.1, 65.0),
}


def _normalise_device_name(name: str) -> str:
    return " ".join(name.split()).casefold()


def peak_tflops(device_name: str) -> tuple[float, float] | None:
    """Dense peak TFLOP/s ``(fp32, bf16)`` of the GPU called ``device_name``, or None for one not listed.

    ``device_name`` is what ``torch.cuda.get_device_name`` returns; it must equal a key of
    :data:`GPU_PEAK_TFLOPS` up to case and runs of spaces (no substring matching: the L4 and the L40S, or
    the H100 SXM and PCIe, have different peaks).
    """
    if not isinstance(device_name, str):
        raise TypeError(f"device_name must be a str, got {type(device_name).__name__}")
    table = {_normalise_device_name(k): v for k, v in GPU_PEAK_TFLOPS.items()}
    return table.get(_normalise_device_name(device_name))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(n: int = 1024, repeats: int = 20, device: str | torch.device = "cpu") -> float:
    """Measured fp32 rate of an ``n x n`` by ``n x n`` matmul in GFLOP/s (2·n³ FLOPs each), best of 5."""
    dev = resolve_device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(dev)
        best = min(best, (time.perf_counter() - t0) / repeats)
    return 2 * n**3 / best / 1e9


@dataclass
class TrainBenchResult:
    """Median training throughput (tokens/s) of each contestant on one configuration."""

    preset: str
    batch_size: int
    block_size: int
    threads: int
    device: str
    tokens_per_s: dict[str, float]  # contestant name -> median tokens/s; the first two are the headline pair
    flops_per_token: int
    reference_gflops: float | None  # measured matmul rate (CPU) or device peak (GPU), GFLOP/s; None: unknown
    reference_name: str
    precision: str = "fp32"  # "fp32" or "bf16 autocast"
    recipe: str = "forward + backward + fused AdamW step"  # what one timed step does
    compile_seconds: float | None = None  # warm-up (compilation) of the compiled contestant, not in its rate

    @property
    def ratio(self) -> float:
        """lmlab (its default settings) tokens/s divided by transformers (its default settings) tokens/s."""
        names = list(self.tokens_per_s)
        return self.tokens_per_s[names[0]] / self.tokens_per_s[names[1]]

    def achieved_gflops(self, tokens_per_s: float) -> float:
        return tokens_per_s * self.flops_per_token / 1e9

    def report(self) -> str:
        names = list(self.tokens_per_s)
        rows = [
            f"train bench: preset {self.preset}, batch {self.batch_size}, block {self.block_size}, "
            f"device {self.device}, {self.threads} threads, {self.precision}; {self.recipe}",
            f"  {'':34}{'tokens/s':>10}{'GFLOP/s':>9}{'of reference':>14}",
        ]
        for name, tps in self.tokens_per_s.items():
            g = self.achieved_gflops(tps)
            share = f"{g / self.reference_gflops:14.1%}" if self.reference_gflops else f"{'n/a':>14}"
            rows.append(f"  {name:34}{tps:10,.0f}{g:9.1f}{share}")
        rows.append(f"  ratio {names[0]} / {names[1]}: {self.ratio:.3f}x")
        if len(names) >= 4:
            same = self.tokens_per_s[names[2]] / self.tokens_per_s[names[1]]
            rows.append(f"  ratio {names[2]} / {names[1]} (same attention kernel): {same:.3f}x")
            best = max(names[1:], key=lambda n: self.tokens_per_s[n] if n.startswith("transformers") else 0)
            # (the compiled row, if any, is compared below)
            rows.append(f"  ratio {names[0]} / fastest transformers ({best}): "
                        f"{self.tokens_per_s[names[0]] / self.tokens_per_s[best]:.3f}x")
        compiled = [n for n in names if n.startswith("lmlab compiled")]
        for name in compiled:
            rows.append(f"  ratio {name} / {names[1]}: {self.tokens_per_s[name] / self.tokens_per_s[names[1]]:.3f}x"
                        f"; over eager lmlab {self.tokens_per_s[name] / self.tokens_per_s[names[0]]:.3f}x")
        if self.compile_seconds is not None:
            rows.append(f"  compiling (3 warm-up steps of the compiled model) took {self.compile_seconds:.1f} s")
        if self.reference_gflops:
            rows.append(f"  reference: {self.reference_name} = {self.reference_gflops:,.1f} GFLOP/s")
        else:
            rows.append(f"  reference: {self.reference_name}")
        return "\n".join(rows)


def _time_steps(step: Callable[[int], None], start: int, n: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for i in range(start, start + n):
        step(i)
    _sync(device)
    return time.perf_counter() - t0


def _train_step(model: torch.nn.Module, batches: list[torch.Tensor], hf: bool) -> Callable[[int], None]:
    """One optimizer step on batch i: the same loss (mean cross-entropy of next tokens) for both libraries.

    The optimizer is fused AdamW for both: lmlab's Trainer uses it, and so does transformers' Trainer by
    default with torch >= 2.8.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step(i: int) -> None:
        batch = batches[i % len(batches)]
        x, y = batch[:, :-1], batch[:, 1:]
        if hf:
            logits = model(input_ids=x).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        else:
            loss = model(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


class _NextTokenLM(torch.nn.Module):
    """transformers' ``GPT2LMHeadModel`` behind lmlab's model interface, so that a Trainer can train it.

    ``model(x, y).loss`` is :func:`lmlab.lm.lm_loss` of its logits: the loss lmlab's GPT computes.
    """

    def __init__(self, hf_model: torch.nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, reduction: str = "mean") -> LMOutput:
        logits = self.hf(input_ids=x).logits  # (B, T, V)
        return LMOutput(logits, None if y is None else lm_loss(logits, y, reduction=reduction))


def _uses_trainer_step(device: torch.device) -> bool:
    """Whether the train bench times Trainer.train_step (on CUDA) rather than the plain fp32 step (CPU)."""
    return device.type == "cuda"


def _bench_trainer(model: torch.nn.Module, vocab_size: int, batch_size: int, block_size: int,
                   device: torch.device, seed: int) -> Trainer:
    """A Trainer whose train_step is timed: constant lr 1e-4 (as the plain step), Trainer defaults otherwise."""
    from lmlab.text.data import TokenData

    ids = torch.zeros(2 * block_size + 2, dtype=torch.int64)  # never read: the bench passes its own batches
    config = TrainConfig(
        batch_size=batch_size, block_size=block_size, max_steps=2**62, lr=1e-4, min_lr=1e-4, warmup_steps=0,
        device=str(device), progress=False, seed=seed,
    )  # fmt: skip
    return Trainer(model, TokenData(ids, ids, vocab_size=vocab_size), config)


def _trainer_step(trainer: Trainer, batches: list[torch.Tensor]) -> Callable[[int], None]:
    """Trainer.train_step on batch i: the step that Trainer.fit takes."""

    def step(i: int) -> None:
        batch = batches[i % len(batches)]
        trainer.train_step(batch[:, :-1], batch[:, 1:])

    return step


def _reference(device: torch.device, bf16: bool) -> tuple[str, float | None]:
    """(name, GFLOP/s) to compare with: the measured fp32 matmul rate on a CPU, the data-sheet peak on a GPU."""
    if device.type != "cuda":
        return "1024x1024 fp32 matmul", matmul_gflops(device=device)
    gpu = torch.cuda.get_device_name(device)
    peak = peak_tflops(gpu)
    if peak is None:
        return f"no peak FLOP/s known for {gpu!r} (not in lmlab.bench.GPU_PEAK_TFLOPS), so no MFU", None
    fp32, half = peak
    return (f"{gpu} dense bf16 peak (MFU)", half * 1e3) if bf16 else (f"{gpu} fp32 peak (MFU)", fp32 * 1e3)


def bench_train(
    preset: str = "tiny",
    *,
    batch_size: int = 12,
    block_size: int | None = None,
    steps: int = 10,
    repeats: int = 9,
    threads: int | None = 2,
    device: str = "cpu",
    seed: int = 0,
    compile_model: bool = True,
) -> TrainBenchResult:
    """Tokens/s of training steps, lmlab vs transformers ``GPT2LMHeadModel`` on identical weights and batches.

    Contestants: lmlab with its default attention ("auto"), transformers with its default ("sdpa"), and
    the two with the same kernel choice (lmlab "sdpa", transformers "eager" explicit attention). On a CPU
    a step is forward, backward and fused AdamW in fp32; on a CUDA device every contestant is trained by its
    own :class:`lmlab.train.Trainer` and a step is :meth:`~lmlab.train.Trainer.train_step`, the one
    ``Trainer.fit`` takes (bf16 autocast when the GPU supports it, gradient clipping at 1.0, fused AdamW).
    Each repeat times ``steps`` steps of every contestant, in an order that rotates between repeats; the
    median over repeats is reported. With ``compile_model`` a fifth contestant is lmlab's model compiled
    with ``torch.compile`` (inductor), timed after its compilation, which is reported apart
    (``compile_seconds``: the warm-up steps that compiled forward and backward). Needs ``transformers``
    (``pip install -e ".[dev]"``).
    """
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("lmlab bench train compares with transformers: pip install transformers") from err
    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    cfg = GPTConfig.preset(preset)
    T = block_size or cfg.block_size
    if not 1 <= T <= cfg.block_size:
        raise ValueError(f"block_size must be in [1, {cfg.block_size}] for preset {preset!r}, got {T}")

    peer = _hf_gpt2_like(transformers, cfg, seed, attn="sdpa").to(dev).train()
    peer_eager = _hf_gpt2_like(transformers, cfg, seed, attn="eager").to(dev).train()
    ours = GPT.from_hf_gpt2(peer).to(dev).train()
    ours_sdpa = GPT(replace(ours.config, attention_impl="sdpa")).to(dev).train()
    ours_sdpa.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, cfg.vocab_size, (batch_size, T + 1), generator=g).to(dev) for _ in range(4)]
    models = {
        f"lmlab (attention={ours.config.attention_impl})": (ours, False),
        "transformers (attn sdpa, default)": (peer, True),
        "lmlab (attention=sdpa)": (ours_sdpa, False),
        "transformers (attn eager)": (peer_eager, True),
    }
    if compile_model:
        twin = GPT(ours.config).to(dev).train()
        twin.load_state_dict(ours.state_dict())
        models["lmlab compiled (torch.compile)"] = (torch.compile(twin), False)
    precision, recipe = "fp32", "forward + backward + fused AdamW step"
    if _uses_trainer_step(dev):
        trainers = {name: _bench_trainer(_NextTokenLM(m) if hf else m, cfg.vocab_size, batch_size, T, dev, seed)
                    for name, (m, hf) in models.items()}  # fmt: skip
        contestants = {name: _trainer_step(trainer, batches) for name, trainer in trainers.items()}
        bf16 = next(iter(trainers.values())).amp
        precision = "bf16 autocast" if bf16 else "fp32"
        recipe = "Trainer.train_step: forward + backward + gradient clipping + fused AdamW step"
    else:
        bf16 = False
        contestants = {name: _train_step(m, batches, hf=hf) for name, (m, hf) in models.items()}
    compile_seconds = None
    for name, step in contestants.items():  # warm-up; the compiled model compiles here
        seconds = _time_steps(step, 0, 3, dev)
        if name.startswith("lmlab compiled"):
            compile_seconds = seconds
    tokens = steps * batch_size * T
    times: dict[str, list[float]] = {name: [] for name in contestants}
    names = list(contestants)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(tokens / _time_steps(contestants[name], r * steps, steps, dev))
    ref_name, ref = _reference(dev, bf16)
    return TrainBenchResult(
        preset=preset,
        batch_size=batch_size,
        block_size=T,
        threads=torch.get_num_threads(),
        device=str(dev),
        tokens_per_s={name: statistics.median(v) for name, v in times.items()},
        flops_per_token=ours.flops_per_token(T),
        reference_gflops=ref,
        reference_name=ref_name,
        precision=precision,
        recipe=recipe,
        compile_seconds=compile_seconds,
    )


# ---------------------------------------------------------------------------------------------- decoding
@dataclass
class DecodeBenchRow:
    """One generation task timed for lmlab and transformers on the same weights and prompt."""

    shape: str  # preset whose shape the model has
    params: int  # parameters, embeddings included
    method: str  # "greedy" or "beam search, N beams"
    new_tokens: int  # tokens generated (no EOS: every run generates all of them)
    tokens_per_s: dict[str, float]  # "lmlab" and "transformers": median new tokens per second
    identical: bool  # lmlab's output equals transformers'

    @property
    def ratio(self) -> float:
        """lmlab tokens/s divided by transformers tokens/s (> 1: lmlab is faster)."""
        return self.tokens_per_s["lmlab"] / self.tokens_per_s["transformers"]


@dataclass
class CacheBenchRow:
    """lmlab greedy decoding of ``new_tokens`` tokens with and without the KV cache (median seconds)."""

    new_tokens: int
    seconds: dict[str, float]  # "with cache", "without cache"

    def ms_per_token(self, which: str) -> float:
        return 1e3 * self.seconds[which] / self.new_tokens

    @property
    def slowdown(self) -> float:
        """Time without the cache divided by time with it."""
        return self.seconds["without cache"] / self.seconds["with cache"]


@dataclass
class DecodeBenchResult:
    """Everything ``lmlab bench decode`` measured; :meth:`report` prints it."""

    threads: int
    device: str
    prompt_len: int
    repeats: int
    rows: list[DecodeBenchRow]
    cache_shape: str
    cache_block_size: int
    cache_rows: list[CacheBenchRow]
    compile_seconds: dict[str, float]  # shape -> seconds to compile the one-token step (batch 1), not in the rows

    def report(self) -> str:
        out = [
            f"decode bench: lmlab vs transformers generate, same weights, batch 1, prompt {self.prompt_len} tokens, "
            f"no EOS, fp32, device {self.device}, {self.threads} threads, median of {self.repeats} interleaved repeats",
            f"  {'shape':7}{'params':>8}  {'method':26}{'new tokens':>11}{'lmlab tok/s':>13}"
            f"{'transformers tok/s':>20}{'ratio':>8}  identical",
        ]
        for r in self.rows:
            out.append(
                f"  {r.shape:7}{r.params / 1e6:7.1f}M  {r.method:26}{r.new_tokens:>11}"
                f"{r.tokens_per_s['lmlab']:13,.0f}{r.tokens_per_s['transformers']:20,.0f}"
                f"{r.ratio:7.2f}x  {'yes' if r.identical else 'NO'}"
            )
        if self.rows:
            same = all(r.identical for r in self.rows)
            out.append(f"  identical: {'yes' if same else 'NO'} (lmlab's outputs equal transformers' token for token; "
                       "samples: the same seed, lmlab's generator against transformers' global one)")
        for shape, secs in self.compile_seconds.items():
            out.append(f"  compiling the {shape} one-token step (torch.compile, inductor) took {secs:.1f} s, "
                       "not counted in its row (the batch of samples compiles its own during its untimed first run)")
        if self.cache_rows:
            out.append(
                f"KV cache: lmlab greedy on the {self.cache_shape} shape (block_size {self.cache_block_size}), "
                "with vs without the cache (same tokens)"
            )
            out.append(f"  {'new tokens':>10}{'with cache ms/token':>21}{'without cache ms/token':>24}{'slowdown':>10}")
            for c in self.cache_rows:
                out.append(
                    f"  {c.new_tokens:>10}{c.ms_per_token('with cache'):21.3f}"
                    f"{c.ms_per_token('without cache'):24.3f}{c.slowdown:9.1f}x"
                )
        return "\n".join(out)


def _median_seconds(
    contestants: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median wall time of each zero-argument call; every repeat runs all of them, in a rotating order."""
    names = list(contestants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            _sync(device)
            t0 = time.perf_counter()
            contestants[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def _hf_gpt2_like(transformers: Any, cfg: GPTConfig, seed: int, attn: str = "sdpa") -> torch.nn.Module:
    """A randomly initialised transformers GPT2LMHeadModel of shape ``cfg``, without EOS, in eval mode.

    ``attn`` is transformers' attention implementation: "sdpa" (its default) or "eager" (explicit).
    """
    torch.manual_seed(seed)
    hf_cfg = transformers.GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        activation_function="gelu",  # exact GELU, as lmlab's default
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,  # no EOS: every run generates exactly the requested number of tokens
        pad_token_id=0,
        attn_implementation=attn,
    )
    return transformers.GPT2LMHeadModel(hf_cfg).eval()


def _generation_tasks(
    ours: GPT, compiled: GPT | None, peer: torch.nn.Module, prompt: torch.Tensor, greedy_tokens: int,
    beam_tokens: int, num_beams: int, num_samples: int, seed: int,
) -> dict[str, tuple[int, Callable[[], list], Callable[[], list], bool]]:
    """method -> (new tokens per row, lmlab call, transformers call, must be identical); each call returns
    token lists (prompt + generated) or, for sampling, one list per sample."""
    from lmlab.generation import beam_search, greedy, sample_batch

    input_ids, mask = prompt.unsqueeze(0), torch.ones(1, prompt.numel(), dtype=torch.long, device=prompt.device)

    def hf(n: int, beams: int) -> list[int]:
        with torch.no_grad():
            out = peer.generate(input_ids, attention_mask=mask, max_new_tokens=n, num_beams=beams, do_sample=False,
                                pad_token_id=0)
        return out[0].tolist()

    def hf_samples(n: int) -> list[list[int]]:
        torch.manual_seed(seed)  # transformers draws from the global generator
        with torch.no_grad():
            out = peer.generate(input_ids, attention_mask=mask, max_new_tokens=n, do_sample=True, top_k=0,
                                num_return_sequences=num_samples, pad_token_id=0)
        return out[:, prompt.numel() :].tolist()

    def lmlab_samples(n: int, model: GPT) -> list[list[int]]:
        g = torch.Generator(device=prompt.device).manual_seed(seed)
        return sample_batch(model, prompt, num_samples=num_samples, max_new_tokens=n, generator=g).tolist()

    def lmlab_beam() -> list[int]:
        return beam_search(ours, prompt, num_beams=num_beams, max_new_tokens=beam_tokens)[0].tokens

    tasks = {
        "greedy": (greedy_tokens, partial(greedy, ours, prompt, max_new_tokens=greedy_tokens),
                   partial(hf, greedy_tokens, 1), True),
        f"beam search, {num_beams} beams": (beam_tokens, lmlab_beam, partial(hf, beam_tokens, num_beams), True),
        f"{num_samples} samples, batched": (greedy_tokens, partial(lmlab_samples, greedy_tokens, ours),
                                            partial(hf_samples, greedy_tokens), False),
    }  # fmt: skip
    if compiled is not None:
        compiled_greedy = partial(greedy, compiled, prompt, max_new_tokens=greedy_tokens)
        tasks["greedy, compiled step"] = (greedy_tokens, compiled_greedy, partial(hf, greedy_tokens, 1), True)
        # the batch of num_samples rows compiles its own step during the untimed first call
        compiled_samples = partial(lmlab_samples, greedy_tokens, compiled)
        tasks[f"{num_samples} samples, compiled step"] = (greedy_tokens, compiled_samples,
                                                          partial(hf_samples, greedy_tokens), False)  # fmt: skip
    return tasks


def bench_decode(
    shapes: tuple[str, ...] = ("tiny", "small"),
    *,
    greedy_tokens: int = 200,
    beam_tokens: int = 64,
    num_beams: int = 4,
    prompt_len: int = 16,
    cache_lengths: tuple[int, ...] = (64, 128, 256, 512, 1024),
    cache_shape: str = "tiny",
    repeats: int = 5,
    cache_repeats: int = 3,
    threads: int | None = 2,
    device: str = "cpu",
    seed: int = 0,
    num_samples: int = 16,
    compile_step: bool = True,
) -> DecodeBenchResult:
    """Generation speed, lmlab vs transformers ``generate`` on identical weights, and the KV cache's effect.

    For each preset shape in ``shapes`` (vocabulary 256; block_size raised to fit prompt + output): greedy
    decoding of ``greedy_tokens`` tokens and beam search with ``num_beams`` beams for ``beam_tokens``
    tokens, batch 1, both libraries with their KV caches; ``num_samples`` samples of ``greedy_tokens``
    tokens of one prompt (lmlab's ``sample_batch`` against ``generate(do_sample=True, top_k=0,
    num_return_sequences=num_samples)``, tokens/s over all rows); and, with ``compile_step``, greedy
    decoding through :meth:`GPT.compile_decoding` (its compile time reported apart). Greedy and beam outputs
    are checked to be identical (a RuntimeError otherwise); samples are compared and the report says
    whether they are. Then lmlab's greedy decoding on the ``cache_shape`` shape, with block_size
    ``prompt_len + max(cache_lengths)``, with and without the KV cache, for each of ``cache_lengths``.
    Times are medians over interleaved repeats. Needs ``transformers`` when ``shapes`` is not empty.
    """
    from lmlab.generation import greedy

    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    for name, value in (("greedy_tokens", greedy_tokens), ("beam_tokens", beam_tokens), ("num_beams", num_beams),
                        ("prompt_len", prompt_len), ("repeats", repeats), ("cache_repeats", cache_repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in cache_lengths):
        raise ValueError(f"cache_lengths must be integers >= 1, got {cache_lengths!r}")
    g = torch.Generator().manual_seed(seed)
    rows: list[DecodeBenchRow] = []
    compile_seconds: dict[str, float] = {}
    if shapes:
        try:
            import transformers
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("lmlab bench decode compares with transformers: pip install transformers") from err
    for shape in shapes:
        base = GPTConfig.preset(shape)
        cfg = replace(base, block_size=max(base.block_size, prompt_len + max(greedy_tokens, beam_tokens)))
        peer = _hf_gpt2_like(transformers, cfg, seed).to(dev)
        ours = GPT.from_hf_gpt2(peer).to(dev).eval()
        prompt = torch.randint(0, cfg.vocab_size, (prompt_len,), generator=g).to(dev)
        compiled = None
        if compile_step:
            compiled = GPT.from_hf_gpt2(peer).to(dev).eval().compile_decoding()
            t0 = time.perf_counter()
            greedy(compiled, prompt, max_new_tokens=2)  # compiles the one-token step for batch 1
            compile_seconds[shape] = time.perf_counter() - t0
        tasks = _generation_tasks(ours, compiled, peer, prompt, greedy_tokens, beam_tokens, num_beams, num_samples,
                                  seed)  # fmt: skip
        for method, (n, ours_fn, hf_fn, must_match) in tasks.items():
            mine, theirs = ours_fn(), hf_fn()  # also the warm-up
            if must_match and mine != theirs:
                raise RuntimeError(
                    f"{shape} {method}: lmlab's output differs from transformers'\n  lmlab:        {mine}\n"
                    f"  transformers: {theirs}"
                )
            secs = _median_seconds({"lmlab": ours_fn, "transformers": hf_fn}, repeats, dev)
            total = n * (len(mine) if isinstance(mine[0], list) else 1)  # new tokens over all rows
            rows.append(DecodeBenchRow(shape, ours.num_params(non_embedding=False), method, total,
                                       {k: total / v for k, v in secs.items()}, identical=mine == theirs))

    cache_rows: list[CacheBenchRow] = []
    cache_block = prompt_len + max(cache_lengths, default=0)
    if cache_lengths:
        torch.manual_seed(seed)
        model = GPT(GPTConfig.preset(cache_shape, block_size=cache_block)).to(dev).eval()
        prompt = torch.randint(0, model.vocab_size, (prompt_len,), generator=g).to(dev)
        for n in cache_lengths:
            cached = partial(greedy, model, prompt, max_new_tokens=n)
            uncached = partial(greedy, model, prompt, max_new_tokens=n, use_cache=False)
            if cached() != uncached():  # also the warm-up
                raise RuntimeError(f"greedy decoding of {n} tokens differs with and without the KV cache")
            secs = _median_seconds({"with cache": cached, "without cache": uncached}, cache_repeats, dev)
            cache_rows.append(CacheBenchRow(n, secs))
    return DecodeBenchResult(
        threads=torch.get_num_threads(),
        device=str(dev),
        prompt_len=prompt_len,
        repeats=repeats,
        rows=rows,
        cache_shape=cache_shape,
        cache_block_size=cache_block,
        cache_rows=cache_rows,
        compile_seconds=compile_seconds,
    )


# ---------------------------------------------------------------------------------------------- attention
ATTENTION_LENGTHS_CPU = tuple(256 * 2**k for k in range(7))  # 256, 512, ..., 16384
ATTENTION_LENGTHS_GPU = tuple(256 * 2**k for k in range(10))  # 256, ..., 131072


@dataclass
class AttentionBenchRow:
    """One (kind, length) of the attention bench: measured, or skipped with the reason."""

    kind: str
    length: int
    estimate_bytes: float | None  # peak_memory_estimate in all (None: the kind could not be estimated)
    measurement: ac.Measurement | None
    skipped: str | None = None  # why it was not measured


@dataclass
class SdpaPeerRow:
    """One attention layer at length T: lmlab's against the same layer through direct PyTorch calls."""

    length: int
    seconds: dict[str, float]  # "lmlab", "direct", "kernel": median seconds of a forward pass without grad

    @property
    def speed_ratio(self) -> float:
        """The direct layer's time over lmlab's (> 1: lmlab is faster)."""
        return self.seconds["direct"] / self.seconds["lmlab"]

    @property
    def kernel_share(self) -> float:
        """The SDPA kernel alone over lmlab's whole layer: the share of the layer spent in attention itself."""
        return self.seconds["kernel"] / self.seconds["lmlab"]


def _gb(n: float) -> str:
    """Bytes as GB (10^9 bytes), with three significant digits below 10 GB."""
    return f"{n / 1e9:.3g} GB" if n < 1e10 else f"{n / 1e9:,.0f} GB"


_FIT_WHAT = {"forward": "forward_seconds", "forward_backward": "forward_backward_seconds",
             "memory": "peak_memory_bytes"}  # fmt: skip


@dataclass
class AttentionBenchResult:
    """Everything ``lmlab bench attention`` measured; :meth:`report` prints it."""

    shape: ac.CostShape
    kinds: tuple[str, ...]
    window: int
    attention_impl: str
    batch_size: int
    device: str
    threads: int
    repeats: int
    warmup: int
    memory_limit_bytes: float
    rows: list[AttentionBenchRow]
    peer_rows: list[SdpaPeerRow]
    seconds: float  # wall time of the whole bench
    load: tuple[float, float] | None = None  # the 1-minute load average at the start and the end (Unix)

    @property
    def crossover(self) -> float:
        """Where full attention's FLOPs equal the rest of a layer's (:func:`lmlab.attention_cost.crossover_length`)."""
        return ac.crossover_length(self.shape)

    def measured(self, kind: str) -> list[ac.Measurement]:
        return [r.measurement for r in self.rows if r.kind == kind and r.measurement is not None]

    def fit(self, kind: str, what: str) -> ac.PowerLawFit | None:
        """Power law of ``what`` ("forward", "forward_backward", "memory" or "flops": the analytic forward
        FLOPs) against T over the measured lengths past the crossover; None with fewer than 3 such lengths
        with positive values."""
        if what not in (*_FIT_WHAT, "flops"):
            raise ValueError(f"what must be one of {(*_FIT_WHAT, 'flops')}, got {what!r}")
        points = [(m.length, getattr(m, _FIT_WHAT.get(what, "flops"))) for m in self.measured(kind)]
        points = [(t, v) for t, v in points if t > self.crossover and v is not None and v > 0]
        if len({t for t, _ in points}) < 3:
            return None
        return ac.fit_exponent([t for t, _ in points], [v for _, v in points])

    def largest(self, kind: str) -> int | None:
        """The longest length this kind was measured at (within the memory limit), or None."""
        return max((m.length for m in self.measured(kind)), default=None)

    def report(self) -> str:
        s = self.shape
        first = next((m for k in self.kinds for m in self.measured(k)), None)
        dtype = first.dtype if first else ("float32" if s.bytes_per_value == 4 else "bfloat16")
        out = [
            f"attention bench: lmlab GPT of {s.n_layer} layer(s), n_embd {s.n_embd}, {s.n_head} heads, vocabulary "
            f"{s.vocab_size}, {dtype}, attention_impl {self.attention_impl} (sliding window {self.window}), batch "
            f"{self.batch_size}, device {self.device}, {self.threads} threads; median of {self.repeats} repeats "
            f"after {self.warmup} warm-up",
        ]
        if first is not None and first.peak_memory_bytes is not None:
            out.append(f"  peak memory: {first.memory_what}, during one {first.memory_pass} pass")
        elif first is not None:
            out.append("  peak memory: not measured")
        out.append(f"  memory limit {_gb(self.memory_limit_bytes)}, checked before each run on the "
                   "conservative estimate lmlab.attention_cost.peak_memory_estimate")  # fmt: skip
        out.append(f"  {'kind':15}{'T':>7}{'forward s':>11}{'fwd+bwd s':>11}{'peak MB':>10}{'estimate MB':>13}"
                   f"{'GFLOP fwd':>11}{'GFLOP/s fwd+bwd':>17}")  # fmt: skip
        for r in self.rows:
            m = r.measurement
            if m is None:
                out.append(f"  {r.kind:15}{r.length:>7}  skipped: {r.skipped}")
                continue
            fb = m.forward_backward_seconds
            peak = f"{m.peak_memory_bytes / 1e6:10.1f}" if m.peak_memory_bytes is not None else f"{'n/a':>10}"
            rate = f"{m.forward_backward_flops / fb / 1e9:17.2f}" if fb else f"{'n/a':>17}"
            out.append(f"  {r.kind:15}{r.length:>7}{m.forward_seconds:11.4f}"
                       + (f"{fb:11.4f}" if fb is not None else f"{'n/a':>11}")
                       + f"{peak}{m.estimated_memory_bytes / 1e6:13.1f}{m.flops / 1e9:11.3f}{rate}")  # fmt: skip
        out.append(f"fitted exponents k of value ~ c T^k over the measured lengths past the crossover "
                   f"T > {self.crossover:g} (95% interval); analytic: lmlab.attention_cost.model_flops")  # fmt: skip
        out.append(f"  {'kind':15}{'points':>7}  {'forward':22}{'fwd+bwd':22}{'peak memory':22}{'analytic FLOPs':16}")
        for kind in self.kinds:
            fits = {w: self.fit(kind, w) for w in ("forward", "forward_backward", "memory", "flops")}
            n = max((f.n for f in fits.values() if f is not None), default=0)
            cells = [f"{f.exponent:.2f} [{f.low:.2f}, {f.high:.2f}]" if f else "n/a (< 3 lengths)"
                     for f in fits.values()]  # fmt: skip
            out.append(f"  {kind:15}{n:>7}  {cells[0]:22}{cells[1]:22}{cells[2]:22}{cells[3]:16}")
        largest = ", ".join(f"{k} {self.largest(k) if self.largest(k) else 'none'}" for k in self.kinds)
        out.append(f"largest T measured within {_gb(self.memory_limit_bytes)}: {largest}")
        if self.peer_rows:
            out.append("lmlab vs PyTorch's SDPA (the peer), full attention: one attention layer (q, k, v and output "
                       "projections around the kernel), forward without gradients, same input and weights, "
                       "is_causal=True")  # fmt: skip
            out.append(f"  {'T':>7}{'lmlab layer ms':>16}{'direct layer ms':>17}{'speed lmlab/direct':>20}"
                       f"{'SDPA kernel alone ms':>22}{'kernel share':>14}")  # fmt: skip
            for p in self.peer_rows:
                ms = {k: 1e3 * v for k, v in p.seconds.items()}
                out.append(f"  {p.length:>7}{ms['lmlab']:16.3f}{ms['direct']:17.3f}{p.speed_ratio:19.2f}x"
                           f"{ms['kernel']:22.3f}{p.kernel_share:14.0%}")  # fmt: skip
        took = f"bench took {self.seconds:.0f} s"
        if self.load is not None:
            took += (f"; load average {self.load[0]:.2f} at the start, {self.load[1]:.2f} at the end, on "
                     f"{os.cpu_count()} CPUs (other work on them slows multi-threaded passes unevenly)")  # fmt: skip
        out.append(took)
        return "\n".join(out)


def _direct_attention_layer(x: torch.Tensor, attn: torch.nn.Module, n_head: int) -> torch.Tensor:
    """The attention layer with ``attn``'s weights, written as direct PyTorch calls: x (B, T, C) -> (B, T, C)."""
    B, T, C = x.shape
    q, k, v = F.linear(x, attn.c_attn.weight, attn.c_attn.bias).split(C, dim=2)  # each (B, T, C)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
    return F.linear(y.transpose(1, 2).reshape(B, T, C), attn.c_proj.weight, attn.c_proj.bias)


def _sdpa_peer(lengths: list[int], shape: ac.CostShape, batch_size: int, repeats: int, device: torch.device,
               seed: int) -> list[SdpaPeerRow]:  # fmt: skip
    """lmlab's full-attention layer (attention_impl="sdpa") vs the same layer through direct PyTorch calls,
    and the SDPA kernel alone on same-shaped q, k, v; a RuntimeError if the two layers disagree."""
    dtype = torch.float32 if shape.bytes_per_value == 4 else torch.bfloat16
    rows = []
    for T in lengths:
        cfg = GPTConfig(vocab_size=shape.vocab_size, block_size=T, n_layer=1, n_head=shape.n_head,
                        n_embd=shape.n_embd, n_inner=shape.mlp_width, attention_impl="sdpa")  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            attn = GPT(cfg).transformer.h[0].attn.to(device=device, dtype=dtype).eval()
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch_size, T, shape.n_embd, generator=g).to(device=device, dtype=dtype)  # (B, T, C)
        q, k, v = (torch.randn(batch_size, shape.n_head, T, shape.head_size, generator=g).to(device=device, dtype=dtype)
                   for _ in range(3))  # (B, nh, T, hs) each  # fmt: skip
        with torch.no_grad():
            ours, theirs = attn(x), _direct_attention_layer(x, attn, shape.n_head)
            tol = 1e-4 if dtype == torch.float32 else 2e-2
            if not torch.allclose(ours, theirs, rtol=tol, atol=tol):
                err = (ours - theirs).abs().max().item()
                raise RuntimeError(f"T={T}: lmlab's attention layer differs from the direct PyTorch layer by {err:.3g}")
            contestants = {
                "lmlab": partial(attn, x),
                "direct": partial(_direct_attention_layer, x, attn, shape.n_head),
                "kernel": partial(F.scaled_dot_product_attention, q, k, v, is_causal=True),
            }
            for fn in contestants.values():  # warm-up
                fn()
            rows.append(SdpaPeerRow(T, _median_seconds(contestants, repeats, device)))
    return rows


def bench_attention(
    lengths: tuple[int, ...] | None = None,
    kinds: tuple[str, ...] = ac.KINDS,
    *,
    shape: ac.CostShape = ac.MEASURE_SHAPE,
    window: int = 256,
    attention_impl: str = "sdpa",
    memory_limit_gb: float | None = None,
    batch_size: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    memory: bool = True,
    peer: bool = True,
    threads: int | None = 2,
    device: str = "cpu",
    seed: int = 0,
    timeout_s: float = 600.0,
) -> AttentionBenchResult:
    """Time and memory of lmlab's GPT by attention kind and length, power-law fits, and the SDPA peer.

    For each kind of ``kinds`` (``window`` for the sliding window) and each length of ``lengths``
    (default :data:`ATTENTION_LENGTHS_CPU`, 256 to 16,384, on the CPU; :data:`ATTENTION_LENGTHS_GPU`, to
    131,072, on a GPU), shortest first: :func:`lmlab.attention_cost.measure` of one length (a child
    process per length on the CPU when ``memory``), unless its estimated peak
    (:func:`lmlab.attention_cost.peak_memory_estimate`) exceeds ``memory_limit_gb`` (default 4 GB on the
    CPU, 90% of the GPU's memory; GB = 10^9 bytes), or a shorter length of the kind ran out of time
    (``timeout_s``) or memory: such lengths are reported as skipped, with the reason. A kind lmlab's GPT
    does not implement is skipped whole. With ``peer``, for full attention at every length it was measured
    at: one attention layer of lmlab (``attention_impl="sdpa"``) against the same layer with the same
    weights through direct calls to ``torch.nn.functional.scaled_dot_product_attention`` (``is_causal=True``)
    on the same input, and the kernel alone on same-shaped q, k, v; forward without gradients, medians of
    ``repeats`` interleaved repeats after a warm-up, the two layers' outputs checked to agree.
    """
    from lmlab.models import ATTENTION_KINDS

    t_start, load_start = time.perf_counter(), _load_average()
    if threads is not None:
        check_int("threads", threads, 1)
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    if lengths is None:
        lengths = ATTENTION_LENGTHS_GPU if dev.type == "cuda" else ATTENTION_LENGTHS_CPU
    if isinstance(lengths, str) or not lengths or any(not is_int(t) or t < 1 for t in lengths):
        raise ValueError(f"lengths must be a non-empty sequence of integers >= 1, got {lengths!r}")
    Ts = sorted({int(t) for t in lengths})
    if isinstance(kinds, str) or not kinds:
        raise ValueError(f"kinds must be a non-empty sequence of attention kinds from {ac.KINDS}, got {kinds!r}")
    for kind in kinds:
        if kind not in ac.KINDS:
            raise ValueError(f"kind must be one of {ac.KINDS}, got {kind!r}")
    check_int("window", window, 1)
    if memory_limit_gb is None:
        limit = ac.default_memory_limit(dev)
    else:
        limit = check_number("memory_limit_gb", memory_limit_gb, positive=True) * 1e9
    rows: list[AttentionBenchRow] = []
    for kind in kinds:
        w = window if kind == "sliding_window" else None
        stop = "not implemented by lmlab's GPT" if kind not in ATTENTION_KINDS else None
        for T in Ts:
            est = sum(ac.peak_memory_estimate(T, shape, kind, w, attention_impl=attention_impl,
                                              batch_size=batch_size).values())  # fmt: skip
            if stop is not None:
                rows.append(AttentionBenchRow(kind, T, est, None, stop))
                continue
            if est > limit:
                why = f"estimated peak {_gb(est)} > limit {_gb(limit)}"
                rows.append(AttentionBenchRow(kind, T, est, None, why))
                continue
            try:
                (m,) = ac.measure(kind, [T], shape=shape, window=w, attention_impl=attention_impl,
                                  batch_size=batch_size, repeats=repeats, warmup=warmup, memory=memory,
                                  memory_limit_bytes=limit, device=str(dev), seed=seed, threads=threads,
                                  timeout_s=timeout_s)  # fmt: skip
            except (TimeoutError, MemoryError, torch.OutOfMemoryError) as err:
                rows.append(AttentionBenchRow(kind, T, est, None, f"{type(err).__name__}: {err}"))
                stop = f"a shorter length ({T}) already failed ({type(err).__name__})"
                continue
            rows.append(AttentionBenchRow(kind, T, est, m))
    result = AttentionBenchResult(
        shape=shape, kinds=tuple(kinds), window=window, attention_impl=attention_impl, batch_size=batch_size,
        device=str(dev), threads=torch.get_num_threads(), repeats=repeats, warmup=warmup, memory_limit_bytes=limit,
        rows=rows, peer_rows=[], seconds=0.0,
    )  # fmt: skip
    if peer and "full" in kinds:
        done = [m.length for m in result.measured("full")]
        result.peer_rows = _sdpa_peer(done, shape, batch_size, repeats, dev, seed)
    result.seconds = time.perf_counter() - t_start
    load_end = _load_average()
    result.load = None if load_start is None or load_end is None else (load_start, load_end)
    return result


# ---------------------------------------------------------------------------------------------- speculative
@dataclass
class SpeculativeBenchRow:
    """One multi-token model: plain greedy against self-speculative greedy on the same prompts."""

    heads: int  # n_future of the model (drafts per step: heads - 1)
    head_losses: list[float]  # each head's val loss after training, nats per token (head 1: next token)
    new_tokens: int  # tokens generated per run, all prompts together (no EOS: every prompt generates all)
    tokens_per_s: dict[str, float]  # "plain greedy" and "speculative": median new tokens per second
    acceptance_rate: float  # accepted drafts / drafted
    tokens_per_pass: float  # new tokens / forward passes of speculative decoding (plain greedy: 1)
    identical: bool  # speculative's tokens equal plain greedy's for every prompt

    @property
    def ratio(self) -> float:
        """Speculative tokens/s divided by plain greedy tokens/s (> 1: speculative is faster)."""
        return self.tokens_per_s["speculative"] / self.tokens_per_s["plain greedy"]


@dataclass
class SpeculativeBenchResult:
    """Everything ``lmlab bench speculative`` measured; :meth:`report` prints it."""

    shape: str  # preset whose shape the models have
    params: dict[int, int]  # heads -> parameters, embeddings included
    language: str  # the Markov language trained on
    entropy_rate: float  # its entropy rate, nats per token: the best next-token loss possible
    train_steps: int
    prompts: int
    prompt_len: int
    threads: int
    device: str
    repeats: int
    rows: list[SpeculativeBenchRow]
    seconds: float  # wall time of the whole bench, training included
    load: tuple[float, float] | None = None  # the 1-minute load average at the start and the end (Unix)

    def report(self) -> str:
        out = [
            f"speculative bench: self-speculative greedy (Gloeckle et al. 2024) vs plain greedy (the peer), the same "
            f"MultiTokenGPT, {self.shape} shape, {self.language} (entropy rate {self.entropy_rate:.3f} nats), "
            f"trained {self.train_steps} steps per model; {self.prompts} prompts of {self.prompt_len} tokens, "
            f"batch 1, fp32, device {self.device}, {self.threads} threads, median of {self.repeats} interleaved "
            "repeats",
            f"  {'heads':8}{'params':>8}  {'val loss per head (nats)':26}{'new tokens':>11}{'plain greedy tok/s':>20}"
            f"{'speculative tok/s':>19}{'ratio':>8}{'accepted':>10}{'tokens/pass':>13}  identical",
        ]
        for r in self.rows:
            losses = " ".join(f"{x:.2f}" for x in r.head_losses)
            out.append(
                f"  {f'{r.heads} heads':8}{self.params[r.heads] / 1e6:7.2f}M  {losses:26}{r.new_tokens:>11}"
                f"{r.tokens_per_s['plain greedy']:20,.0f}{r.tokens_per_s['speculative']:19,.0f}{r.ratio:7.2f}x"
                f"{r.acceptance_rate:10.1%}{r.tokens_per_pass:13.2f}  {'yes' if r.identical else 'NO'}"
            )
        if self.rows:
            same = all(r.identical for r in self.rows)
            out.append(f"  identical: {'yes' if same else 'NO'} (speculative greedy's tokens equal plain greedy's, "
                       "token for token, on every prompt)")
        took = f"  took {self.seconds:.0f} s"
        if self.load is not None:
            took += f"; load average {self.load[0]:.2f} at the start, {self.load[1]:.2f} at the end"
        out.append(took)
        return "\n".join(out)


SPECULATIVE_QUICK = dict(shape="micro", train_steps=10, new_tokens=24, prompts=2, repeats=1)


def bench_speculative(
    heads: tuple[int, ...] = (2, 3, 4),
    *,
    shape: str = "tiny",
    train_steps: int = 100,
    new_tokens: int = 64,
    prompts: int = 4,
    prompt_len: int = 16,
    repeats: int = 5,
    threads: int | None = 2,
    device: str = "cpu",
    seed: int = 0,
    quick: bool = False,
) -> SpeculativeBenchResult:
    """Self-speculative greedy decoding against plain greedy decoding on the same multi-token model.

    For each H in ``heads``: a :class:`~lmlab.models.MultiTokenGPT` with H heads of the ``shape`` preset
    (block_size ``prompt_len + new_tokens``) is trained for ``train_steps`` steps with
    :class:`~lmlab.train.Trainer` on a Markov language (:class:`~lmlab.text.synthetic.MarkovSource`, 32 words,
    order 1), so that its extra heads have learnt something to draft. Then ``prompts``
    prompts of ``prompt_len`` tokens from the val split are continued by ``new_tokens`` tokens with
    :func:`lmlab.generation.greedy` (the peer: one token per forward pass, KV cache) and with
    :func:`lmlab.generation.speculative_greedy` (heads 2..H draft, head 1 checks), checked identical (a
    RuntimeError otherwise). Times are medians over interleaved repeats. ``quick`` shrinks everything
    (``SPECULATIVE_QUICK``) to seconds, for tests.
    """
    from lmlab.generation import greedy, speculative_greedy
    from lmlab.models import MultiTokenGPT
    from lmlab.text.synthetic import MarkovSource, markov_token_data

    if quick:
        shape, train_steps, new_tokens, prompts, repeats = (SPECULATIVE_QUICK[k] for k in (
            "shape", "train_steps", "new_tokens", "prompts", "repeats"))  # fmt: skip
    for name, value in (("train_steps", train_steps), ("new_tokens", new_tokens), ("prompts", prompts),
                        ("prompt_len", prompt_len), ("repeats", repeats)):  # fmt: skip
        check_int(name, value, 1)
    if not heads or any(not is_int(h) or h < 1 for h in heads):
        raise ValueError(f"heads must be integers >= 1 (n_future of each model), got {heads!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    t_start, load_start = time.perf_counter(), _load_average()
    source = MarkovSource(32, 1, seed)  # each next word depends on the last: learnt in ~100 steps
    data = markov_token_data(source, 100_000, 10_000, seed=seed)
    block = prompt_len + new_tokens
    g = torch.Generator().manual_seed(seed)
    val = data.ids("val")
    starts = torch.randint(0, val.numel() - prompt_len, (prompts,), generator=g).tolist()
    prompt_list = [val[s : s + prompt_len].to(dev) for s in starts]
    rows: list[SpeculativeBenchRow] = []
    params: dict[int, int] = {}
    for H in heads:
        torch.manual_seed(seed)
        model = MultiTokenGPT(GPTConfig.preset(shape, vocab_size=source.vocab_size, block_size=block), H)
        Trainer(model, data, max_steps=train_steps, batch_size=16, lr=3e-3, warmup_steps=min(10, train_steps),
                eval_interval=train_steps, eval_batches=2, progress=False, device=str(dev),
                seed=seed).fit()  # fmt: skip
        model.eval()
        params[H] = model.num_params(non_embedding=False)
        x, y = data.get_batch("val", 16, block, generator=torch.Generator().manual_seed(seed + 1), device=dev)
        with torch.no_grad():
            head_losses = model.head_losses(x, y).tolist()

        def plain(model: MultiTokenGPT = model) -> list[list[int]]:
            return [greedy(model, p, max_new_tokens=new_tokens) for p in prompt_list]

        def speculative(model: MultiTokenGPT = model) -> list[list[int]]:
            return [speculative_greedy(model, p, max_new_tokens=new_tokens) for p in prompt_list]

        want, got = plain(), speculative()  # also the warm-up
        if want != got:
            raise RuntimeError(f"{H} heads: speculative greedy's tokens differ from plain greedy's\n"
                               f"  plain:       {want}\n  speculative: {got}")  # fmt: skip
        stats = [speculative_greedy(model, p, max_new_tokens=new_tokens, return_stats=True)[1] for p in prompt_list]
        drafted, accepted = sum(s.drafted for s in stats), sum(s.accepted for s in stats)
        total = new_tokens * prompts
        secs = _median_seconds({"plain greedy": plain, "speculative": speculative}, repeats, dev)
        rows.append(SpeculativeBenchRow(
            heads=H, head_losses=head_losses, new_tokens=total, tokens_per_s={k: total / v for k, v in secs.items()},
            acceptance_rate=accepted / drafted if drafted else float("nan"),
            tokens_per_pass=total / sum(s.forward_passes for s in stats), identical=True,
        ))  # fmt: skip
    load_end = _load_average()
    return SpeculativeBenchResult(
        shape=shape, params=params, language=f"Markov language (32 words, order 1, seed {seed})",
        entropy_rate=source.entropy_rate(), train_steps=train_steps, prompts=prompts, prompt_len=prompt_len,
        threads=torch.get_num_threads(), device=str(dev), repeats=repeats, rows=rows,
        seconds=time.perf_counter() - t_start,
        load=None if load_start is None or load_end is None else (load_start, load_end),
    )  # fmt: skip


def _load_average() -> float | None:
    """The 1-minute load average (processes running or waiting for a CPU), or None where there is none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


if __name__ == "__main__":
    print(bench_train().report())
