"""Lesson 02, "Decoding as a search process": its experiments, figures and widgets, in one namespace.

``from lmlab.lessons import decoding as dl``, then ``dl.beam_width_sweep(...)``, ``dl.plot_beam_sweep(...)``,
``dl.warp_explorer(...)``.
"""

from lmlab.lessons.decoding.experiments import *  # noqa: F403
from lmlab.lessons.decoding.experiments import __all__ as _experiments
from lmlab.lessons.decoding.plots import *  # noqa: F403
from lmlab.lessons.decoding.plots import __all__ as _plots
from lmlab.lessons.decoding.widgets import *  # noqa: F403
from lmlab.lessons.decoding.widgets import __all__ as _widgets

__all__ = [*_experiments, *_plots, *_widgets]
