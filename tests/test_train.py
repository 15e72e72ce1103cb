"""Tests of lmlab.train: schedule, optimizer groups, accumulation, budgets, determinism, checkpoints, DDP."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_support import make_data, make_model, small_config

import lmlab.train as train
from lmlab.lm import IGNORE_INDEX
from lmlab.train import Callback, History, TrainConfig, Trainer, load_checkpoint, lr_at, weight_decay_groups

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def data():
    return make_data()


def train_losses(history: History) -> list[float]:
    return [r["train_loss"] for r in history.train]


class StopAt(Callback):
    """Requests a stop after step ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_step(self, trainer, record):
        if record["step"] == self.n:
            trainer.should_stop = True


# ---------------------------------------------------------------------------------------------- learning
def test_loss_decreases_on_repetitive_text(data):
    config = small_config(max_steps=60, batch_size=8, warmup_steps=5, eval_interval=60, eval_batches=None)
    history = Trainer(make_model(), data, config).fit()
    losses = train_losses(history)
    assert len(losses) == 60 and history.stop_reason == "max_steps"
    assert losses[0] > 5.0  # about ln(256) = 5.55 at initialisation
    assert sum(losses[-5:]) / 5 < losses[0] - 2.5
    assert history.evals[-1]["val_loss"] < losses[0] - 2.5
    assert history.evals[-1]["step"] == 60


def test_records_have_the_documented_fields(data):
    model = make_model()
    trainer = Trainer(model, data, small_config(max_steps=4, log_interval=2))
    history = trainer.fit()
    assert trainer.tokens_per_step == 4 * 16 * 1 * 1
    assert [r["step"] for r in history.train] == [2, 4]  # every log_interval steps
    for r in history.train:
        assert set(r) == {
            "kind",
            "step",
            "tokens",
            "flops",
            "elapsed",
            "lr",
            "train_loss",
            "grad_norm",
            "tokens_per_s",
        }
        assert r["tokens"] == r["step"] * trainer.tokens_per_step
        assert r["flops"] == r["tokens"] * model.flops_per_token(16)
        assert r["tokens_per_s"] > 0 and r["grad_norm"] > 0 and r["elapsed"] >= 0
        assert r["lr"] == lr_at(r["step"] - 1, trainer.config)
    (ev,) = history.evals
    assert set(ev) == {"kind", "step", "tokens", "flops", "elapsed", "val_loss", "val_tokens"}
    assert ev["step"] == 4 and ev["val_tokens"] == 2 * 4 * 16  # eval_batches=2 random batches of 4 x 16
    assert isinstance(history, list) and json.loads(json.dumps(list(history))) == list(history)


# ---------------------------------------------------------------------------------------------- schedule
def test_lr_at_follows_warmup_then_cosine():
    c = TrainConfig(max_steps=110, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert [lr_at(s, c) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr_at(10, c) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(60, c) == pytest.approx(0.55)  # halfway: (lr + min_lr) / 2
    for s in (10, 37, 60, 85, 109):
        expected = 0.1 + 0.5 * (1 + math.cos(math.pi * (s - 10) / 100)) * 0.9
        assert lr_at(s, c) == pytest.approx(expected, rel=1e-12)
    assert lr_at(110, c) == 0.1 and lr_at(500, c) == 0.1
    assert all(lr_at(s, c) >= lr_at(s + 1, c) for s in range(10, 120))  # decreasing after warmup
    assert lr_at(60, c, decay_steps=210) == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi / 4)) * 0.9)
    assert lr_at(60, TrainConfig(max_steps=110, decay_steps=60, lr=1.0, min_lr=0.1, warmup_steps=10)) == 0.1
    timed = TrainConfig(max_seconds=5, lr=1.0, warmup_steps=0)
    assert lr_at(0, timed) == 1.0 and lr_at(10_000, timed) == 1.0  # time budget only: constant
    with pytest.raises(ValueError, match="step"):
        lr_at(-1, c)


