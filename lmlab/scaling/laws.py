"""Scaling laws as objects: the parametric form of Hoffmann et al. (2022), Kaplan et al.'s (2020) laws, and the
published values of each, usable wherever a fitted law is.

Every law answers the same two questions: ``loss(N, D)``, the predicted loss (nats per token) of ``N``
parameters trained on ``D`` tokens, and ``compute_optimal(C)``, the ``(N, D)`` that minimise it for a
budget of ``C`` training FLOPs (``C = 6 N D``). ``params`` says which ``N`` a law counts:
``"non-embedding"`` (Kaplan et al.) or ``"total"`` (Hoffmann et al.); compare a law only with fits on
the same count. The published losses were measured on other data with other tokenizers (WebText2,
MassiveText), so their ``E`` and their loss levels do not carry over to a small character-level model;
their exponents are what can be compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PF_DAY",
    "ChinchillaLaw",
    "KaplanLaw",
    "PUBLISHED",
    "compute_optimal",
]

PF_DAY = 1e15 * 86_400  # FLOPs in a petaflop/s-day, Kaplan et al.'s unit of compute (8.64e19)
_PARAMS = ("total", "non-embedding")


def _positive_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(value).__name__}") from None
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return arr


def _out(arr: np.ndarray) -> Any:
    return float(arr) if arr.ndim == 0 else arr


@dataclass(frozen=True)
class ChinchillaLaw:
    """``L(N, D) = E + A / N**alpha + B / D**beta`` (Hoffmann et al. 2022, eq. 2): ``E`` the loss no model
    size or data removes, the other two terms what a finite model and finite data add.

    A fit (:func:`lmlab.scaling.fit_chinchilla`) also carries ``intervals`` ({name: (low, high)}, from the
    bootstrap), the number of points and the value of its objective.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = "fit"
    citation: str = ""
    params: str = "total"  # which N: "total" or "non-embedding"
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    n_points: int | None = None
    objective: float | None = None  # the Huber objective at the fit (None for a published law)
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("E", "A", "B", "alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"ChinchillaLaw.{name} must be a finite number, got {value!r}")
        if self.E < 0 or self.A <= 0 or self.B <= 0 or self.alpha <= 0 or self.beta <= 0:
            raise ValueError(
                f"ChinchillaLaw needs E >= 0 and A, B, alpha, beta > 0, got E={self.E}, A={self.A}, B={self.B}, "
                f"alpha={self.alpha}, beta={self.beta}"
            )
        if self.params not in _PARAMS:
            raise ValueError(f"params must be one of {_PARAMS}, got {self.params!r}")

    def loss(self, N: Any, D: Any) -> Any:
        """Predicted loss of ``N`` parameters trained on ``D`` tokens (numbers or arrays that broadcast)."""
        n, d = _positive_array("N", N), _positive_array("D", D)
        return _out(self.E + self.A / n**self.alpha + self.B / d**self.beta)

    @property
    def a(self) -> float:
        """The exponent of ``N_opt ∝ C**a``: ``beta / (alpha + beta)``."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """The exponent of ``D_opt ∝ C**b``: ``alpha / (alpha + beta)``."""
        return self.alpha / (self.alpha + self.beta)

    def compute_optimal(self, C: Any) -> tuple[Any, Any]:
        """``(N_opt, D_opt)`` minimising ``loss(N, D)`` subject to ``6 N D = C`` (Hoffmann et al. 2022,
        eq. 4): ``G = (alpha A / (beta B))**(1 / (alpha + beta))``, ``N_opt = G (C/6)**a``,
        ``D_opt = (C/6)**b / G``."""
        c = _positive_array("C", C) / 6.0
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        return _out(G * c**self.a), _out(c**self.b / G)

    def optimal_loss(self, C: Any) -> Any:
        """The loss at the compute-optimal allocation of ``C`` FLOPs."""
        n, d = self.compute_optimal(C)
        return self.loss(n, d)


@dataclass(frozen=True)
class KaplanLaw:
    """Kaplan et al. (2020): power laws in non-embedding parameters, tokens and compute, with no
    irreducible term.

    ``loss(N, D) = ((N_c / N)**(alpha_N / alpha_D) + D_c / D)**alpha_D`` (their eq. 1.5);
    ``loss_of_compute(C) = (C_c / C)**alpha_C`` along the compute-efficient frontier (eq. 1.3, C_min);
    ``N_opt = n_opt_coefficient (C / PF-day)**n_opt_exponent`` (their eq. 1.7 and fig. 14).
    """

    alpha_N: float = 0.076
    N_c: float = 8.8e13  # non-embedding parameters
    alpha_D: float = 0.095
    D_c: float = 5.4e13  # tokens
    alpha_C: float = 0.050
    C_c: float = 3.1e8 * PF_DAY  # FLOPs
    n_opt_coefficient: float = 1.3e9  # parameters at one PF-day
    n_opt_exponent: float = 0.73
    name: str = "Kaplan et al. 2020"
    citation: str = (
        "Kaplan, J., McCandlish, S., Henighan, T., et al. (2020). Scaling Laws for Neural Language Models. "
        "arXiv:2001.08361."
    )
    params: str = "non-embedding"
    note: str = "WebText2, GPT-2 byte-pair tokens (vocabulary 50,257); loss in nats per token; no offset E"

    def loss(self, N: Any, D: Any) -> Any:
        """Predicted loss of ``N`` non-embedding parameters trained on ``D`` tokens (their eq. 1.5)."""
        n, d = _positive_array("N", N), _positive_array("D", D)
        return _out(((self.N_c / n) ** (self.alpha_N / self.alpha_D) + self.D_c / d) ** self.alpha_D)

    def loss_of_compute(self, C: Any) -> Any:
        """The loss reachable with ``C`` FLOPs on the compute-efficient frontier (their eq. 1.3)."""
        return _out((self.C_c / _positive_array("C", C)) ** self.alpha_C)

    @property
    def a(self) -> float:
        """The exponent of ``N_opt ∝ C**a`` (0.73)."""
        return self.n_opt_exponent

    @property
    def b(self) -> float:
        """The exponent of ``D_opt ∝ C**b`` implied by ``C = 6 N D``: ``1 - a``."""
        return 1.0 - self.n_opt_exponent

    def compute_optimal(self, C: Any) -> tuple[Any, Any]:
        """``(N_opt, D_opt)``: ``N_opt`` from their fit to the compute-efficient frontier, ``D_opt = C / (6 N_opt)``."""
        c = _positive_array("C", C)
        n = self.n_opt_coefficient * (c / PF_DAY) ** self.n_opt_exponent
        return _out(n), _out(c / (6.0 * n))

    def optimal_loss(self, C: Any) -> Any:
        """The loss at the compute-optimal allocation of ``C`` FLOPs, from ``loss(N_opt, D_opt)``."""
        n, d = self.compute_optimal(C)
        return self.loss(n, d)


PUBLISHED: dict[str, ChinchillaLaw | KaplanLaw] = {
    "kaplan2020": KaplanLaw(),
    "hoffmann2022": ChinchillaLaw(
        E=1.69,
        A=406.4,
        B=410.7,
        alpha=0.34,
        beta=0.28,
        name="Hoffmann et al. 2022 (Chinchilla), approach 3",
        citation=(
            "Hoffmann, J., Borgeaud, S., Mensch, A., et al. (2022). Training Compute-Optimal Large Language "
            "Models. NeurIPS 2022 (arXiv:2203.15556), section 3.3."
        ),
        params="total",
        note="MassiveText, SentencePiece tokens; loss in nats per token; models of 70M to 16B parameters",
    ),
    "besiroglu2024": ChinchillaLaw(
        E=1.8172,
        A=482.01,
        B=2085.43,
        alpha=0.3478,
        beta=0.3658,
        name="Besiroglu et al. 2024, replication of approach 3",
        citation=(
            "Besiroglu, T., Erdil, E., Barnett, M., & You, J. (2024). Chinchilla Scaling: A replication attempt. "
            "arXiv:2404.10102."
        ),
        params="total",
        note="refitted on Hoffmann et al.'s points read from their figure; the optimal exponents come out near 0.5",
    ),
}


def compute_optimal(C: Any, fit: ChinchillaLaw | KaplanLaw) -> tuple[Any, Any]:
    """``(N_opt, D_opt)`` for a budget of ``C`` training FLOPs under ``fit``, a fitted or published law
    (:meth:`ChinchillaLaw.compute_optimal`: Hoffmann et al. 2022, eq. 4)."""
    if not isinstance(fit, ChinchillaLaw | KaplanLaw):
        raise TypeError(
            f"fit must be a ChinchillaLaw or KaplanLaw (e.g. from fit_chinchilla), got {type(fit).__name__}"
        )
    return fit.compute_optimal(C)
