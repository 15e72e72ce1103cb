"""Lesson 05's code (lmlab/lessons/multitoken/) against independent references."""

import math

import matplotlib
import pytest
import torch

from lmlab.generation.speculative import speculative_greedy
from lmlab.lessons import multitoken as mtl
from lmlab.models import GPT, GPTConfig, MultiTokenGPT
from lmlab.text.pathstar import PathStar

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def language_runs():
    language = mtl.lesson_language()
    data = mtl.language_data(language, n_train=4_000, n_val=256)
    config = GPTConfig.preset("micro", vocab_size=language.vocab_size, block_size=16)
    budget = mtl.make_model(config, 1).flops_per_token(16) * 8 * 16 * 40  # 40 steps of the one-head model
    return language, data, config, budget, mtl.equal_compute_runs(data, (1, 2, 4), flops=budget, config=config,
                                                                  batch_size=8)


def test_equal_compute_runs_spend_the_same_budget(language_runs):
    _, _, config, budget, runs = language_runs
    assert [r.n_future for r in runs] == [1, 2, 4]
    assert runs[0].steps == 40 and runs[0].steps > runs[1].steps > runs[2].steps
    for r in runs:
        per_step = mtl.make_model(config, r.n_future).flops_per_token(16) * 8 * 16
        assert budget <= r.flops < budget + per_step  # stopped at the first step that reached the budget
    assert isinstance(runs[0].model, GPT) and isinstance(runs[2].model, MultiTokenGPT)


def test_next_token_loss_is_head_ones_cross_entropy_on_the_whole_validation_split(language_runs):
    _, data, config, _, runs = language_runs
    x, y = next(data.iter_split("val", 10**6, 16))  # the whole split in one batch
    for r in runs:
        with torch.no_grad():
            logits = r.model(x).logits  # head 1
        reference = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
        assert r.next_token_loss == pytest.approx(reference, rel=1e-5)
    assert all(r.next_token_loss < math.log(12) for r in runs)  # every run learned something in 40 steps


def test_speculative_runs_return_greedys_text_and_add_up_the_library_stats(language_runs):
    language, _, _, _, runs = language_runs
    model = runs[2].model
    prompts = [language.sample(3, generator=s).tolist() for s in range(3)]
    spec = mtl.speculative_runs(model, prompts, max_new_tokens=12)
    assert [r.n_draft for r in spec] == [0, 1, 2, 3] and all(r.same_as_greedy for r in spec)
    for r in spec:
        stats = [speculative_greedy(model, p, max_new_tokens=12, n_draft=r.n_draft, return_stats=True)[1]
                 for p in prompts]
        assert r.forward_passes == sum(s.forward_passes for s in stats)
        assert r.accepted == sum(s.accepted for s in stats) <= r.drafted == sum(s.drafted for s in stats)
        assert r.new_tokens == 36 and r.tokens_per_pass == 36 / r.forward_passes
    assert spec[0].drafted == 0 and math.isnan(spec[0].acceptance_rate)


def test_the_committed_pathstar_results_match_the_lessons_runs():
    results = mtl.load_pathstar_results()
    assert PathStar(**results["task"]) == mtl.PATHSTAR_TASK
    names = [r["name"] for r in results["runs"]]
    assert set(names) == set(mtl.PATHSTAR_RUNS) and len(names) % len(mtl.PATHSTAR_RUNS) == 0
    for r in results["runs"]:
        reverse, n_future = mtl.PATHSTAR_RUNS[r["name"]]
        assert (r["reverse"], r["n_future"], r["steps"]) == (reverse, n_future, results["steps"])
        assert 0 <= r["whole_path"] <= r["first_step"] <= 1 and r["n_eval"] == 2000


def test_a_short_pathstar_run_and_its_bad_name():
    task = PathStar(2, 2, 6)
    out = mtl.pathstar_run("2 heads", steps=3, task=task, n_eval=20)
    assert out["n_future"] == 2 and out["steps"] == 3 and 0 <= out["whole_path"] <= out["first_step"] <= 1
    with pytest.raises(ValueError, match="runs are: next-token"):
        mtl.pathstar_run("3 heads")


def test_the_pictures_and_the_widget_draw(language_runs):
    language, _, _, _, runs = language_runs
    axes = mtl.plot_equal_compute({"language": runs}, best={"language": language.entropy_rate()})
    assert len(axes[0].patches) == 3
    ax = mtl.plot_pathstar(mtl.load_pathstar_results()["runs"], 2)
    assert len(ax.patches) == 2 * len(mtl.PATHSTAR_RUNS)
    prompts = [language.sample(3, generator=s).tolist() for s in range(2)]
    spec = mtl.speculative_runs(runs[2].model, prompts, max_new_tokens=6)
    assert len(mtl.plot_speculative(spec).lines) == 2
    widget = mtl.draft_explorer(runs[2].model, language, prompts, max_new_tokens=6)
    assert [c.description for c in widget.children[:2]] == ["drafts", "prompt"] and widget.children[0].max == 3
