"""Scaling laws: what a run costs, fitted laws, published laws, and sweeps of runs.

- :mod:`~lmlab.scaling.counting`: ``param_count``, ``training_flops`` (6ND), ``exact_training_flops``;
- :mod:`~lmlab.scaling.laws`: ``ChinchillaLaw``, ``KaplanLaw``, ``PUBLISHED``, ``compute_optimal``;
- :mod:`~lmlab.scaling.fits`: ``fit_power_law``, ``fit_chinchilla``, ``isoflop``;
- :mod:`~lmlab.scaling.sweep`: ``SweepConfig``, ``plan_sweep``, ``run_sweep``, ``load_sweep`` (resumable
  JSON-lines records, parallel workers).
"""

from lmlab.scaling.counting import *  # noqa: F403
from lmlab.scaling.counting import __all__ as _counting
from lmlab.scaling.fits import *  # noqa: F403
from lmlab.scaling.fits import __all__ as _fits
from lmlab.scaling.laws import *  # noqa: F403
from lmlab.scaling.laws import __all__ as _laws
from lmlab.scaling.sweep import *  # noqa: F403
from lmlab.scaling.sweep import __all__ as _sweep

__all__ = [*_counting, *_laws, *_fits, *_sweep]
