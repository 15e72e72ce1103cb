"""Lesson 05, "Predicting several tokens at once": its experiments, figures and widget, in one namespace.

``from lmlab.lessons import multitoken as mtl``, then ``mtl.equal_compute_runs(...)``,
``mtl.load_pathstar_results()``, ``mtl.speculative_runs(...)``, ``mtl.draft_explorer(...)``.
"""

from lmlab.lessons.multitoken.experiments import *  # noqa: F403
from lmlab.lessons.multitoken.experiments import __all__ as _experiments
from lmlab.lessons.multitoken.plots import *  # noqa: F403
from lmlab.lessons.multitoken.plots import __all__ as _plots
from lmlab.lessons.multitoken.widgets import *  # noqa: F403
from lmlab.lessons.multitoken.widgets import __all__ as _widgets

__all__ = [*_experiments, *_plots, *_widgets]
