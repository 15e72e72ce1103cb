"""What the JupyterLab that opens the course has installed: the widgets front end and nbgrader's extensions.

Widgets need two halves: `ipywidgets` in the kernel's environment and its JupyterLab front end
(`jupyterlab_widgets`, the lab extension `@jupyter-widgets/jupyterlab-manager`) in the environment that runs
`jupyter lab`. When the front end is missing, JupyterLab shows "Error displaying widget: model not found"
where each widget should be. nbgrader's Validate button needs its lab extension (`@jupyter/nbgrader`, the
plugin `@jupyter/nbgrader:validate-assignment`) and its server extension
(`nbgrader.server_extensions.validate_assignment`) in that same environment.

`check_jupyter()` finds that `jupyter-lab` (first beside this Python, then on PATH), asks its own
`jupyter-labextension list` and `jupyter-server extension list`, and says what is missing and how to add it.
`lmlab info` prints it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"
NBGRADER_EXTENSION = "@jupyter/nbgrader"
VALIDATE_PLUGIN = "@jupyter/nbgrader:validate-assignment"
VALIDATE_SERVER_EXTENSION = "nbgrader.server_extensions.validate_assignment"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LAB_LINE = re.compile(r"^\s+(\S+) v(\S+) (enabled|disabled)\s+(OK|X)?")
_SERVER_LINE = re.compile(r"^\s+(\S+) (enabled|disabled)\s*$")
_SERVER_OK = re.compile(r"^\s+(\S+)\s+\S*\s*(OK|X)\s*$")


@dataclass(frozen=True)
class LabExtension:
    """One line of `jupyter labextension list`."""

    name: str
    version: str
    enabled: bool
    ok: bool  # JupyterLab found its files and their dependencies


def parse_labextensions(text: str) -> tuple[dict[str, LabExtension], set[str]]:
    """The extensions `jupyter labextension list` printed, and its "Disabled extensions" (names or plugins)."""
    text = _ANSI.sub("", text)
    listed, _, disabled_part = text.partition("Disabled extensions:")
    found = {}
    for line in listed.splitlines():
        m = _LAB_LINE.match(line)
        if m:
            found[m[1]] = LabExtension(m[1], m[2], m[3] == "enabled", m[4] == "OK")
    disabled = set()
    for line in disabled_part.splitlines():
        if not line.startswith((" ", "\t")) and line.strip():
            break  # the section ends at the next unindented line
        name = line.strip().split(" ")[0]
        if name:
            disabled.add(name)
    return found, disabled


def parse_server_extensions(text: str) -> dict[str, bool]:
    """`jupyter server extension list`: extension -> enabled and validated OK."""
    text = _ANSI.sub("", text)
    enabled: dict[str, bool] = {}
    ok: set[str] = set()
    for line in text.splitlines():
        m = _SERVER_LINE.match(line)
        if m:
            enabled[m[1]] = m[2] == "enabled"
            continue
        m = _SERVER_OK.match(line)
        if m and m[2] == "OK":
            ok.add(m[1])
    return {name: on and name in ok for name, on in enabled.items()}


@dataclass
class JupyterCheck:
    """What the environment of one `jupyter-lab` has. `jupyter_lab` is None when none was found."""

    jupyter_lab: Path | None
    lab_extensions: dict[str, LabExtension] = field(default_factory=dict)
    disabled: set[str] = field(default_factory=set)
    server_extensions: dict[str, bool] = field(default_factory=dict)
    error: str = ""  # why the listing failed, if it did

    @property
    def python(self) -> Path | None:
        """The Python of that environment (its `bin/python`), if there is one."""
        if self.jupyter_lab is None:
            return None
        for name in ("python", "python3", "python.exe"):
            if (self.jupyter_lab.parent / name).exists():
                return self.jupyter_lab.parent / name
        return None

    @property
    def same_environment(self) -> bool:
        """Whether that `jupyter-lab` belongs to the environment of this Python (where lmlab is)."""
        return self.jupyter_lab is not None and self.jupyter_lab.parent == Path(sys.executable).parent

    def _usable(self, name: str) -> bool:
        ext = self.lab_extensions.get(name)
        return ext is not None and ext.enabled and ext.ok and name not in self.disabled

    @property
    def widgets(self) -> bool:
        return self._usable(WIDGETS_EXTENSION)

    @property
    def validate_button(self) -> bool:
        return (self._usable(NBGRADER_EXTENSION) and VALIDATE_PLUGIN not in self.disabled
                and self.server_extensions.get(VALIDATE_SERVER_EXTENSION, False))

    def advice(self) -> list[str]:
        """What to install, one line each; empty when the course's widgets and Validate button will work."""
        pip = f"{self.python} -m pip install" if self.python else "pip install"
        if self.jupyter_lab is None:
            return [f"no jupyter-lab found beside {sys.executable} or on PATH: "
                    f"{sys.executable} -m pip install 'lmlab[course]' (JupyterLab, ipywidgets, nbgrader)"]
        if self.error:
            return [f"{self.jupyter_lab} could not list its extensions ({self.error}): "
                    f"{pip} --force-reinstall jupyterlab"]
        out = []
        if not self.widgets:
            out.append(f"widgets will show 'Error displaying widget': {pip} 'jupyterlab_widgets>=3' "
                       f"(or 'ipywidgets>=8.1'), then restart jupyter lab")
        if not self.validate_button:
            if VALIDATE_PLUGIN in self.disabled or NBGRADER_EXTENSION in self.disabled:
                out.append(f"nbgrader's Validate button is disabled: jupyter labextension enable {VALIDATE_PLUGIN}")
            else:
                out.append(f"no nbgrader Validate button: {pip} 'nbgrader>=0.9.6,<0.10', then restart jupyter lab")
        if not self.same_environment:
            out.append(f"jupyter lab runs from another environment than this Python ({sys.executable}): its "
                       f"kernel must have lmlab, e.g. {sys.executable} -m ipykernel install --user --name lmlab")
        return out


def find_jupyter_lab(path: str | None = None) -> Path | None:
    """The `jupyter-lab` beside this Python, else the first on `path` (default: PATH)."""
    here = Path(sys.executable).parent / "jupyter-lab"
    if here.exists():
        return here
    found = shutil.which("jupyter-lab", path=path)
    return Path(found) if found else None


def _run(command: list[str], timeout: float) -> str:
    env = {**os.environ, "NO_COLOR": "1"}
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    if out.returncode:
        raise RuntimeError(f"{Path(command[0]).name} exited with {out.returncode}: "
                           f"{(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    return out.stdout + out.stderr  # both print part of their listing on stderr


def check_jupyter(jupyter_lab: Path | str | None = None, timeout: float = 60.0) -> JupyterCheck:
    """Ask the environment of `jupyter_lab` (default: `find_jupyter_lab()`) for its extensions."""
    lab = Path(jupyter_lab) if jupyter_lab is not None else find_jupyter_lab()
    if lab is None:
        return JupyterCheck(None)
    if not lab.exists():
        raise ValueError(f"no such jupyter-lab: {lab}")
    check = JupyterCheck(lab)
    try:
        check.lab_extensions, check.disabled = parse_labextensions(
            _run([str(lab.parent / "jupyter-labextension"), "list"], timeout))
        check.server_extensions = parse_server_extensions(
            _run([str(lab.parent / "jupyter-server"), "extension", "list"], timeout))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as err:
        check.error = str(err)
    return check
