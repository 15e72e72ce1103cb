"""Fitting scaling laws to runs: a power law (with or without an offset), the Chinchilla form, IsoFLOP minima.

- :func:`fit_power_law`: ``y = offset + coefficient * x**exponent`` in log space, with intervals
  (ordinary least squares on log-log axes without an offset; nonlinear least squares on ``log y`` with one).
- :func:`fit_chinchilla`: ``L = E + A/N**alpha + B/D**beta`` as in Hoffmann et al. (2022, approach 3) and
  Besiroglu et al. (2024): a Huber loss (delta 1e-3) on the log of the loss, the prediction written in
  log-sum-exp form, L-BFGS from the best points of a grid of starts; intervals from a bootstrap over runs.
- :func:`isoflop`: for each compute budget, the model size with the lowest loss (the vertex of a parabola
  in log N, Hoffmann et al.'s approach 2), and the power laws ``N_opt ∝ C**a``, ``D_opt ∝ C**b``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats
from scipy.special import logsumexp

from lmlab.checks import check_int
from lmlab.scaling.laws import ChinchillaLaw

__all__ = [
    "PowerLaw",
    "fit_power_law",
    "HUBER_DELTA",
    "CHINCHILLA_GRID",
    "fit_chinchilla",
    "IsoflopPoint",
    "IsoflopResult",
    "isoflop",
]

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, section 3.3
# The grid of starting points of Hoffmann et al.'s fit, as Besiroglu et al. (2024) report and reuse it,
# in the fitted parameters: a = log A, b = log B, e = log E
CHINCHILLA_GRID = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}


def _positive(name: str, values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = arr[~np.isfinite(arr) | (arr <= 0)][:3]
        raise ValueError(f"{name} must be finite and > 0 (they are fitted in log space), got {bad.tolist()}")
    return arr


def _check_confidence(confidence: Any) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    return float(confidence)


# ---------------------------------------------------------------------------------------------- power law
@dataclass(frozen=True)
class PowerLaw:
    """``y = offset + coefficient * x**exponent``; for a loss that falls, ``exponent < 0`` (Kaplan et al.'s
    alpha is ``-exponent``). ``intervals``: {name: (low, high)} at ``confidence`` (NaN where the points
    leave no degrees of freedom)."""

    coefficient: float
    exponent: float
    offset: float  # 0.0 when fitted without one
    intervals: Mapping[str, tuple[float, float]]
    confidence: float
    n_points: int
    with_offset: bool
    rms_log_residual: float  # root mean square of log y - log(prediction)

    def predict(self, x: Any) -> Any:
        arr = _positive("x", np.atleast_1d(x))
        out = self.offset + self.coefficient * arr**self.exponent
        return float(out[0]) if np.ndim(x) == 0 else out


def fit_power_law(x: Sequence[float], y: Sequence[float], offset: bool = False, confidence: float = 0.95) -> PowerLaw:
    """Fit ``y = coefficient * x**exponent`` (``offset=False``) or ``y = offset + coefficient * x**exponent``
    (``offset=True``, the offset in ``[0, min(y))``) by least squares on ``log y``.

    Without an offset this is a straight line on log-log axes, with Student-t intervals on the slope and
    the intercept (Wasserman, *All of Statistics*, 2004, ch. 13). With one, the three parameters are fitted
    by nonlinear least squares (scipy's trust-region ``least_squares``, from several starting offsets) and
    the intervals come from the Jacobian at the optimum (the usual linearised covariance, ``s² (JᵀJ)⁻¹``).
    Needs at least as many points as parameters (2 or 3) and at least two different ``x``.
    """
    xs, ys = _positive("x", x), _positive("y", y)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have the same length, got {xs.size} and {ys.size}")
    if not isinstance(offset, bool):
        raise TypeError(f"offset must be True or False, got {offset!r}")
    conf = _check_confidence(confidence)
    p = 3 if offset else 2
    if xs.size < p:
        raise ValueError(f"a power law {'with' if offset else 'without'} an offset has {p} parameters; "
                         f"it needs at least {p} points, got {xs.size}")  # fmt: skip
    if np.unique(xs).size < 2:
        raise ValueError("x must hold at least two different values")
    lx, ly = np.log(xs), np.log(ys)
    dof = xs.size - p
    t = float(stats.t.ppf(0.5 + conf / 2, dof)) if dof > 0 else math.nan
    if not offset:
        slope, intercept = np.polyfit(lx, ly, 1)
        resid = ly - (intercept + slope * lx)
        s2 = float(resid @ resid) / dof if dof > 0 else math.nan
        sxx = float(((lx - lx.mean()) ** 2).sum())
        se_slope = math.sqrt(s2 / sxx)
        se_intercept = math.sqrt(s2 * (1 / xs.size + lx.mean() ** 2 / sxx))
        intervals = {
            "exponent": (slope - t * se_slope, slope + t * se_slope),
            "coefficient": (math.exp(intercept - t * se_intercept), math.exp(intercept + t * se_intercept)),
            "offset": (0.0, 0.0),
        }
        rms = math.sqrt(float(resid @ resid) / xs.size)
        return PowerLaw(math.exp(intercept), float(slope), 0.0, intervals, conf, int(xs.size), False, rms)

    # theta = (log coefficient, exponent, offset); log y = log(offset + exp(log c) x**k)
    def residuals(theta: np.ndarray) -> np.ndarray:
        return np.log(theta[2] + np.exp(theta[0] + theta[1] * lx)) - ly

    base = fit_power_law(xs, ys, offset=False) if xs.size >= 3 else None
    y_min = float(ys.min())
    best = None
    for share in (0.0, 0.25, 0.5, 0.75, 0.9, 0.99):
        E0 = share * y_min
        # start: the straight-line fit of log(y - E0)
        slope, intercept = np.polyfit(lx, np.log(ys - E0), 1)
        if base is not None and share == 0.0:
            slope, intercept = base.exponent, math.log(base.coefficient)
        res = optimize.least_squares(
            residuals,
            x0=np.array([intercept, slope, E0]),
            bounds=([-np.inf, -np.inf, 0.0], [np.inf, np.inf, y_min * (1 - 1e-9)]),
            x_scale="jac",
            xtol=1e-14,
            ftol=1e-14,
            gtol=1e-14,
            max_nfev=5000,
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    log_c, k, E = (float(v) for v in best.x)
    resid = best.fun
    J = best.jac
    s2 = float(resid @ resid) / dof if dof > 0 else math.nan
    try:
        cov = np.linalg.inv(J.T @ J) * s2
        se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    except np.linalg.LinAlgError:
        se = np.full(3, math.nan)
    intervals = {
        "coefficient": (math.exp(log_c - t * se[0]), math.exp(log_c + t * se[0])),
        "exponent": (k - t * se[1], k + t * se[1]),
        "offset": (E - t * se[2], E + t * se[2]),
    }
    rms = math.sqrt(float(resid @ resid) / xs.size)
    return PowerLaw(math.exp(log_c), k, E, intervals, conf, int(xs.size), True, rms)


# ---------------------------------------------------------------------------------------------- Chinchilla
def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss of residuals ``r`` and its derivative (Huber 1964)."""
    clipped = np.clip(r, -delta, delta)  # the derivative
    return clipped * (r - 0.5 * clipped), clipped


def _objective(theta: np.ndarray, logN: np.ndarray, logD: np.ndarray, logL: np.ndarray, delta: float):
    """Sum of Huber(LSE(a - alpha log N, b - beta log D, e) - log L) / delta, and its gradient.

    theta = (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e). Dividing by delta keeps the
    objective's scale near that of the residuals, so that L-BFGS does not stop early on a tiny gradient
    (Besiroglu et al. 2024 trace Hoffmann et al.'s estimates to such an early stop).
    """
    a, b, e, alpha, beta = theta
    t1, t2 = a - alpha * logN, b - beta * logD  # (n,) each; the third term is e
    m = np.maximum(np.maximum(t1, t2), e)
    x1, x2, x3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    total = x1 + x2 + x3
    value, dr = _huber(m + np.log(total) - logL, delta)  # the prediction is LSE(t1, t2, e)
    w1, w2, w3 = x1 / total * dr, x2 / total * dr, x3 / total * dr  # d objective / d term
    grad = np.array([w1.sum(), w2.sum(), w3.sum(), -(w1 @ logN), -(w2 @ logD)])
    return float(value.sum()) / delta, grad / delta


def _grid() -> np.ndarray:
    g = CHINCHILLA_GRID
    mesh = np.meshgrid(g["a"], g["b"], g["e"], g["alpha"], g["beta"], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)  # (starts, 5) as (a, b, e, alpha, beta)


def _grid_objective(grid: np.ndarray, logN: np.ndarray, logD: np.ndarray, logL: np.ndarray, delta: float) -> np.ndarray:
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))
    terms = np.stack([a - alpha * logN, b - beta * logD, np.broadcast_to(e, (len(grid), logN.size))])
    value, _ = _huber(logsumexp(terms, axis=0) - logL, delta)
    return value.sum(axis=1)