def test_trainer_estimates_the_cosine_horizon_from_token_and_flop_budgets(data):
    model = make_model()
    t = Trainer(model, data, small_config(max_steps=None, max_tokens=1000))
    assert t.decay_steps == math.ceil(1000 / 64)
    per_step = model.flops_per_token(16) * 64
    t = Trainer(model, data, small_config(max_steps=None, max_flops=3.5 * per_step, max_tokens=10**6))
    assert t.decay_steps == 4
    assert Trainer(model, data, small_config(max_steps=None, max_seconds=9)).decay_steps is None
    assert Trainer(model, data, small_config(max_steps=12, max_tokens=64)).decay_steps == 12  # max_steps wins


# ---------------------------------------------------------------------------------------------- optimizer
def test_weight_decay_groups_tied_and_untied():
    model = make_model()
    decay, no_decay = weight_decay_groups(model)
    assert set(decay) == {n for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 2} - {
        "transformer.wte.weight",
        "transformer.wpe.weight",
    }
    assert all(("attn" in n or "mlp" in n) for n in decay) and len(decay) == 4 * 2
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"} <= set(no_decay)
    assert all(n.endswith("bias") or "ln" in n or "wte" in n or "wpe" in n for n in no_decay)
    assert "lm_head.weight" not in decay + no_decay  # tied to wte: listed once, under the embedding
    untied = make_model(tie_weights=False)
    assert "lm_head.weight" in weight_decay_groups(untied)[0]

    trainer = Trainer(model, make_data(), small_config(weight_decay=0.3))
    g_decay, g_plain = trainer.optimizer.param_groups
    assert g_decay["weight_decay"] == 0.3 and g_plain["weight_decay"] == 0.0
    ids = [id(p) for g in (g_decay, g_plain) for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # each tensor once
    assert id(model.lm_head.weight) in {id(p) for p in g_plain["params"]}


def test_gradient_accumulation_equals_one_big_batch(data):
    def one_step(batch_size: int, accum: int):
        model = make_model()
        config = small_config(
            batch_size=batch_size, grad_accum_steps=accum, max_steps=1, warmup_steps=1, grad_clip=None
        )
        Trainer(model, data, config).fit()  # the step's gradients stay in .grad until the next step
        return model

    big, accum, half, untouched = one_step(8, 1), one_step(4, 2), one_step(4, 1), make_model()
    for (name, p), q, p0 in zip(big.named_parameters(), accum.parameters(), untouched.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7, msg=name)
        # Adam's first update is lr * g / (|g| + eps): coordinates with |g| ~ eps = 1e-8 amplify float
        # rounding, so parameters agree to ~1e-6 while a real difference moves them by ~lr = 3e-3
        torch.testing.assert_close(p, q, rtol=0, atol=2e-5, msg=name)
        assert not torch.equal(p, p0)
    # a different set of examples (4 windows instead of 8) does not match: the comparison can fail
    assert not all(torch.allclose(p, q, atol=2e-5) for p, q in zip(big.parameters(), half.parameters(), strict=True))


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_bit_identical_losses_with_dropout(data):
    config = small_config(max_steps=6)
    first = train_losses(Trainer(make_model(dropout=0.1), data, config).fit())
    model = make_model(dropout=0.1)
    torch.rand(1000)  # disturb the global RNG after initialisation: fit must seed dropout itself
    second = train_losses(Trainer(model, data, config).fit())
    assert first == second
    other = train_losses(Trainer(make_model(dropout=0.1), data, small_config(max_steps=6, seed=1)).fit())
    assert other != first


def test_exact_resume_is_bit_identical(data, tmp_path):
    config = small_config(max_steps=12, eval_interval=4, checkpoint_path=str(tmp_path / "run.pt"))
    full_model = make_model(dropout=0.1)
    full = Trainer(full_model, data, replace_path(config, tmp_path / "full.pt")).fit()

    part = Trainer(make_model(dropout=0.1), data, config, callbacks=[StopAt(6)]).fit()
    assert part.stop_reason == "callback" and part.train[-1]["step"] == 6
    assert load_checkpoint(tmp_path / "run.pt")["step"] == 6

    torch.rand(100)  # disturb the global RNG; a differently initialised model object
    resumed_model = make_model(seed=123, dropout=0.1)
    resumed = Trainer(resumed_model, data, config).fit(resume_from=tmp_path / "run.pt")
    assert resumed.stop_reason == "max_steps"
    assert [r["step"] for r in resumed.train] == list(range(1, 13))
    assert train_losses(resumed) == train_losses(full)  # exact, every step
    assert [r["lr"] for r in resumed.train] == [r["lr"] for r in full.train]
    assert [r["tokens"] for r in resumed.train] == [r["tokens"] for r in full.train]
    assert resumed.evals[-1]["val_loss"] == full.evals[-1]["val_loss"]
    for (name, p), q in zip(full_model.named_parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q), name


def replace_path(config: TrainConfig, path: Path) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(config, checkpoint_path=str(path))


def test_config_resume_flag_starts_fresh_then_resumes(data, tmp_path):
    path = tmp_path / "sub" / "ck.pt"
    config = small_config(max_steps=3, checkpoint_path=str(path), resume=True)
    first = Trainer(make_model(), data, config).fit()  # no file yet: a fresh run
    assert [r["step"] for r in first.train] == [1, 2, 3] and path.is_file()
    again = Trainer(make_model(), data, small_config(max_steps=5, checkpoint_path=str(path), resume=True)).fit()
    assert [r["step"] for r in again.train] == [1, 2, 3, 4, 5]
    assert train_losses(again)[:3] == train_losses(first)


def test_ctrl_c_saves_a_checkpoint_returns_history_and_resumes(data, tmp_path):
    class Interrupt(Callback):
        def on_step(self, trainer, record):
            if record["step"] == 3:
                raise KeyboardInterrupt

    path = tmp_path / "ck.pt"
    config = small_config(max_steps=6, checkpoint_path=str(path))
    history = Trainer(make_model(), data, config, callbacks=[Interrupt()]).fit()  # does not raise
    assert history.stop_reason == "interrupt" and [r["step"] for r in history.train] == [1, 2, 3]
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 3 and ckpt["tokens"] == 3 * 64 and len(ckpt["history"]) == len(history)

    resumed = Trainer(make_model(seed=5), data, config).fit(resume_from=path)
    full = Trainer(make_model(), data, small_config(max_steps=6)).fit()
    assert train_losses(resumed) == train_losses(full)


class InterruptingData:
    """Wraps TokenData: the n-th training batch is drawn (the generator advances), then Ctrl-C arrives."""

    def __init__(self, data, n: int) -> None:
        self.data, self.n, self.calls, self.vocab_size = data, n, 0, data.vocab_size

    def get_batch(self, split, *args, **kwargs):
        batch = self.data.get_batch(split, *args, **kwargs)
        self.calls += split == "train"
        if split == "train" and self.calls == self.n:
            raise KeyboardInterrupt
        return batch

    def iter_split(self, *args, **kwargs):
        return self.data.iter_split(*args, **kwargs)


def test_ctrl_c_in_the_middle_of_a_step_checkpoints_the_last_complete_step(data, tmp_path):
    path = tmp_path / "ck.pt"
    config = small_config(max_steps=6, checkpoint_path=str(path))
    history = Trainer(make_model(dropout=0.1), InterruptingData(data, 4), config).fit()
    assert history.stop_reason == "interrupt" and history.train[-1]["step"] == 3
    assert load_checkpoint(path)["step"] == 3
    resumed = Trainer(make_model(dropout=0.1), data, config).fit(resume_from=path)
    full = Trainer(make_model(dropout=0.1), data, small_config(max_steps=6)).fit()
    assert train_losses(resumed) == train_losses(full)


def test_train_step_is_the_step_fit_takes(data):
    config = small_config(max_steps=4, grad_accum_steps=2, eval_interval=100)
    by_fit = Trainer(make_model(dropout=0.1), data, config).fit()
    model = make_model(dropout=0.1)
    trainer = Trainer(model, data, config)
    trainer.generator.manual_seed(config.seed)
    torch.manual_seed(config.seed)  # what fit seeds a fresh run with
    losses = []
    for _ in range(4):
        x, y = data.get_batch("train", 4 * 2, 16, generator=trainer.generator)
        loss, grad_norm = trainer.train_step(x, y)
        assert loss.shape == () and grad_norm.shape == () and model.training
        losses.append(float(loss))
    assert losses == train_losses(by_fit)
    assert trainer.step == 4 and trainer.tokens == 4 * 8 * 16
    model.eval()
    trainer.train_step(x, y)
    assert not model.training  # trained in training mode, then given back in eval mode
    with pytest.raises(ValueError, match=r"shape \(batch_size \* grad_accum_steps \* world_size, block_size\) "
                                         r"= \(8, 16\), got \(4, 16\)"):
        trainer.train_step(x[:4], y[:4])


# ---------------------------------------------------------------------------------------------- budgets
def test_token_budget_stops_at_the_first_step_reaching_it(data):
    history = Trainer(make_model(), data, small_config(max_steps=None, max_tokens=1000)).fit()
    assert history.stop_reason == "max_tokens"
    assert history.train[-1]["step"] == 16 and history.train[-1]["tokens"] == 1024  # ceil(1000 / 64)
    exact = Trainer(make_model(), data, small_config(max_steps=None, max_tokens=640)).fit()
    assert exact.train[-1]["step"] == 10


def test_flop_budget_and_whichever_budget_comes_first(data):
    model = make_model()
    per_step = model.flops_per_token(16) * 64
    history = Trainer(model, data, small_config(max_steps=None, max_flops=3.5 * per_step)).fit()
    assert history.stop_reason == "max_flops" and history.train[-1]["step"] == 4
    assert history.train[-1]["flops"] == 4 * per_step
    first = Trainer(make_model(), data, small_config(max_steps=3, max_tokens=10**9)).fit()
    assert first.stop_reason == "max_steps" and first.train[-1]["step"] == 3


def test_time_budget_with_a_fake_clock(data, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(train, "_clock", lambda: now[0])

    def tick(trainer, record):  # every train record costs 10 fake seconds
        if record["kind"] == "train":
            now[0] += 10.0

    history = Trainer(make_model(), data, small_config(max_steps=None, max_seconds=25), callbacks=[tick]).fit()
    assert history.stop_reason == "max_seconds"
    assert [r["step"] for r in history.train] == [1, 2, 3]
    assert [r["elapsed"] for r in history.train] == [0.0, 10.0, 20.0]  # recorded before the callback ran
    assert history.evals[-1]["elapsed"] == 30.0


def test_callback_stop_functions_and_on_end(data):
    seen: list[str] = []
    ended = []

    class End(Callback):
        def on_end(self, trainer, history):
            ended.append(history.stop_reason)

    def fn(trainer, record):
        seen.append(record["kind"])
        if record.get("step") == 5:
            trainer.should_stop = True

    history = Trainer(make_model(), data, small_config(max_steps=50), callbacks=[fn, End()]).fit()
    assert history.stop_reason == "callback" and history.train[-1]["step"] == 5
    assert history.evals[-1]["step"] == 5  # the final evaluation still runs
    assert seen == ["train"] * 4 + ["eval"] + ["train", "eval"] and ended == ["callback"]
    with pytest.raises(TypeError, match="callback"):
        Trainer(make_model(), data, small_config(), callbacks=[42])


# ---------------------------------------------------------------------------------------------- evaluation
def test_exact_evaluation_is_mean_nll_over_the_val_split(data):
    model = make_model()
    trainer = Trainer(model, data, small_config(eval_batches=None, batch_size=5))
    with torch.no_grad():
        model.eval()
        nats, count = 0.0, 0
        for x, y in data.iter_split("val", 7, 16):
            nats += model(x, y, reduction="sum").loss.item()
            count += int((y != IGNORE_INDEX).sum())
        model.train()
    assert count == 700 - 1  # every target once
    val, val_tokens = trainer._evaluate()
    assert val == pytest.approx(nats / count, rel=1e-6) and val_tokens == count
    assert trainer.evaluate() == val and model.training  # back in train mode


def test_random_evaluation_uses_the_same_batches_each_time(data):
    trainer = Trainer(make_model(dropout=0.5), data, small_config(eval_batches=3))
    a = trainer.evaluate()
    torch.rand(10)
    assert trainer.evaluate() == a  # eval mode (no dropout) and a dedicated, reseeded generator
    assert trainer._evaluate()[1] == 3 * 4 * 16


def test_evaluate_and_fit_give_the_model_back_in_its_mode(data):
    modes = []
    model = make_model(dropout=0.1)
    trainer = Trainer(model, data, small_config(max_steps=4, eval_interval=2),
                      callbacks=[lambda t, record: modes.append((record["kind"], t.model.training))])  # fmt: skip
    model.eval()
    trainer.evaluate()
    assert not model.training  # evaluate from outside fit leaves eval mode alone

    history = trainer.fit()
    assert [kind for kind, _ in modes] == ["train", "train", "eval", "train", "train", "eval"]
    assert all(training for _, training in modes)  # fit trains in training mode, also after each evaluation
    assert not model.training  # and gives the model back in eval mode, as it was
    assert history.stop_reason == "max_steps"
    model.train()
    trainer.config.max_steps = 5
    trainer.fit()
    assert model.training


def test_progress_bar_runs(data, capsys):
    history = Trainer(make_model(), data, small_config(max_steps=3, progress=True)).fit()
    assert len(history.train) == 3
    assert "train" in capsys.readouterr().err


def test_a_plain_module_without_flops_or_config_trains_and_checkpoints(data, tmp_path):
    class Bare(torch.nn.Module):  # no block_size, config or flops_per_token
        def __init__(self) -> None:
            super().__init__()
            self.gpt = make_model()

        def forward(self, x, y, reduction="mean"):
            return self.gpt(x, y, reduction=reduction)

    path = tmp_path / "ck.pt"
    history = Trainer(Bare(), data, small_config(max_steps=2, checkpoint_path=str(path))).fit()
    assert [r["flops"] for r in history] == [None, None, None]
    ckpt = load_checkpoint(path)
    assert ckpt["model_config"] is None and ckpt["flops"] is None
    Trainer(Bare(), data, small_config(max_steps=3)).fit(resume_from=path)
    with pytest.raises(ValueError, match="flops_per_token"):
        Trainer(Bare(), data, small_config(max_flops=1e9))
    with pytest.raises(ValueError, match="set TrainConfig.block_size"):
        Trainer(Bare(), data, small_config(block_size=None))


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_contents_load_with_weights_only(data, tmp_path):
    path = tmp_path / "ck.pt"
    model = make_model()
    trainer = Trainer(model, data, small_config(max_steps=4, checkpoint_path=str(path), checkpoint_interval=2))
    trainer.fit()
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert set(raw) == set(train.CHECKPOINT_KEYS)
    assert raw["step"] == 4 and raw["version"] == 1 and raw["model_config"] == model.config.to_dict()
    assert TrainConfig.from_dict(raw["train_config"]) == trainer.config
    assert raw["rng_cuda"] is None and isinstance(raw["batch_generator"], torch.Tensor)
    for k, v in model.state_dict().items():
        assert torch.equal(raw["model"][k], v)
    assert raw["history"] == list(trainer.history)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary files left


def test_damaged_checkpoint_is_a_value_error_naming_the_file(data, tmp_path):
    path = tmp_path / "ck.pt"
    Trainer(make_model(), data, small_config(max_steps=2, checkpoint_path=str(path))).fit()
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="damaged") as err:
        Trainer(make_model(), data, small_config()).fit(resume_from=path)
    assert str(path) in str(err.value)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="damaged"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_another_model_lists_the_differing_fields(data, tmp_path):
    path = tmp_path / "ck.pt"
    Trainer(make_model(), data, small_config(max_steps=2, checkpoint_path=str(path))).fit()
    with pytest.raises(ValueError, match="another model") as err:
        Trainer(make_model(n_embd=32, n_layer=3), data, small_config()).fit(resume_from=path)
    assert "n_embd (checkpoint 64, model 32)" in str(err.value) and "n_layer" in str(err.value)
    assert "vocab_size" not in str(err.value)


def test_checkpoint_of_another_world_size_is_refused(data, tmp_path):
    path = tmp_path / "ck.pt"
    Trainer(make_model(), data, small_config(max_steps=2, checkpoint_path=str(path))).fit()
    ckpt = torch.load(path, weights_only=True)
    ckpt["world_size"] = 2  # as written by rank 0 of a two-process run
    torch.save(ckpt, path)
    model = make_model(seed=7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, data, small_config(max_steps=4))
    with pytest.raises(ValueError, match="world_size 2 but this run has world_size 1") as err:
        trainer.fit(resume_from=path)
    assert "torchrun --nproc-per-node=2" in str(err.value) and "fresh run" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # refused before loading
    assert trainer.step == 0


def test_foreign_checkpoints_are_refused(data, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": make_model().state_dict(), "step": 3}, foreign)
    with pytest.raises(ValueError, match="not a checkpoint written by lmlab.train"):
        Trainer(make_model(), data, small_config()).fit(resume_from=foreign)
    tagged = tmp_path / "tagged.pt"
    torch.save({"format": train.CHECKPOINT_FORMAT, "version": 1, "model": {}}, tagged)
    with pytest.raises(ValueError, match="lacks the entries.*optimizer"):
        load_checkpoint(tagged)


def test_failed_save_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    config = small_config(max_steps=3, checkpoint_path=str(path))
    Trainer(make_model(), data, config).fit()
    good = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        Trainer(make_model(), data, small_config(max_steps=5, checkpoint_path=str(path))).fit(resume_from=path)
    assert path.read_bytes() == good and load_checkpoint(path)["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_resuming_with_other_hyperparameters_warns(data, tmp_path):
    path = tmp_path / "ck.pt"
    Trainer(make_model(), data, small_config(max_steps=2, checkpoint_path=str(path))).fit()
    with pytest.warns(UserWarning, match="lr"):
        Trainer(make_model(), data, small_config(max_steps=3, lr=1e-2)).fit(resume_from=path)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_steps": None}, "at least one budget"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_flops": 0.0}, "max_flops must be a positive number"),
        ({"max_seconds": -1}, "max_seconds"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"block_size": 0}, "block_size"),
        ({"grad_accum_steps": 0}, "grad_accum_steps"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"lr": -1e-3}, "lr must be a positive number"),
        ({"min_lr": 1.0}, "min_lr must be in"),
        ({"eval_interval": 0}, "eval_interval"),
        ({"eval_batches": 0}, "eval_batches"),
        ({"log_interval": 0}, "log_interval"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"betas": (0.9, 1.5)}, "betas"),
        ({"grad_clip": 0}, "grad_clip"),
        ({"amp": "bf16"}, "amp must be"),
        ({"checkpoint_interval": 5}, "need a checkpoint_path"),
        ({"resume": True}, "need a checkpoint_path"),
    ],
)
def test_bad_config_values_are_value_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_config(**overrides)


