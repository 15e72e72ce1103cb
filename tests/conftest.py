"""Shared test settings: CPU, deterministic, few threads."""

import pytest
import torch
from _browser_support import BROWSER_SELECTED

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items) -> None:
    """Each lesson's pipeline tests share module fixtures (a released course, a graded class): under
    pytest-xdist with --dist loadgroup they go to one process, so those fixtures are built once. Runs
    before xdist's own hook, which reads the xdist_group marks."""
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is not None and "tree" in spec.params:
            item.add_marker(pytest.mark.xdist_group(f"lesson-{spec.params['tree']}"))


class _BrowserSelection:
    """Records whether this run selected the browser tests (after -m/-k deselection), in
    ``config.stash[BROWSER_SELECTED]``: they run every student notebook in normal mode in JupyterLab, so
    the normal-mode nbval run then covers the source notebooks only."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items) -> None:
        config.stash[BROWSER_SELECTED] = any(item.get_closest_marker("browser") for item in items)


def pytest_configure(config) -> None:
    config.pluginmanager.register(_BrowserSelection(), "lmlab-browser-selection")
