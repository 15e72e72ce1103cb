"""Binder (repo2docker) set-up: binder/ pins agree with pyproject.toml, CPU-only torch, lesson 01 opens."""

from __future__ import annotations

import re
import tomllib
from urllib.parse import parse_qs, urlparse

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

import course

BINDER = course.ROOT / "binder"
PYPROJECT = tomllib.loads((course.ROOT / "pyproject.toml").read_text())
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def requirement_lines() -> list[str]:
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    return [line.split(" #")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def pins() -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in requirement_lines() if not line.startswith(("-", "."))]
    return {canonicalize_name(r.name): r for r in reqs}


def pinned_version(req: Requirement) -> Version:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{req} must be pinned with =="
    return Version(specs[0].version)


def needed() -> list[Requirement]:
    """lmlab's dependencies and those of its `course` extra."""
    project = PYPROJECT["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["course"]]


def test_every_dependency_is_pinned_to_a_version_pyproject_allows():
    pinned = pins()
    for req in needed():
        name = canonicalize_name(req.name)
        assert name in pinned, f"binder/requirements.txt must pin {req.name} (pyproject.toml: {req})"
        version = pinned_version(pinned[name])
        assert req.specifier.contains(version, prereleases=True), f"{name}=={version} does not satisfy {req}"


def test_every_pin_is_exact_and_known():
    allowed = {canonicalize_name(r.name) for r in needed()} | {"jupyterlab-widgets"}
    for name, req in pins().items():
        pinned_version(req)
        assert name in allowed, f"{name} is pinned in binder/ but pyproject.toml does not need it"


def test_torch_is_a_cpu_build_from_the_cpu_index():
    assert pinned_version(pins()["torch"]).local == "cpu"
    assert f"--extra-index-url {CPU_INDEX}" in requirement_lines()


def test_widgets_front_end_and_lmlab_from_the_repository():
    pinned = pins()
    widgets = pinned_version(pinned["ipywidgets"])
    assert widgets.major == 8 and pinned_version(pinned["jupyterlab-widgets"]).major == 3  # the pair for widgets 8
    assert "-e ." in requirement_lines() or "." in requirement_lines()


def test_python_is_pinned_and_allowed():
    match = re.fullmatch(r"python-(\d+)\.(\d+)", (BINDER / "runtime.txt").read_text().strip())
    assert match, "binder/runtime.txt must read like python-3.11"
    version = Version(f"{match[1]}.{match[2]}")
    assert version >= Version("3.11")
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(version)


def binder_links() -> list[tuple[str, str]]:
    """(file, link) for every Binder link in the README and course/*.md."""
    files = [course.ROOT / "README.md", *sorted((course.ROOT / "course").glob("*.md"))]
    return [(f.name, link) for f in files
            for link in re.findall(r"https://mybinder\.org/v2/gh/[^\s)>\]]+", f.read_text())]


def test_binder_links_open_a_released_notebook_in_jupyterlab():
    links = binder_links()
    assert links, "course/*.md must give a Binder link"
    for name, link in links:
        urlpath = parse_qs(urlparse(link).query)["urlpath"][0]
        assert urlpath.startswith("lab/tree/notebooks/"), f"{name}: {link}"
        notebook = urlpath.removeprefix("lab/tree/")
        assert link == course.binder_url(notebook), f"{name}: {link} is not made from pyproject.toml's Repository"
        if not (course.ROOT / "notebooks").is_dir():
            pytest.skip("no lessons yet: notebooks/ does not exist")
        assert (course.ROOT / notebook).is_file(), f"{name}: {link}: no such notebook"


def test_the_repository_url_is_real():
    url = course.repository_url()  # raises while it is a placeholder
    assert course.binder_url("notebooks/01_objective/01a_likelihood.ipynb") == (
        f"https://mybinder.org/v2/gh/{url.removeprefix('https://github.com/')}/HEAD"
        "?urlpath=lab/tree/notebooks/01_objective/01a_likelihood.ipynb")


@pytest.mark.parametrize("url", ["https://github.com/OWNER/lmlab", "https://github.com/your-name/lmlab",
                                 "https://example.com/lmlab", "", "https://github.com/lmlab"])
def test_a_placeholder_repository_url_is_refused(tmp_path, url):
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "x"\n[project.urls]\nRepository = "{url}"\n')
    with pytest.raises(ValueError, match="Repository"):
        course.binder_url("notebooks/01_objective/01a_likelihood.ipynb", tmp_path)


@pytest.mark.parametrize("notebook", ["/etc/passwd.ipynb", "notebooks/../x.ipynb", "notebooks/01_objective"])
def test_binder_url_needs_a_notebook_in_the_repository(notebook):
    with pytest.raises(ValueError, match="notebook path"):
        course.binder_url(notebook)
