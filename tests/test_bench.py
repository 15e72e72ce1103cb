"""lmlab.bench: GPU peaks are looked up by whole device names; the GPU train bench times Trainer.train_step."""

from __future__ import annotations

import math

import pytest
import torch

import lmlab.attention_cost as ac
import lmlab.bench as bench
import lmlab.models
from lmlab.attention_cost import CostShape
from lmlab.bench import GPU_PEAK_TFLOPS, TrainBenchResult, bench_attention, peak_tflops
from lmlab.models import ATTENTION_KINDS
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


# --- bench attention (tiny sizes; never asserts on time) ------------------------------------------------------
TINY = CostShape(n_layer=1, n_embd=4, n_head=2, vocab_size=16, bytes_per_value=4)  # crossover at 6 * 4 = 24


def test_attention_bench_measures_fits_and_compares_with_sdpa():
    lengths = (32, 48, 64, 96)
    result = bench_attention(lengths, ATTENTION_KINDS, shape=TINY, window=8, memory=False, repeats=1, warmup=0)
    assert [(r.kind, r.length) for r in result.rows] == [(k, t) for k in ATTENTION_KINDS for t in lengths]
    assert all(r.skipped is None and r.measurement is not None for r in result.rows)
    for r in result.rows:
        m = r.measurement
        assert m.forward_seconds > 0 and m.forward_backward_seconds > 0 and m.flops > 0
        assert m.estimated_memory_bytes == r.estimate_bytes > 0 and m.peak_memory_bytes is None
    assert result.crossover == 24
    for kind in ATTENTION_KINDS:
        assert result.largest(kind) == 96
        for what in ("forward", "forward_backward", "flops"):
            fit = result.fit(kind, what)
            assert fit.n == 4 and all(map(math.isfinite, (fit.exponent, fit.low, fit.high))) and fit.low <= fit.high
        assert result.fit(kind, "memory") is None  # not measured
    assert [p.length for p in result.peer_rows] == list(lengths)
    for p in result.peer_rows:
        assert set(p.seconds) == {"lmlab", "direct", "kernel"} and all(v > 0 for v in p.seconds.values())
        assert math.isfinite(p.speed_ratio) and p.speed_ratio > 0
    lines = result.report().splitlines()
    assert lines[0].startswith("attention bench: lmlab GPT of 1 layer(s), n_embd 4, 2 heads, vocabulary 16, float32")
    assert sum(line.startswith("  full ") for line in lines) == len(lengths) + 1  # the rows and the fit
    assert any(line.startswith("largest T measured within 4 GB: full 96") for line in lines)
    assert any("lmlab vs PyTorch's SDPA" in line for line in lines)
    with pytest.raises(ValueError, match="what must be one of"):
        result.fit("full", "time")


def test_attention_bench_skips_lengths_over_the_limit_with_the_estimate():
    result = bench_attention((32, 64), ("full", "linear"), shape=TINY, memory_limit_gb=1e-6, memory=False)
    assert all(r.measurement is None and r.skipped.startswith("estimated peak ") for r in result.rows)
    est = sum(ac.peak_memory_estimate(64, TINY, "full").values())
    assert result.rows[1].estimate_bytes == est and f"{est / 1e9:.3g} GB > limit 1e-06 GB" in result.rows[1].skipped
    assert result.largest("full") is None and result.fit("full", "forward") is None and result.peer_rows == []
    assert "  full                32  skipped: estimated peak" in result.report()


def test_attention_bench_reports_a_timeout_and_skips_longer_lengths(monkeypatch):
    real = ac.measure

    def slow_at_64(kind, lengths, **kwargs):
        if lengths == [64]:
            raise TimeoutError("measuring took longer than timeout_s = 1 s")
        return real(kind, lengths, **kwargs)

    monkeypatch.setattr(ac, "measure", slow_at_64)
    result = bench_attention((32, 64, 96), ("full",), shape=TINY, memory=False, repeats=1, peer=False)
    assert [r.skipped for r in result.rows] == [
        None, "TimeoutError: measuring took longer than timeout_s = 1 s",
        "a shorter length (64) already failed (TimeoutError)",
    ]  # fmt: skip
    assert result.largest("full") == 32


def test_attention_bench_skips_a_kind_the_model_lacks(monkeypatch):
    monkeypatch.setattr(lmlab.models, "ATTENTION_KINDS", ("full",))
    result = bench_attention((16,), ("full", "linear"), shape=TINY, memory=False, repeats=1, peer=False)
    assert result.rows[0].measurement is not None
    assert result.rows[1].skipped == "not implemented by lmlab's GPT" and result.largest("linear") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(lengths=(32, 0)), "lengths must be a non-empty sequence of integers >= 1"),
        (dict(lengths=()), "lengths must be a non-empty sequence"),
        (dict(kinds=("full", "sparse")), r"kind must be one of \('full', 'sliding_window', 'linear'\)"),
        (dict(kinds="full"), "kinds must be a non-empty sequence"),
        (dict(window=0), "window must be an integer >= 1"),
        (dict(memory_limit_gb=0), "memory_limit_gb must be a finite number > 0"),
        (dict(threads=0), "threads must be an integer >= 1"),
    ],
)
def test_attention_bench_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench_attention(**({"lengths": (16,), "shape": TINY, "memory": False} | kwargs))
