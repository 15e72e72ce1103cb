"""Lesson 03, "Long sequences": its experiments, figures and widgets, in one namespace.

``from lmlab.lessons import long_context as lc``, then ``lc.flops_rows(...)``, ``lc.plot_sweep(...)``,
``lc.context_cost_explorer()``. One import block per submodule: 03a's cost of attention (``cost``,
``widgets``); 03b's alternatives and what they remember (``memory``).
"""

from lmlab.lessons.long_context.cost import *  # noqa: F403
from lmlab.lessons.long_context.cost import __all__ as _cost
from lmlab.lessons.long_context.memory import *  # noqa: F403
from lmlab.lessons.long_context.memory import __all__ as _memory
from lmlab.lessons.long_context.widgets import *  # noqa: F403
from lmlab.lessons.long_context.widgets import __all__ as _widgets

__all__ = [*_cost, *_widgets, *_memory]
