"""A pytest plugin for the nbval runs of the course tests: wait longer for a cell's last messages.

nbval reads a cell's outputs from the kernel after the cell has finished and gives up when no message
arrives for 5 seconds (``IPyNbCell.output_timeout``, fixed in nbval). A training cell with a live loss
plot sends a few dozen display updates; on a busy two-core machine their delivery can pause longer than
that, which fails a cell that ran correctly. This raises the wait; it changes no execution time limit
(``--nbval-cell-timeout`` still bounds each cell).
"""

OUTPUT_TIMEOUT_S = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = OUTPUT_TIMEOUT_S