def test_warmup_longer_than_the_run_warns():
    with pytest.warns(UserWarning, match="warmup_steps"):
        TrainConfig(max_steps=5, warmup_steps=10)


def test_trainer_argument_errors(data):
    model = make_model()
    with pytest.raises(ValueError, match="block_size 64 exceeds the model's context limit 32"):
        Trainer(model, data, small_config(block_size=64))
    with pytest.raises(ValueError, match="amp=True needs a CUDA device"):
        Trainer(model, data, small_config(amp=True))
    with pytest.raises(TypeError, match="unknown TrainConfig field"):
        Trainer(model, data, max_stpes=3)
    with pytest.raises(TypeError, match="get_batch"):
        Trainer(model, object(), small_config())
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer(model, data, {"max_steps": 3})
    with pytest.raises(ValueError, match="vocab_size 300"):
        Trainer(make_model(vocab_size=64), type(data)(torch.zeros(50, dtype=torch.long),
                torch.zeros(50, dtype=torch.long), vocab_size=300), small_config())  # fmt: skip
    trainer = Trainer(model, data, max_steps=2, warmup_steps=0, progress=False, device="cpu")  # overrides
    assert trainer.config.max_steps == 2 and trainer.config.batch_size == 12


def test_train_support_fails_loudly_without_lmlab_text_data(monkeypatch):
    import importlib

    import lmlab.text.data

    assert importlib.import_module("_train_support").TokenData is lmlab.text.data.TokenData
    monkeypatch.setitem(sys.modules, "lmlab.text.data", None)  # what a broken module looks like to import
    monkeypatch.delitem(sys.modules, "_train_support")
    with pytest.raises(ImportError, match="lmlab.text.data"):
        importlib.import_module("_train_support")


