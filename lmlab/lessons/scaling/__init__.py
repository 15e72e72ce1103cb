"""Lesson 04, "Scaling": its grids, experiments, figures and widget, in one namespace.

``from lmlab.lessons import scaling as sc``, then ``sc.load_grid("markov")``, ``sc.run_live_grid(...)``,
``sc.fit_grid(...)``, ``sc.plot_grid(...)``, ``sc.budget_explorer(...)``. The committed grids and the
command that remakes them are in :mod:`lmlab.lessons.scaling.grids`.
"""

from lmlab.lessons.scaling.experiments import *  # noqa: F403
from lmlab.lessons.scaling.experiments import __all__ as _experiments
from lmlab.lessons.scaling.grids import GRID_PATHS, GRIDS, load_grid
from lmlab.lessons.scaling.plots import *  # noqa: F403
from lmlab.lessons.scaling.plots import __all__ as _plots
from lmlab.lessons.scaling.widgets import *  # noqa: F403
from lmlab.lessons.scaling.widgets import __all__ as _widgets

__all__ = [*_experiments, "GRIDS", "GRID_PATHS", "load_grid", *_plots, *_widgets]