def _minimise(starts: np.ndarray, logN: np.ndarray, logD: np.ndarray, logL: np.ndarray, delta: float):
    best_value, best_theta = math.inf, None
    for x0 in starts:
        res = optimize.minimize(
            _objective,
            x0,
            args=(logN, logD, logL, delta),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-11},
        )
        if res.fun < best_value:
            best_value, best_theta = float(res.fun), res.x
    return best_value, best_theta


def _law(theta: np.ndarray) -> dict[str, float]:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}


def fit_chinchilla(
    N: Sequence[float],
    D: Sequence[float],
    loss: Sequence[float],
    *,
    params: str = "total",
    delta: float = HUBER_DELTA,
    starts: int = 16,
    bootstrap: int = 100,
    confidence: float = 0.95,
    seed: int = 0,
    name: str = "fit",
) -> ChinchillaLaw:
    """Fit ``L = E + A/N**alpha + B/D**beta`` to runs of ``N`` parameters (counted as ``params`` says),
    ``D`` training tokens and final ``loss`` (nats per token).

    The method of Hoffmann et al. (2022, approach 3, section 3.3) as replicated by
    Besiroglu et al. (2024): minimise ``sum Huber_delta(LSE(a - alpha log N, b - beta log D, e) - log L)``
    over ``(a, b, e, alpha, beta)`` with L-BFGS, ``A, B, E = exp(a), exp(b), exp(e)``. The objective is
    evaluated at every point of :data:`CHINCHILLA_GRID` (4,500 starts) and L-BFGS runs from the ``starts``
    best of them; the lowest optimum wins. Intervals: percentiles of ``bootstrap`` refits on runs drawn
    with replacement (seeded by ``seed``; each refit starts from the fit to all runs), for E, A, B, alpha,
    beta and the optimal exponents a and b.
    Needs at least 5 runs, with at least two values of N and of D.
    """
    n, d, L = _positive("N", N), _positive("D", D), _positive("loss", loss)
    if not (n.size == d.size == L.size):
        raise ValueError(f"N, D and loss must have the same length, got {n.size}, {d.size} and {L.size}")
    if n.size < 5:
        raise ValueError(f"the Chinchilla form has 5 parameters; it needs at least 5 runs, got {n.size}")
    if np.unique(n).size < 2 or np.unique(d).size < 2:
        raise ValueError("the runs must hold at least two different N and two different D")
    if params not in ("total", "non-embedding"):
        raise ValueError(f"params must be 'total' or 'non-embedding', got {params!r}")
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not delta > 0:
        raise ValueError(f"delta must be a number > 0, got {delta!r}")
    check_int("starts", starts, 1)
    check_int("bootstrap", bootstrap, 0)
    conf = _check_confidence(confidence)
    check_int("seed", seed, 0)
    logN, logD, logL = np.log(n), np.log(d), np.log(L)
    grid = _grid()
    order = np.argsort(_grid_objective(grid, logN, logD, logL, delta), kind="stable")
    value, theta = _minimise(grid[order[:starts]], logN, logD, logL, delta)
    intervals: dict[str, tuple[float, float]] = {}
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(bootstrap):
            idx = rng.integers(0, n.size, n.size)
            if np.unique(n[idx]).size < 2 or np.unique(d[idx]).size < 2:
                continue
            # from the full fit's optimum: a resample's optimum lies near it
            _, th = _minimise(theta[None], logN[idx], logD[idx], logL[idx], delta)
            law = _law(th)
            law["a"] = law["beta"] / (law["alpha"] + law["beta"])
            law["b"] = law["alpha"] / (law["alpha"] + law["beta"])
            draws.append(law)
        lo, hi = 50 * (1 - conf), 50 * (1 + conf)
        for key in ("E", "A", "B", "alpha", "beta", "a", "b"):
            vals = np.array([dr[key] for dr in draws])
            intervals[key] = (float(np.percentile(vals, lo)), float(np.percentile(vals, hi)))
    fitted = _law(theta)
    if fitted["alpha"] <= 0 or fitted["beta"] <= 0:
        raise ValueError(
            f"the fit found no falling law in N and D (alpha = {fitted['alpha']:.3g}, beta = {fitted['beta']:.3g}): "
            "the runs must span enough N and D for the loss to fall with both"
        )
    note = f"Huber delta {delta}, {starts} starts, {bootstrap} bootstrap refits"
    return ChinchillaLaw(
        **fitted, name=name, params=params, intervals=intervals, n_points=int(n.size), objective=value, note=note
    )