# ---------------------------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ddp_on_two_cpu_processes_matches_one_process(data, tmp_path):
    steps = 5
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "LMLAB_DDP_WATCHDOG": "120"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        str(TESTS / "_ddp_worker.py"), str(tmp_path), str(steps), "2", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, cwd=TESTS.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
        output, _ = proc.communicate()
        pytest.fail("torchrun did not finish in 150 s:\n" + output[-4000:])
    assert proc.returncode == 0, output[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["ddp"] == "DistributedDataParallel" for r in ranks)
    assert ranks[0]["tokens_per_step"] == 2 * 16 * 2 * 2
    assert ranks[0]["saves"] == [str(tmp_path / "ckpt.pt")] and ranks[1]["saves"] == []  # rank 0 alone

    # one process, same global batch: batch 4 (= 2 per rank x 2 ranks), 2 accumulation steps
    single_model = make_model()
    single = Trainer(single_model, data, small_config(batch_size=4, grad_accum_steps=2, max_steps=steps,
                                                      eval_interval=3, eval_batches=None)).fit()  # fmt: skip
    for rank in ranks:
        h = History(rank["history"])
        assert [r["step"] for r in h.train] == list(range(1, steps + 1))
        assert [r["tokens"] for r in h.train] == [r["tokens"] for r in single.train]
        assert train_losses(h) == pytest.approx(train_losses(single), rel=1e-5)
        assert [r["val_loss"] for r in h.evals] == pytest.approx([r["val_loss"] for r in single.evals], rel=1e-5)
        assert [r["val_tokens"] for r in h.evals] == [r["val_tokens"] for r in single.evals]
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == steps
    for name, p in single_model.state_dict().items():
        torch.testing.assert_close(ckpt["model"][name], p, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_compiled_model_trains_and_saves_plain_weights(data, tmp_path, monkeypatch):
    calls = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):  # Dynamo tracing without Inductor's C++ code generation: seconds
        calls.append(model)
        return real_compile(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    model = make_model()
    path = tmp_path / "ck.pt"
    history = Trainer(model, data, small_config(max_steps=3, compile=True, checkpoint_path=str(path))).fit()
    assert calls == [model]
    assert len(history.train) == 3 and all(math.isfinite(r["train_loss"]) for r in history.train)
    assert set(load_checkpoint(path)["model"]) == set(model.state_dict())  # no "_orig_mod." prefixes
