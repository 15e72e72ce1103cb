"""Benchmarks that compare lmlab with a named peer in the same run and print ratios.

``lmlab bench train``: training steps (forward, backward, AdamW) of lmlab's GPT against transformers'
``GPT2LMHeadModel`` with the same shape and the same weights, on the same batches, fp32, interleaved
repeats, median. Achieved GFLOP/s use the PaLM training-FLOP count (``GPT.flops_per_token``) and are
compared with this machine's measured fp32 1024x1024 matmul rate (CPU) or the device's peak (GPU: MFU).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from lmlab.device import resolve_device
from lmlab.model import GPT, GPTConfig

__all__ = ["matmul_gflops", "bench_train", "TrainBenchResult", "GPU_PEAK_TFLOPS"]

# Dense peak TFLOP/s by device name fragment: (fp32 without tensor cores, bf16 tensor cores), from the
# vendors' data sheets (NVIDIA H100 SXM, A100, L4, T4 data sheets).
GPU_PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H200": (67.0, 989.0),
    "H100": (67.0, 989.0),
    "A100": (19.5, 312.0),
    "L4": (30.3, 121.0),
    "A10": (31.2, 125.0),
    "T4": (8.1, 65.0),
}


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
    reference_gflops: float  # measured matmul rate (CPU) or device peak (GPU), GFLOP/s
    reference_name: str

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
            f"device {self.device}, {self.threads} threads, fp32; forward + backward + fused AdamW step",
            f"  {'':34}{'tokens/s':>10}{'GFLOP/s':>9}{'of reference':>14}",
        ]
        for name, tps in self.tokens_per_s.items():
            g = self.achieved_gflops(tps)
            rows.append(f"  {name:34}{tps:10,.0f}{g:9.1f}{g / self.reference_gflops:14.1%}")
        rows.append(f"  ratio {names[0]} / {names[1]}: {self.ratio:.3f}x")
        if len(names) >= 4:
            same = self.tokens_per_s[names[2]] / self.tokens_per_s[names[1]]
            rows.append(f"  ratio {names[2]} / {names[1]} (same attention kernel): {same:.3f}x")
            best = max(names[1:], key=lambda n: self.tokens_per_s[n] if n.startswith("transformers") else 0)
            rows.append(f"  ratio {names[0]} / fastest transformers ({best}): "
                        f"{self.tokens_per_s[names[0]] / self.tokens_per_s[best]:.3f}x")
        rows.append(f"  reference: {self.reference_name} = {self.reference_gflops:,.1f} GFLOP/s")
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
) -> TrainBenchResult:
    """Tokens/s of training steps, lmlab vs transformers ``GPT2LMHeadModel`` on identical weights and batches.

    Contestants: lmlab with its default attention ("auto"), transformers with its default ("sdpa"), and
    the two with the same kernel choice (lmlab "sdpa", transformers "eager" explicit attention). Each
    repeat times ``steps`` steps of every contestant, in an order that rotates between repeats; the
    median over repeats is reported. Needs ``transformers`` (``pip install -e ".[dev]"``).
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

    def hf_model(attn: str) -> torch.nn.Module:
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
            bos_token_id=0,
            eos_token_id=0,
            attn_implementation=attn,
        )
        return transformers.GPT2LMHeadModel(hf_cfg).to(dev).train()

    peer = hf_model("sdpa")
    peer_eager = hf_model("eager")
    ours = GPT.from_hf_gpt2(peer).to(dev).train()
    ours_sdpa = GPT(replace(ours.config, attention="sdpa")).to(dev).train()
    ours_sdpa.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, cfg.vocab_size, (batch_size, T + 1), generator=g).to(dev) for _ in range(4)]
    contestants = {
        f"lmlab (attention={ours.config.attention})": _train_step(ours, batches, hf=False),
        "transformers (attn sdpa, default)": _train_step(peer, batches, hf=True),
        "lmlab (attention=sdpa)": _train_step(ours_sdpa, batches, hf=False),
        "transformers (attn eager)": _train_step(peer_eager, batches, hf=True),
    }
    for step in contestants.values():  # warm-up
        _time_steps(step, 0, 3, dev)
    tokens = steps * batch_size * T
    times: dict[str, list[float]] = {name: [] for name in contestants}
    names = list(contestants)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(tokens / _time_steps(contestants[name], r * steps, steps, dev))
    if dev.type == "cuda":
        gpu = torch.cuda.get_device_name(dev)
        peak = next((v[0] for k, v in GPU_PEAK_TFLOPS.items() if k in gpu), None)
        if peak:
            ref_name, ref = f"{gpu} fp32 peak (MFU)", peak * 1e3
        else:
            ref_name, ref = "1024x1024 fp32 matmul", matmul_gflops(device=dev)
    else:
        ref_name, ref = "1024x1024 fp32 matmul", matmul_gflops(device=dev)
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
    )


if __name__ == "__main__":
    print(bench_train().report())
