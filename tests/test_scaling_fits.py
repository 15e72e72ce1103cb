"""lmlab.scaling: counting, published laws, compute-optimal allocation and the fits, against exact laws,
brute-force minimisation and scipy's own regressions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from lmlab.models import GPT, RNNLM, GPTConfig, RNNConfig
from lmlab.scaling import (
    PF_DAY,
    PUBLISHED,
    ChinchillaLaw,
    KaplanLaw,
    compute_optimal,
    exact_training_flops,
    fit_chinchilla,
    fit_power_law,
    isoflop,
    param_count,
    training_flops,
)

TRUE = ChinchillaLaw(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.37)


# ---------------------------------------------------------------------------------------------- counting
@pytest.mark.parametrize("non_embedding", [True, False])
def test_param_count_of_a_config_equals_the_built_model(non_embedding):
    for config in (GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32),
                   GPTConfig(vocab_size=65, block_size=32, n_layer=1, n_head=1, n_embd=16, tie_weights=False),
                   RNNConfig(vocab_size=65, n_embd=16, n_hidden=24, n_layer=2, cell="lstm")):  # fmt: skip
        model = GPT(config) if isinstance(config, GPTConfig) else RNNLM(config)
        by_hand = sum(p.numel() for p in model.parameters())
        if non_embedding:
            by_hand -= model.num_params(non_embedding=False) - model.num_params(non_embedding=True)
        assert param_count(config, non_embedding) == param_count(model, non_embedding) == by_hand


def test_param_count_follows_12_L_d_squared_for_wide_models():
    # each block: 4 d^2 (attention) + 8 d^2 (MLP) weights, plus O(d) biases and norms (Kaplan et al. 2020, table 1)
    L, d = 4, 256
    n = param_count(GPTConfig(vocab_size=256, block_size=64, n_layer=L, n_head=4, n_embd=d))
    assert n == L * (12 * d * d + 13 * d) + 2 * d


def test_training_flops():
    assert training_flops(1e6, 2e9) == 6 * 1e6 * 2e9
    config = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config)
    assert exact_training_flops(config, 1000) == 1000 * model.flops_per_token()
    assert exact_training_flops(model, 1000, context=8) == 1000 * model.flops_per_token(8)
    # 6ND leaves out the attention terms: the exact count is larger
    assert exact_training_flops(model, 1000) > training_flops(model.num_params(), 1000)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: training_flops(0, 10), ValueError, "N must be a finite number > 0"),
        (lambda: training_flops(10, -1), ValueError, "D must be"),
        (lambda: param_count("gpt2"), TypeError, "expected an lmlab GPT"),
        (lambda: exact_training_flops(GPTConfig(), 0), ValueError, "tokens must be an integer >= 1"),
    ],
)
def test_counting_refuses_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------------------------------------- laws
def test_compute_optimal_matches_a_brute_force_minimum_on_the_budget():
    for law in (TRUE, PUBLISHED["hoffmann2022"], PUBLISHED["besiroglu2024"]):
        for C in (1e15, 1e21, 5.76e23):
            n_opt, d_opt = compute_optimal(C, law)
            assert 6 * n_opt * d_opt == pytest.approx(C)
            on_budget = lambda logn, law=law, C=C: law.loss(math.exp(logn), C / (6 * math.exp(logn)))  # noqa: E731
            res = optimize.minimize_scalar(on_budget, bounds=(0, 60), method="bounded", options={"xatol": 1e-10})
            assert math.log(n_opt) == pytest.approx(res.x, abs=1e-4)


def test_the_published_values_and_what_they_imply():
    h, b, k = PUBLISHED["hoffmann2022"], PUBLISHED["besiroglu2024"], PUBLISHED["kaplan2020"]
    assert (h.E, h.A, h.B, h.alpha, h.beta) == (1.69, 406.4, 410.7, 0.34, 0.28)
    assert h.a == pytest.approx(0.28 / 0.62) and h.a + h.b == pytest.approx(1)
    assert 0.5 < b.a < 0.52  # the replication's optimum scales N and D nearly equally
    # Chinchilla: 70B parameters on 1.4T tokens is about 20 tokens per parameter at its budget
    n, d = b.compute_optimal(6 * 70e9 * 1.4e12)
    assert 10 < d / n < 40
    assert h.params == b.params == "total" and k.params == "non-embedding"
    assert all(law.citation for law in PUBLISHED.values())


def test_kaplan_law_reduces_to_its_one_variable_laws():
    k = KaplanLaw()
    # with unlimited data L(N, D) -> (N_c / N)^alpha_N (Kaplan et al. 2020, eq. 1.1)
    assert k.loss(1e9, 1e30) == pytest.approx((8.8e13 / 1e9) ** 0.076, rel=1e-6)
    # with an unlimited model L(N, D) -> (D_c / D)^alpha_D (eq. 1.2)
    assert k.loss(1e40, 1e10) == pytest.approx((5.4e13 / 1e10) ** 0.095, rel=1e-6)
    assert k.loss_of_compute(3.1e8 * PF_DAY) == pytest.approx(1.0)
    n, d = k.compute_optimal(PF_DAY)
    assert n == pytest.approx(1.3e9) and 6 * n * d == pytest.approx(PF_DAY)


def test_laws_refuse_bad_input():
    with pytest.raises(ValueError, match="N must be finite and > 0"):
        TRUE.loss(0, 1e9)
    with pytest.raises(ValueError, match="alpha, beta > 0"):
        ChinchillaLaw(E=1, A=1, B=1, alpha=-0.1, beta=0.3)
    with pytest.raises(ValueError, match="params must be one of"):
        ChinchillaLaw(E=1, A=1, B=1, alpha=0.1, beta=0.3, params="embedding")
    with pytest.raises(TypeError, match="fit must be a ChinchillaLaw"):
        compute_optimal(1e18, {"E": 1})


# ---------------------------------------------------------------------------------------------- power law
def test_an_exact_power_law_is_recovered_exactly():
    x = np.geomspace(1e3, 1e7, 9)
    fit = fit_power_law(x, 7.0 * x**-0.3)
    assert fit.exponent == pytest.approx(-0.3, abs=1e-12) and fit.coefficient == pytest.approx(7.0, rel=1e-10)
    assert fit.intervals["exponent"][1] - fit.intervals["exponent"][0] < 1e-10
    with_offset = fit_power_law(x, 1.5 + 7.0 * x**-0.3, offset=True)
    assert with_offset.offset == pytest.approx(1.5, rel=1e-6)
    assert with_offset.exponent == pytest.approx(-0.3, rel=1e-5)
    assert with_offset.coefficient == pytest.approx(7, rel=1e-4)
    assert with_offset.predict(1e5) == pytest.approx(1.5 + 7.0 * 1e5**-0.3, rel=1e-8)


def test_without_an_offset_it_is_scipys_linear_regression_in_log_space():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e4, 1e6, 12)
    y = 3.0 * x**-0.2 * np.exp(rng.normal(0, 0.02, x.size))
    fit = fit_power_law(x, y, confidence=0.9)
    ref = stats.linregress(np.log(x), np.log(y))
    t = stats.t.ppf(0.95, x.size - 2)
    assert fit.exponent == pytest.approx(ref.slope) and math.log(fit.coefficient) == pytest.approx(ref.intercept)
    assert fit.intervals["exponent"] == pytest.approx((ref.slope - t * ref.stderr, ref.slope + t * ref.stderr))
    lo, hi = fit.intervals["coefficient"]
    assert (math.log(lo), math.log(hi)) == pytest.approx(
        (ref.intercept - t * ref.intercept_stderr, ref.intercept + t * ref.intercept_stderr)
    )


def test_with_an_offset_it_agrees_with_scipys_curve_fit_and_covers_the_truth():
    rng = np.random.default_rng(1)
    x = np.geomspace(1e3, 1e8, 20)
    y = (2.0 + 50.0 * x**-0.35) * np.exp(rng.normal(0, 0.003, x.size))
    fit = fit_power_law(x, y, offset=True)

    def log_model(logx, log_c, k, E):
        return np.log(E + np.exp(log_c + k * logx))

    ref, _ = optimize.curve_fit(log_model, np.log(x), np.log(y), p0=[math.log(40), -0.3, 1.5], maxfev=20000)
    assert (math.log(fit.coefficient), fit.exponent, fit.offset) == pytest.approx(tuple(ref), rel=1e-4)
    for name, truth in (("offset", 2.0), ("exponent", -0.35), ("coefficient", 50.0)):
        lo, hi = fit.intervals[name]
        assert lo < truth < hi, f"{name}: {truth} outside ({lo}, {hi})"


@pytest.mark.parametrize(
    ("x", "y", "offset", "message"),
    [
        ([1, 2], [1, 2, 3], False, "same length"),
        ([1], [1], False, "at least 2 points"),
        ([1, 2], [3, 2], True, "at least 3 points"),
        ([1, 0, 2], [1, 2, 3], False, "finite and > 0"),
        ([1, 2, 3], [1, -2, 3], False, "finite and > 0"),
        ([2, 2, 2], [1, 2, 3], False, "two different values"),
    ],
)
def test_power_law_fits_refuse_bad_input(x, y, offset, message):
    with pytest.raises(ValueError, match=message):
        fit_power_law(x, y, offset=offset)


# ---------------------------------------------------------------------------------------------- Chinchilla
def _grid_of_runs(law: ChinchillaLaw, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(1e6, 1e10, 8), 6)
    D = np.tile(np.geomspace(1e8, 1e12, 6), 8)
    return N, D, law.loss(N, D) * np.exp(rng.normal(0, noise, N.size))


def test_exact_points_give_back_their_law():
    fit = fit_chinchilla(*_grid_of_runs(TRUE, 0.0, 0), bootstrap=0)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit, name) == pytest.approx(getattr(TRUE, name), rel=1e-3), name


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_points_recover_the_law_within_the_stated_tolerances(seed):
    # 48 runs over four decades of N and D, each loss off by a factor exp(0.5% noise)
    fit = fit_chinchilla(*_grid_of_runs(TRUE, 0.005, seed), bootstrap=20, seed=seed)
    assert fit.E == pytest.approx(TRUE.E, rel=0.02)
    assert fit.alpha == pytest.approx(TRUE.alpha, rel=0.05) and fit.beta == pytest.approx(TRUE.beta, rel=0.05)
    for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
        lo, hi = fit.intervals[name]
        value = getattr(fit, name)
        assert lo <= value <= hi and lo < hi, f"{name}: the fit {value} lies outside its interval ({lo}, {hi})"
    assert fit.n_points == 48 and fit.objective > 0


def test_the_fit_is_deterministic_for_a_seed():
    runs = _grid_of_runs(TRUE, 0.005, 3)
    a, b = fit_chinchilla(*runs, bootstrap=5, seed=7), fit_chinchilla(*runs, bootstrap=5, seed=7)
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"N": [1e6] * 4, "D": [1e8, 1e9, 1e10, 1e11], "loss": [3, 2.8, 2.7, 2.6]}, "at least 5 runs"),
        ({"N": [1e6] * 5, "D": [1e8, 1e9, 1e10, 1e11, 1e12], "loss": [3, 2.8, 2.7, 2.6, 2.5]}, "two different N"),
        ({"N": [1e6, 1e7, 1e8, 1e9, 0], "D": [1e8] * 5, "loss": [3] * 5}, "finite and > 0"),
        ({"N": [1e6, 1e7], "D": [1e8], "loss": [3, 2]}, "same length"),
    ],
)
def test_chinchilla_fits_refuse_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_chinchilla(**kwargs, bootstrap=0)


# ---------------------------------------------------------------------------------------------- IsoFLOP
def test_isoflop_finds_the_laws_optimum_and_its_exponent():
    runs = []
    for C in np.geomspace(1e18, 1e22, 5):
        n_star, _ = TRUE.compute_optimal(C)
        for N in n_star * np.geomspace(0.25, 4, 7):  # sizes around the optimum, on the budget
            D = C / (6 * N)
            runs.append({"budget": C, "n_params": N, "tokens": D, "loss": TRUE.loss(N, D)})
    result = isoflop(runs)
    assert all(p.from_parabola and p.runs == 7 for p in result.points)
    for p in result.points:
        n_star, d_star = TRUE.compute_optimal(p.budget)
        # a parabola in log N approximates the true curve: the vertex lands near the optimum
        assert p.n_opt == pytest.approx(n_star, rel=0.1) and p.d_opt == pytest.approx(d_star, rel=0.1)
        assert p.loss_opt == pytest.approx(TRUE.optimal_loss(p.budget), rel=1e-3)
    assert result.n_fit.exponent == pytest.approx(TRUE.a, abs=0.01)
    assert result.d_fit.exponent == pytest.approx(TRUE.b, abs=0.01)


def test_isoflop_takes_the_best_run_when_a_budget_has_too_few_sizes():
    runs = [{"budget": 1e15, "n_params": n, "tokens": 1e15 / 6 / n, "loss": l} for n, l in ((1e4, 3.0), (1e5, 2.9))]
    runs += [{"budget": 1e16, "n_params": n, "tokens": 1e16 / 6 / n, "loss": l} for n, l in ((1e4, 2.8), (1e5, 2.7))]
    result = isoflop(runs)
    assert [p.n_opt for p in result.points] == [1e5, 1e5] and not any(p.from_parabola for p in result.points)


def test_isoflop_refuses_bad_input():
    with pytest.raises(ValueError, match="2 budgets or more"):
        isoflop([{"budget": 1e15, "n_params": 1e4, "tokens": 1e9, "loss": 3.0}])
    with pytest.raises(ValueError, match="needs a 'tokens' value"):
        isoflop([{"budget": 1e15, "n_params": 1e4, "loss": 3.0}])
    with pytest.raises(ValueError, match="non-empty sequence"):
        isoflop([])
