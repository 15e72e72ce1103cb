"""lmlab.jupyterenv and `lmlab info`: what the JupyterLab that opens the course has installed."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.jupyterenv import (
    NBGRADER_EXTENSION,
    VALIDATE_PLUGIN,
    VALIDATE_SERVER_EXTENSION,
    WIDGETS_EXTENSION,
    JupyterCheck,
    check_jupyter,
    find_jupyter_lab,
)

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(sys.executable).parent  # the test environment has the course extra: JupyterLab, ipywidgets, nbgrader

pytestmark = pytest.mark.skipif(not (HERE / "jupyter-lab").exists(), reason="needs lmlab[course] in this Python")


@functools.cache
def real_listing(*command: str) -> str:
    out = subprocess.run([str(HERE / command[0]), *command[1:]], capture_output=True, text=True, check=True)
    return out.stdout + out.stderr


def fake_environment(folder: Path, labextensions: str, server: str, status: int = 0) -> Path:
    """A bin folder whose jupyter commands print the given listings (with `status` as their exit code)."""
    folder.mkdir()
    for name, text in (("jupyter-labextension", labextensions), ("jupyter-server", server), ("jupyter-lab", "")):
        (folder / f"{name}.txt").write_text(text)
        script = folder / name
        script.write_text(f"#!/bin/sh\ncat '{folder / name}.txt'\nexit {status}\n")
        script.chmod(0o755)
    return folder / "jupyter-lab"


def test_this_environment_has_the_widgets_front_end_and_the_validate_button():
    check = check_jupyter(HERE / "jupyter-lab")
    assert check.error == "" and check.same_environment and find_jupyter_lab() == HERE / "jupyter-lab"
    # the version jupyterlab_widgets installed into this environment's share/, read directly
    package = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / WIDGETS_EXTENSION / "package.json"
    front_end = json.loads(package.read_text())
    assert check.lab_extensions[WIDGETS_EXTENSION].version == front_end["version"]
    assert check.widgets and check.validate_button and check.advice() == []


def test_missing_widgets_front_end_and_disabled_validate_button_are_reported(tmp_path):
    listing = real_listing("jupyter-labextension", "list")
    assert WIDGETS_EXTENSION in listing and NBGRADER_EXTENSION in listing
    without_widgets = "\n".join(line for line in listing.splitlines() if WIDGETS_EXTENSION not in line)
    without_widgets = without_widgets.split("Disabled extensions:")[0]
    without_widgets += f"\nDisabled extensions:\n    {VALIDATE_PLUGIN}\n"
    lab = fake_environment(tmp_path / "bin", without_widgets, real_listing("jupyter-server", "extension", "list"))
    check = check_jupyter(lab)
    assert check.error == "" and NBGRADER_EXTENSION in check.lab_extensions
    assert not check.widgets and not check.validate_button and not check.same_environment
    advice = check.advice()
    assert any("jupyterlab_widgets" in line and "Error displaying widget" in line for line in advice), advice
    assert any(f"jupyter labextension enable {VALIDATE_PLUGIN}" in line for line in advice), advice
    assert any("another environment" in line for line in advice), advice


def test_missing_server_extension_means_no_validate_button(tmp_path):
    server = "\n".join(line for line in real_listing("jupyter-server", "extension", "list").splitlines()
                       if "validate_assignment" not in line)
    lab = fake_environment(tmp_path / "bin", real_listing("jupyter-labextension", "list"), server)
    check = check_jupyter(lab)
    assert check.widgets and VALIDATE_SERVER_EXTENSION not in check.server_extensions
    assert not check.validate_button
    assert any("nbgrader>=0.9.6" in line for line in check.advice())


def test_a_broken_jupyter_is_reported_not_raised(tmp_path):
    lab = fake_environment(tmp_path / "bin", "Traceback: ModuleNotFoundError: jupyterlab\n", "", status=1)
    check = check_jupyter(lab)
    assert "exited with 1" in check.error and not check.widgets
    assert "could not list its extensions" in check.advice()[0]


def test_no_jupyter_lab_says_what_to_install(tmp_path):
    assert "pip install 'lmlab[course]'" in JupyterCheck(None).advice()[0]
    with pytest.raises(ValueError, match="no such jupyter-lab"):
        check_jupyter(tmp_path / "jupyter-lab")


def test_info_prints_the_check_and_where_to_start(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"{WIDGETS_EXTENSION}: " in out and "enabled" in out
    assert "Validate button will work" in out
    start = out.split("start with ", 1)[1].split(" ", 1)[0]
    assert start == "notebooks/01_objective/01a_likelihood.ipynb" and (ROOT / start).is_file()

    listing = "\n".join(line for line in real_listing("jupyter-labextension", "list").splitlines()
                        if WIDGETS_EXTENSION not in line)
    lab = fake_environment(tmp_path / "bin", listing, real_listing("jupyter-server", "extension", "list"))
    monkeypatch.chdir(tmp_path)
    assert main(["info", "--jupyter-lab", str(lab)]) == 0
    out = capsys.readouterr().out
    assert f"{WIDGETS_EXTENSION}: not installed" in out and "to fix: widgets will show" in out
    assert "start with" not in out  # not a checkout of the course
