"""Lesson 04's experiments, figures and widget (lmlab.lessons.scaling), and its committed grids.

References: brute-force minima for the frontier, lmlab.scaling's own fits and closed forms, 6ND = C, the
sweep's plan for the grids' contents, MarkovSource's exact entropy rates for the mixture floors.
"""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lmlab.lessons import scaling as sc  # noqa: E402
from lmlab.scaling import PUBLISHED, fit_power_law, isoflop, load_sweep, plan_sweep  # noqa: E402
from lmlab.text.synthetic import MarkovSource  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def markov():
    return sc.load_grid("markov")


@pytest.mark.parametrize("name", sorted(sc.GRIDS))
def test_committed_grid_holds_every_planned_run_of_its_setup(name):
    header, records = sc.load_grid(name)
    config = sc.GRIDS[name]
    assert header["fingerprint"] == config.fingerprint()
    planned = {r.run_id for r in plan_sweep(config).runs}
    assert sorted(r.run_id for r in records) == sorted(planned)
    assert all(r.setup == config.fingerprint() for r in records)
    assert header["command"].startswith(f"python -m lmlab.lessons.scaling.grids {name}")
    assert header["machine"]["torch"] and header["sessions"] and all(s["ended"] for s in header["sessions"])
    assert sum(s["runs"] for s in header["sessions"]) == len(records)
    for r in records:  # each run stopped at its budget, and its loss is a plausible number of nats
        assert r.flops <= r.budget and r.flops > 0.9 * r.budget
        assert 0 < r.loss < math.log(256) + 0.5  # below (or near) a uniform guess over the largest vocabulary


def test_the_markov_grid_fits_an_irreducible_loss_near_the_entropy_rate(markov):
    _, records = markov
    truth = sc.GRIDS["markov"].data.entropy_rate()
    assert math.isclose(truth, MarkovSource(256, 1, 0).entropy_rate("nats"))
    assert min(r.loss for r in records) > truth  # no run beats the true model
    fit = sc.fit_grid(records, "total", bootstrap=10)
    lo, hi = fit.intervals["E"]
    assert lo <= fit.E <= hi and abs(fit.E - truth) < 0.15


def test_frontier_is_the_lowest_loss_of_each_budget(markov):
    _, records = markov
    best = sc.frontier(records)
    budgets = sorted({r.budget for r in records})
    assert [r.budget for r in best] == budgets
    for r in best:
        assert r.loss == min(x.loss for x in records if x.budget == r.budget)
    f = sc.fit_frontier(records)
    ref = fit_power_law([r.flops for r in best], [r.loss for r in best])
    assert math.isclose(f.exponent, ref.exponent) and math.isclose(f.coefficient, ref.coefficient)
    assert f.exponent < 0


def test_grid_arrays_counts_the_parameters_it_is_asked_for(markov):
    _, records = markov
    ne, tot = sc.grid_arrays(records, "non-embedding"), sc.grid_arrays(records, "total")
    assert np.all(tot["N"] > ne["N"]) and np.array_equal(ne["loss"], tot["loss"])
    assert np.array_equal(ne["D"], [r.tokens for r in records])
    with pytest.raises(ValueError, match="params must be"):
        sc.grid_arrays(records, "all")
    with pytest.raises(ValueError, match="no records"):
        sc.grid_arrays([], "total")


def test_allocation_rows_follow_each_law_and_spend_the_budget():
    C = 5.76e23
    rows = sc.allocation_rows(C)
    assert [r["law"] for r in rows] == [law.name for law in PUBLISHED.values()]
    for r, law in zip(rows, PUBLISHED.values(), strict=True):
        n, d = law.compute_optimal(C)
        assert math.isclose(r["N_opt"], n) and math.isclose(r["D_opt"], d)
        assert math.isclose(6 * r["N_opt"] * r["D_opt"], C, rel_tol=1e-9)
        assert math.isclose(r["loss"], law.optimal_loss(C))
    by_law = {r["law"]: r for r in rows}
    refit = by_law[PUBLISHED["besiroglu2024"].name]
    assert 60e9 < refit["N_opt"] < 85e9 and 10 < refit["tokens_per_param"] < 40  # near Chinchilla's 70B, 1.4T
    assert by_law[PUBLISHED["hoffmann2022"].name]["tokens_per_param"] > 2 * refit["tokens_per_param"]
    assert by_law[PUBLISHED["kaplan2020"].name]["N_opt"] > 300e9
    for bad in (0, -1.0, float("nan"), "1e21"):
        with pytest.raises(ValueError, match="C must be"):
            sc.allocation_rows(bad)


def test_exponent_rows_hold_the_published_laws_and_the_fits(markov):
    fit = sc.fit_grid(markov[1], "non-embedding", bootstrap=5, name="mine")
    rows = sc.exponent_rows({"mine": fit})
    assert [r["law"] for r in rows][-1] == "mine" and len(rows) == len(PUBLISHED) + 1
    kaplan = rows[0]
    assert kaplan["E"] is None and kaplan["N"] == "non-embedding" and math.isclose(kaplan["a"], 0.73)
    for r in rows[1:]:
        assert math.isclose(r["a"] + r["b"], 1.0)


def test_live_grid_plans_runs_of_enough_steps_and_resumes(tmp_path):
    for fast in (False, True):
        plan = plan_sweep(sc.live_config(fast))
        assert plan.runs and all(r.steps >= 20 for r in plan.runs)
    assert plan_sweep(sc.live_config(True)).total_flops < plan_sweep(sc.live_config(False)).total_flops / 4
    path = tmp_path / "live.jsonl"
    first = sc.run_live_grid(path, fast=True, progress=False)
    assert {r.run_id for r in first} == {r.run_id for r in plan_sweep(sc.live_config(True)).runs}
    again = sc.run_live_grid(path, fast=True, progress=False)  # nothing left to train: the same records
    assert again == first and load_sweep(path)[1] == first


def test_mixture_moves_each_domains_loss_with_its_share():
    rows = sc.mixture_experiment((0.0, 1.0), steps=60, n_embd=16, n_val=32)
    only_b, only_a = rows
    assert only_a.loss_a < only_b.loss_a and only_b.loss_b < only_a.loss_b
    for r in rows:
        assert r.loss_a > r.entropy_a and r.loss_b > r.entropy_b
        assert math.isclose(r.mean_loss, (r.loss_a + r.loss_b) / 2)
    assert math.isclose(rows[0].entropy_a, MarkovSource(**sc.MIXTURE_SOURCES["A"]).entropy_rate("nats"))
    again = sc.mixture_experiment((0.0,), steps=60, n_embd=16, n_val=32)
    assert again[0] == only_b  # deterministic for the seed
    for bad in ((), (1.5,), (-0.1, 0.5)):
        with pytest.raises(ValueError, match="weights must be"):
            sc.mixture_experiment(bad, steps=1)


def test_figures_and_widget_draw(markov):
    _, records = markov
    sc.plot_grid(records, entropy=4.5, fit=sc.fit_frontier(records), title="t")
    iso = isoflop(records, params="n_params_total")
    sc.plot_isoflop(records, iso, params="total", laws=[PUBLISHED["hoffmann2022"]])
    sc.plot_mixture(sc.mixture_experiment((0.0, 1.0), steps=2, n_embd=16, n_val=2))
    sc.show_budget(1e21)
    pytest.importorskip("ipywidgets")
    w = sc.budget_explorer(C=1e20)
    assert math.isclose(w.children[0].value, 20.0)
    with pytest.raises(ValueError, match="C must be"):
        sc.budget_explorer(C=1e30)
