"""The widget face of lmlab: each lesson's widgets (in :mod:`lmlab.lessons`) are thin ipywidgets layers
over plain, tested functions, built with the helpers here.

Nothing waits for the front end: a widget draws once when it is built, and again when a control changes.
ipywidgets is a course extra, imported only when a widget is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["require_ipywidgets"]


def require_ipywidgets() -> Any:
    """The ``ipywidgets`` module, or an ImportError that says how to install it."""
    try:
        import ipywidgets
    except ImportError as err:
        raise ImportError(
            "lmlab's widgets need ipywidgets, which comes with the course extras: "
            "pip install ipywidgets (and run the notebook in JupyterLab or Jupyter Notebook)"
        ) from err
    return ipywidgets