# ---------------------------------------------------------------------------------------------- IsoFLOP
@dataclass(frozen=True)
class IsoflopPoint:
    """The best model size at one compute budget."""

    budget: float  # training FLOPs
    n_opt: float  # parameters at the lowest loss
    d_opt: float  # tokens at that size, on the budget
    loss_opt: float  # the lowest loss (the parabola's vertex, or the best run)
    runs: int  # runs at this budget
    from_parabola: bool  # False: the best run itself (fewer than 3 sizes, or the vertex outside them)


@dataclass(frozen=True)
class IsoflopResult:
    points: list[IsoflopPoint]
    n_fit: PowerLaw  # N_opt = coefficient * C**exponent
    d_fit: PowerLaw  # D_opt = coefficient * C**exponent


def _field(run: Any, name: str) -> float:
    value = run.get(name) if isinstance(run, Mapping) else getattr(run, name, None)
    if value is None:
        raise ValueError(f"every run needs a {name!r} value (a mapping key or an attribute)")
    return float(value)


def isoflop(
    runs: Sequence[Any], *, params: str = "n_params", budget: str = "budget", confidence: float = 0.95
) -> IsoflopResult:
    """IsoFLOP analysis (Hoffmann et al. 2022, approach 2) of runs given as mappings or objects with a
    ``budget`` (training FLOPs), a parameter count (the field named by ``params``), ``tokens`` and ``loss``.

    For each budget with at least 3 sizes, a parabola in ``log N`` is fitted to the losses and its vertex
    is the optimal size (``D_opt`` from a line through ``log D`` against ``log N`` at that budget);
    otherwise, or when the vertex falls outside the sizes run, the best run is taken. Then
    ``N_opt ∝ C**a`` and ``D_opt ∝ C**b`` are fitted with :func:`fit_power_law`. Needs 2 budgets or more.
    """
    if isinstance(runs, str | bytes) or not isinstance(runs, Sequence) or not runs:
        raise ValueError("runs must be a non-empty sequence of runs")
    groups: dict[float, list[tuple[float, float, float]]] = {}
    for run in runs:
        c, N, D, L = (_field(run, k) for k in (budget, params, "tokens", "loss"))
        if not all(math.isfinite(v) and v > 0 for v in (c, N, D, L)):
            raise ValueError(f"budget, {params}, tokens and loss must be finite and > 0, got {(c, N, D, L)}")
        groups.setdefault(c, []).append((N, D, L))
    if len(groups) < 2:
        raise ValueError(f"an IsoFLOP fit needs runs at 2 budgets or more, got {len(groups)}")
    points = []
    for c in sorted(groups):
        rows = sorted(groups[c])
        lN = np.log([r[0] for r in rows])
        lD = np.log([r[1] for r in rows])
        L = np.array([r[2] for r in rows])
        best = int(np.argmin(L))
        n_opt, d_opt, l_opt, parabola = rows[best][0], rows[best][1], float(L[best]), False
        if np.unique(lN).size >= 3:
            q2, q1, q0 = np.polyfit(lN, L, 2)
            if q2 > 0:
                vertex = -q1 / (2 * q2)
                if lN.min() <= vertex <= lN.max():
                    slope, intercept = np.polyfit(lN, lD, 1)
                    n_opt, d_opt = math.exp(vertex), math.exp(intercept + slope * vertex)
                    l_opt, parabola = float(q0 + q1 * vertex + q2 * vertex**2), True
        points.append(IsoflopPoint(c, n_opt, d_opt, l_opt, len(rows), parabola))
    C = [p.budget for p in points]
    return IsoflopResult(
        points,
        fit_power_law(C, [p.n_opt for p in points], confidence=confidence),
        fit_power_law(C, [p.d_opt for p in points], confidence=confidence),
    )
