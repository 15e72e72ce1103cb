"""lmlab.scaling's sweep: exact budgets, atomic resumable records, parallel workers that give the same runs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lmlab.models import GPT, GPTConfig
from lmlab.scaling import (
    CorpusData,
    MarkovData,
    ModelShape,
    SweepConfig,
    isoflop,
    load_sweep,
    plan_sweep,
    run_one,
    run_sweep,
)

DATA = MarkovData(vocab_size=16, order=1, n_train=20_000, n_val=2_000)
SHAPES = (ModelShape(1, 16, 2), ModelShape(1, 32, 2))
CONFIG = SweepConfig(data=DATA, shapes=SHAPES, budgets=(3e8, 6e8), block_size=16, batch_size=4, warmup_steps=2)


def test_the_plan_never_exceeds_a_budget_and_counts_like_the_model():
    plan = plan_sweep(CONFIG)
    assert [r.run_id for r in plan.runs] == ["L1-d16-h2@3e+08", "L1-d16-h2@6e+08", "L1-d32-h2@3e+08",
                                             "L1-d32-h2@6e+08"]  # fmt: skip
    for run in plan.runs:
        model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=run.shape.n_embd))
        step = 4 * 16 * model.flops_per_token(16)
        assert run.steps == int(run.budget // step) and run.flops <= run.budget < run.flops + step
        assert run.tokens == run.steps * 4 * 16 and run.flops == run.tokens * model.flops_per_token(16)
        assert (run.n_params, run.n_params_total) == (model.num_params(True), model.num_params(False))
    assert plan.total_flops == sum(r.flops for r in plan.runs)
    tokens = plan_sweep(replace(CONFIG, budget_kind="tokens", budgets=(1000,)))
    assert all(r.tokens == 960 and r.steps == 15 for r in tokens.runs)  # floor(1000 / 64) steps of 64 tokens


def test_a_budget_too_small_for_one_step_is_refused_with_the_cost_of_a_step():
    with pytest.raises(ValueError, match=r"too small for one optimizer step .*L1-d32-h2 at 1e\+06 \(one step costs"):
        plan_sweep(replace(CONFIG, budgets=(1e6,)))


def test_runs_below_min_steps_are_left_out_and_listed():
    full = plan_sweep(CONFIG)
    plan = plan_sweep(replace(CONFIG, min_steps=full.runs[2].steps + 1))
    big = {r.run_id for r in full.runs if r.shape == SHAPES[1] and r.steps <= full.runs[2].steps}
    assert {r.run_id for r in plan.runs} == {r.run_id for r in full.runs} - big
    assert plan.skipped == [f"L1-d32-h2 at 3e+08 ({full.runs[2].steps} steps)"]
    with pytest.raises(ValueError, match="no run has min_steps"):
        plan_sweep(replace(CONFIG, min_steps=10**6))


def test_a_run_trains_exactly_its_plan_and_is_deterministic():
    run = plan_sweep(CONFIG).runs[0]
    a, b = run_one(CONFIG, run), run_one(CONFIG, run)
    assert (a.steps, a.tokens, a.flops) == (run.steps, run.tokens, run.flops)
    assert a.loss == b.loss and a.train_loss == b.train_loss
    assert a.flops_6nd == 6 * a.n_params * a.tokens


def test_the_sweep_resumes_where_it_stopped_and_keeps_every_finished_run(tmp_path, monkeypatch):
    path = tmp_path / "sweep.jsonl"
    seen = []

    def stop_after_two(record):
        seen.append(record.run_id)
        if len(seen) == 2:
            raise KeyboardInterrupt  # the user stops the sweep

    with pytest.raises(KeyboardInterrupt):
        run_sweep(CONFIG, path, command="first", progress=False, estimate=False, on_record=stop_after_two)
    header, records = load_sweep(path)
    assert [r.run_id for r in records] == seen and header["command"] == "first"
    import lmlab.scaling.sweep as sweep

    trained = []
    real = sweep.run_one
    monkeypatch.setattr(sweep, "run_one", lambda config, run: trained.append(run.run_id) or real(config, run))
    records = run_sweep(CONFIG, path, command="second", progress=False, estimate=False)
    assert trained == [r.run_id for r in plan_sweep(CONFIG).runs[2:]], "finished runs are not repeated"
    assert len(records) == 4 and load_sweep(path)[1] == records
    assert load_sweep(path)[0]["command"] == "first && second"
    assert run_sweep(CONFIG, path, progress=False, estimate=False) == records  # nothing left to train
    assert trained == [r.run_id for r in plan_sweep(CONFIG).runs[2:]]


def test_a_file_of_another_setup_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "sweep.jsonl"
    run_sweep(replace(CONFIG, budgets=(3e8,), shapes=SHAPES[:1]), path, progress=False, estimate=False)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="holds runs of another setup"):
        run_sweep(replace(CONFIG, lr=1e-2), path, progress=False, estimate=False)
    assert path.read_bytes() == before


def test_a_failed_run_leaves_the_last_good_file(tmp_path, monkeypatch):
    path = tmp_path / "sweep.jsonl"
    small = replace(CONFIG, budgets=(3e8,), shapes=SHAPES[:1])
    run_sweep(small, path, progress=False, estimate=False)
    before = path.read_bytes()
    import lmlab.scaling.sweep as sweep

    def broken(config, run):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(sweep, "run_one", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_sweep(replace(small, shapes=SHAPES), path, progress=False, estimate=False)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


@pytest.mark.slow
def test_parallel_workers_give_the_same_records_as_one_process(tmp_path):
    serial = run_sweep(CONFIG, tmp_path / "serial.jsonl", progress=False, estimate=False)
    parallel = run_sweep(CONFIG, tmp_path / "parallel.jsonl", workers=2, progress=False, estimate=False)
    key = lambda r: r.run_id  # noqa: E731
    for a, b in zip(sorted(serial, key=key), sorted(parallel, key=key), strict=True):
        fields = ("run_id", "loss", "train_loss", "tokens", "flops")
        assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]


def test_records_feed_the_isoflop_analysis(tmp_path):
    records = run_sweep(CONFIG, tmp_path / "s.jsonl", progress=False, estimate=False)
    result = isoflop(records)
    assert [p.budget for p in result.points] == [3e8, 6e8] and all(p.runs == 2 for p in result.points)
    assert all(p.n_opt in (r.n_params for r in records) for p in result.points)  # two sizes: the best run


def test_the_sweep_file_is_json_lines_with_a_header(tmp_path):
    path = tmp_path / "s.jsonl"
    run_sweep(replace(CONFIG, budgets=(3e8,)), path, command="cmd", progress=False, estimate=False)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "lmlab scaling sweep" and header["setup"]["data"]["kind"] == "markov"
    assert {"torch", "python", "processor"} <= set(header["machine"])
    assert [json.loads(line)["run_id"] for line in lines[1:]] == ["L1-d16-h2@3e+08", "L1-d32-h2@3e+08"]


def test_the_markov_data_knows_its_entropy_rate():
    assert DATA.entropy_rate() == pytest.approx(DATA.source().entropy_rate("nats"))
    assert 0 < DATA.entropy_rate() < 2.78  # below log(16), the uniform language's
    assert CorpusData().entropy_rate() is None


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: replace(CONFIG, budget_kind="steps"), ValueError, "budget_kind must be one of"),
        (lambda: replace(CONFIG, budgets=()), ValueError, "budgets must be a non-empty"),
        (lambda: replace(CONFIG, budgets=(1e9, -1)), ValueError, "numbers > 0"),
        (lambda: replace(CONFIG, shapes=(SHAPES[0], SHAPES[0])), ValueError, "must not repeat"),
        (lambda: replace(CONFIG, data="markov"), TypeError, "MarkovData or CorpusData"),
        (lambda: ModelShape(2, 30, 4), ValueError, "divisible by n_head"),
        (lambda: ModelShape(0, 32, 2), ValueError, "n_layer must be an integer >= 1"),
        (lambda: CorpusData(tokenizer="bpe"), ValueError, "'char' or 'byte'"),
        (lambda: MarkovData(n_train=1), ValueError, "n_train must be an integer >= 2"),
    ],
)
def test_bad_configs_say_what_is_allowed(make, error, message):
    with pytest.raises(error, match=message):
        make()
