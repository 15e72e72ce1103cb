"""Grading mode: lessons run shorter when nbgrader executes them.

nbgrader 0.9 sets the environment variable ``NBGRADER_EXECUTION`` while it runs a notebook's kernel:
``"autograde"`` during ``nbgrader autograde`` and ``"validate"`` during ``nbgrader validate`` and the
Validate button of nbgrader's JupyterLab extension (``nbgrader/converters/autograde.py``,
``nbgrader/validator.py``). It is unset otherwise, also in ``generate_assignment``, which runs no code.

A lesson asks ``grading_mode()`` to shrink what only takes time, never what its tests check::

    from lmlab.grading import grading_mode
    steps = 30 if grading_mode() else 600

To try a notebook in grading mode yourself, start Jupyter with ``NBGRADER_EXECUTION=autograde``.
"""

from __future__ import annotations

import os

__all__ = ["grading_mode"]


def grading_mode() -> bool:
    """True while nbgrader executes the notebook (autograde or validate), False when a person runs it."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))
