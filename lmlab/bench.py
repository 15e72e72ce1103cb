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
from dataclasses import dataclass

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
    """Median training throughput of lmlab and of transformers on one configuration."""

    preset: str
    batch_size: int
    block_size: int
    threads: int
    device: str
    lmlab_tokens_per_s: float
    peer_tokens_per_s: float
    flops_per_token: int
    reference_gflops: float  # measured matmul rate (CPU) or device peak (GPU), GFLOP/s
    reference_name: str

    @property
    def ratio(self) -> float:
        """lmlab tokens/s divided by transformers tokens/s (> 1: lmlab is faster)."""
        return self.lmlab_tokens_per_s / self.peer_tokens_per_s

    def achieved_gflops(self, tokens_per_s: float) -> float:
        return tokens_per_s * self.flops_per_token / 1e9

    def report(self) -> str:
        rows = [
            f"train bench: preset {self.preset}, batch {self.batch_size}, block {self.block_size}, "
            f"device {self.device}, {self.threads} threads, fp32",
            f"  {'':14}{'tokens/s':>12}{'GFLOP/s':>10}{'of ' + self.reference_name:>26}",
        ]
        for name, tps in (("lmlab", self.lmlab_tokens_per_s), ("transformers", self.peer_tokens_per_s)):
            g = self.achieved_gflops(tps)
            rows.append(f"  {name:14}{tps:12,.0f}{g:10.1f}{g / self.reference_gflops:26.1%}")
        rows.append(f"  ratio lmlab / transformers: {self.ratio:.3f}x")
        rows.append(f"  reference: {self.reference_name} = {self.reference_gflops:,.1f} GFLOP/s")
        return "\n".join(rows)


def _time_steps(step: Callable[[int], None], start: int, n: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for i in range(start, start + n):
        step(i)
    _sync(device)
    return time.perf_counter() - t0


def bench_train(
    preset: str = "tiny",
    *,
    batch_size: int = 12,
    block_size: int | None = None,
    steps: int = 10,
    repeats: int = 7,
    threads: int | None = 2,
    device: str = "cpu",
    seed: int = 0,
) -> TrainBenchResult:
    """Tokens/s of training steps, lmlab vs transformers ``GPT2LMHeadModel`` on identical weights and batches.

    Each repeat times ``steps`` steps of one model then the other (the order alternates between repeats);
    the median over repeats is reported. Needs ``transformers`` (``pip install -e ".[dev]"``).
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
    )
    peer = transformers.GPT2LMHeadModel(hf_cfg).to(dev).train()
    ours = GPT.from_hf_gpt2(peer).to(dev).train()
    g = torch.Generator().manual_seed(seed)
    n_batches = 4
    xs = [torch.randint(0, cfg.vocab_size, (batch_size, T + 1), generator=g).to(dev) for _ in range(n_batches)]
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_peer = torch.optim.AdamW(peer.parameters(), lr=1e-4)

    def step_ours(i: int) -> None:
        batch = xs[i % n_batches]
        loss = ours(batch[:, :-1], batch[:, 1:]).loss
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def step_peer(i: int) -> None:
        batch = xs[i % n_batches]
        logits = peer(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt_peer.zero_grad(set_to_none=True)
        loss.backward()
        opt_peer.step()

    for step in (step_ours, step_peer):  # warm-up
        _time_steps(step, 0, 3, dev)
    tokens = steps * batch_size * T
    ours_tps, peer_tps = [], []
    for r in range(repeats):
        order = [(step_ours, ours_tps), (step_peer, peer_tps)]
        for step, acc in order if r % 2 == 0 else order[::-1]:
            acc.append(tokens / _time_steps(step, r * steps, steps, dev))
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        peak = next((v[0] for k, v in GPU_PEAK_TFLOPS.items() if k in name), None)
        ref_name, ref = (f"{name} fp32 peak (MFU)", peak * 1e3) if peak else ("1024 matmul", matmul_gflops(device=dev))
    else:
        ref_name, ref = "1024x1024 fp32 matmul", matmul_gflops(device=dev)
    return TrainBenchResult(
        preset=preset,
        batch_size=batch_size,
        block_size=T,
        threads=torch.get_num_threads(),
        device=str(dev),
        lmlab_tokens_per_s=statistics.median(ours_tps),
        peer_tokens_per_s=statistics.median(peer_tps),
        flops_per_token=ours.flops_per_token(T),
        reference_gflops=ref,
        reference_name=ref_name,
    )


if __name__ == "__main__":
    print(bench_train().report())
