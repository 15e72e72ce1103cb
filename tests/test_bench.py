"""lmlab.bench: GPU peaks are looked up by whole device names; the GPU train bench times Trainer.train_step."""

from __future__ import annotations

import pytest
import torch

import lmlab.bench as bench
from lmlab.bench import GPU_PEAK_TFLOPS, TrainBenchResult, peak_tflops
from lmlab.train import Trainer


def test_peak_tflops_matches_whole_names_only():
    assert peak_tflops("NVIDIA L4") == (30.3, 121.0)
    assert peak_tflops("NVIDIA L40S") == (91.6, 362.0)  # not the L4's, although "L4" is in "L40S"
    assert peak_tflops("NVIDIA H100 80GB HBM3") == (67.0, 989.0)  # SXM
    assert peak_tflops("NVIDIA H100 PCIe") == (51.0, 756.0)  # not the SXM's
    assert peak_tflops("NVIDIA H200") == (67.0, 989.0)
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == peak_tflops("NVIDIA A100-PCIE-40GB") == (19.5, 312.0)
    assert peak_tflops("Tesla T4") == (8.1, 65.0)
    assert peak_tflops("  nvidia   l40s ") == (91.6, 362.0)  # case and spacing do not matter
    for unknown in ("NVIDIA H100", "H100", "NVIDIA L4 (rev 2)", "NVIDIA GeForce RTX 4090", ""):
        assert peak_tflops(unknown) is None, unknown
    assert all(fp32 < bf16 for fp32, bf16 in GPU_PEAK_TFLOPS.values())
    with pytest.raises(TypeError, match="device_name must be a str"):
        peak_tflops(None)


def test_gpu_reference_is_the_peak_of_the_exact_device(monkeypatch):
    names = {"name": "NVIDIA L40S"}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: names["name"])
    cuda = torch.device("cuda", 0)
    assert bench._reference(cuda, bf16=True) == ("NVIDIA L40S dense bf16 peak (MFU)", 362.0e3)
    assert bench._reference(cuda, bf16=False) == ("NVIDIA L40S fp32 peak (MFU)", 91.6e3)
    names["name"] = "NVIDIA B300"
    ref_name, ref = bench._reference(cuda, bf16=True)
    assert ref is None and "no peak FLOP/s known for 'NVIDIA B300'" in ref_name


def test_report_without_a_known_peak_says_so():
    result = TrainBenchResult(
        preset="micro", batch_size=2, block_size=8, threads=1, device="cuda:0",
        tokens_per_s={"lmlab (attention=auto)": 2000.0, "transformers (attn sdpa, default)": 1000.0},
        flops_per_token=1000, reference_gflops=None, reference_name="no peak FLOP/s known for 'NVIDIA B300'",
        precision="bf16 autocast", recipe="Trainer.train_step",
    )  # fmt: skip
    lines = result.report().splitlines()
    assert lines[0].endswith("device cuda:0, 1 threads, bf16 autocast; Trainer.train_step")
    assert lines[2] == f"  {'lmlab (attention=auto)':34}{2000.0:10,.0f}{0.002:9.1f}{'n/a':>14}"
    assert lines[-1] == "  reference: no peak FLOP/s known for 'NVIDIA B300'"


def _count_train_steps(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    calls: dict[int, int] = {}
    real = Trainer.train_step

    def counting(self, x, y):
        calls[id(self)] = calls.get(id(self), 0) + 1
        return real(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", counting)
    return calls


def test_gpu_train_bench_times_the_trainers_own_step(monkeypatch):
    calls = _count_train_steps(monkeypatch)
    monkeypatch.setattr(bench, "_uses_trainer_step", lambda device: True)  # the CUDA recipe, here on the CPU
    result = bench.bench_train("micro", batch_size=2, block_size=8, steps=2, repeats=2, compile_model=False)
    assert sorted(calls.values()) == [3 + 2 * 2] * 4  # every contestant: 3 warm-up steps, then 2 repeats of 2
    assert "Trainer.train_step" in result.report().splitlines()[0]
    assert all(v > 0 for v in result.tokens_per_s.values())


def test_cpu_train_bench_keeps_its_plain_fp32_step(monkeypatch):
    calls = _count_train_steps(monkeypatch)
    result = bench.bench_train("micro", batch_size=2, block_size=8, steps=1, repeats=1, compile_model=False)
    assert calls == {}
    assert result.report().splitlines()[0].endswith("threads, fp32; forward + backward + fused AdamW step")
    assert result.reference_name == "1024x1024 fp32 matmul" and result.reference_gflops > 0
