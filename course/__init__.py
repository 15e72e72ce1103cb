"""Course tooling: thin wrappers around nbgrader, the concept-question renderer and the lesson benchmark.

Run `python -m course --help` from the repository root. nbgrader itself is configured in
`course/nbgrader_config.py`; every nbgrader command runs in this folder so that nbgrader finds it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRADING = Path("course") / "grading"  # relative to the root: gradebook, submissions, feedback (git-ignored)


def lessons(root: Path = ROOT) -> list[str]:
    """Names of the lesson folders in `root/assessments` (each holds at least one notebook), sorted."""
    source = Path(root) / "assessments"
    if not source.is_dir():
        return []
    return sorted(
        d.name for d in source.iterdir() if d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.ipynb"))
    )


def lesson_notebooks(lesson: str, root: Path = ROOT, folder: str = "assessments") -> list[Path]:
    """The notebooks of a lesson, in `assessments/` (sources) or `notebooks/` (student versions)."""
    return sorted((Path(root) / folder / lesson).glob("*.ipynb"))


def nbgrader(args: list[str], root: Path = ROOT, **run_kwargs) -> subprocess.CompletedProcess:
    """Run `nbgrader ARGS` with this interpreter in `root/course`, where nbgrader reads nbgrader_config.py.

    `run_kwargs` go to `subprocess.run` (e.g. `env`, `capture_output=True`, `check=True`).
    """
    root = Path(root)
    (root / GRADING).mkdir(parents=True, exist_ok=True)  # sqlite does not create the gradebook's folder
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root / "course", **run_kwargs)


PLACEHOLDER_OWNERS = {"owner", "user", "username", "your-name", "yourname", "org", "example"}


def repository_url(root: Path = ROOT) -> str:
    """The course's GitHub repository, from `[project.urls] Repository` in pyproject.toml.

    A ValueError when it is missing, not `https://github.com/OWNER/NAME`, or a placeholder such as OWNER.
    """
    urls = tomllib.loads((Path(root) / "pyproject.toml").read_text())["project"].get("urls", {})
    url = urls.get("Repository", "")
    match = re.fullmatch(r"https://github\.com/([A-Za-z0-9-]+)/([A-Za-z0-9._-]+?)/?", url)
    if not match:
        raise ValueError(f"pyproject.toml [project.urls] Repository must read https://github.com/OWNER/NAME, "
                         f"got {url!r}")
    if match[1].lower() in PLACEHOLDER_OWNERS or "example" in url.lower():
        raise ValueError(f"pyproject.toml [project.urls] Repository is a placeholder ({url}): put the real one")
    return url.rstrip("/")


def binder_url(notebook: str, root: Path = ROOT) -> str:
    """The mybinder.org link that opens `notebook` (relative to the repository root) in JupyterLab."""
    if not notebook.endswith(".ipynb") or notebook.startswith("/") or ".." in Path(notebook).parts:
        raise ValueError(f"binder_url needs a notebook path inside the repository, like "
                         f"notebooks/01_objective/01a_likelihood.ipynb; got {notebook!r}")
    slug = repository_url(root).removeprefix("https://github.com/")
    return f"https://mybinder.org/v2/gh/{slug}/HEAD?urlpath=lab/tree/{notebook}"
