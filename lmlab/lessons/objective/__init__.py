"""Lesson 01, "The training objective": its experiments, figures and widgets, in one namespace.

``from lmlab.lessons import objective as ob``, then ``ob.train_bigram(...)``, ``ob.plot_lr_sweep(...)``,
``ob.lr_explorer(...)``.
"""

from lmlab.lessons.objective.experiments import *  # noqa: F403
from lmlab.lessons.objective.experiments import __all__ as _experiments
from lmlab.lessons.objective.plots import *  # noqa: F403
from lmlab.lessons.objective.plots import __all__ as _plots
from lmlab.lessons.objective.widgets import *  # noqa: F403
from lmlab.lessons.objective.widgets import __all__ as _widgets

__all__ = [*_experiments, *_plots, *_widgets]
