"""The course as students meet it: Binder's environment, JupyterLab from it, a real browser.

One environment is built as Binder builds it (tests/_browser_support.py: runtime.txt, requirements.txt,
postBuild, no Docker) and JupyterLab runs from it, every kernel under Binder's 2 GB memory limit. Debian's
Chromium, driven headless by Playwright for Python, opens each student notebook, runs all cells from the
menu as a student would (normal mode, not grading mode: the widgets are drawn only then) and checks:

- only exercise cells (tagged raises-exception) raise, as in a blank student copy;
- every widget output is drawn by JupyterLab's widget front end, and no widget error text shows;
- moving the first control of each widget changes what it shows;
- every picture the kernel sent appears as an image;
- the kernel's peak memory stays under the limit.

nbgrader's Validate button is pressed on a blank and on a solved student notebook. Screenshots and a report
(seconds in the browser and peak memory per notebook) go to build/test-artifacts/browser/ (or to
$LMLAB_TEST_ARTIFACTS/browser/). Deselect with ``-m "not browser"``; without Chromium or Playwright these
tests are skipped, except under CI, where they must run.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from _browser_support import (
    KERNEL_MEMORY_BYTES,
    WIDGET_ERRORS,
    Lab,
    LabPage,
    artifacts_dir,
    build_binder_env,
    chromium_path,
    error_cells,
    output_counts,
    postbuild_disabled,
)

import course
from course.fakeclass import grading_meta, make_submission

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

STUDENT_NOTEBOOKS = [p.relative_to(course.ROOT).as_posix()
                     for lesson in course.lessons() for p in course.lesson_notebooks(lesson, course.ROOT, "notebooks")]
RUN_TIMEOUT_S = 420  # a notebook's normal-mode budget is 120 s on 2 cores; the browser and server share them
REPORT: dict[str, dict] = {}


def _need_browser() -> str:
    """Chromium's path; skips (fails under CI) when Chromium or Playwright is missing."""
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("Playwright for Python (pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        problems.append("Chromium (Debian: apt-get install chromium)")
    if problems:
        message = "browser tests need " + " and ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs them")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def binder(tmp_path_factory):
    _need_browser()
    return build_binder_env(tmp_path_factory.mktemp("binder"))


@pytest.fixture(scope="module")
def lab(binder, tmp_path_factory):
    server = Lab(binder, tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=_need_browser(), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def pages(browser):
    """new(): a page in a fresh browser context (no storage shared with other pages)."""
    contexts = []

    def new():
        contexts.append(browser.new_context(viewport={"width": 1400, "height": 1000}))
        page = contexts[-1].new_page()
        page.set_default_timeout(60_000)
        return page

    yield new
    for context in contexts:
        context.close()


@pytest.fixture
def page(pages):
    return pages()


def _shutdown_kernels(lab: Lab) -> None:
    for session in lab.api("/api/sessions"):
        lab.api(f"/api/sessions/{session['id']}", method="DELETE")


# --- Binder's environment --------------------------------------------------------------------------

def test_binder_environment_has_the_widget_front_end_and_disables_what_postbuild_disables(binder):
    disabled = postbuild_disabled()
    assert disabled, "binder/postBuild should disable nbgrader's instructor tools"
    result = binder_run(binder, "jupyter", "labextension", "list")
    listing = result.stdout + result.stderr
    assert re.search(r"@jupyter-widgets/jupyterlab-manager v\S+ .*enabled.*OK", listing), listing
    assert re.search(r"@jupyter/nbgrader v\S+ .*enabled.*OK", listing), listing
    section = listing.split("Disabled extensions:", 1)
    assert len(section) == 2, f"jupyter labextension list shows no disabled extensions:\n{listing}"
    for name in disabled:
        assert re.search(rf"^\s+{re.escape(name)}\s*$", section[1], flags=re.M), f"{name} is not disabled:\n{listing}"
    assert "@jupyter/nbgrader:validate-assignment" not in section[1], "students keep the Validate button"
    pins = binder_run(binder, "pip", "freeze").stdout
    assert re.search(r"^jupyterlab_widgets==", pins, flags=re.M | re.I), pins


def binder_run(binder, *command: str):
    import subprocess

    return subprocess.run([binder.bin(command[0]), *command[1:]], cwd=binder.repo, env=binder.env,
                          capture_output=True, text=True, check=True)


def test_lab_page_has_postbuild_settings_and_the_capped_kernel(lab, page):
    page.goto(f"{lab.url}/lab?token={lab.token}")
    page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
    config = json.loads(page.locator("#jupyter-config-data").text_content())
    disabled = config.get("disabledExtensions", [])
    disabled = list(disabled) if isinstance(disabled, list) else [k for k, v in disabled.items() if v]
    for name in postbuild_disabled():
        assert name in disabled, f"the page's config does not disable {name}: {disabled}"
    menus = page.locator(".lm-MenuBar-itemLabel").all_inner_texts()
    assert "Nbgrader" not in menus and "Run" in menus, menus
    spec = lab.api("/api/kernelspecs")["kernelspecs"]["python3"]["spec"]
    assert str(KERNEL_MEMORY_BYTES) in spec["argv"], spec["argv"]


# --- each student notebook, run in the browser -------------------------------------------------------

@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS)
def test_student_notebook_runs_in_jupyterlab(lab, page, path):
    out = artifacts_dir()
    stem = Path(path).stem
    tab = LabPage(page, lab, path)
    seconds = tab.run_all(RUN_TIMEOUT_S)
    usage = lab.kernel_usage(path)
    saved = tab.save()
    page.screenshot(path=str(out / f"{stem}.png"))

    errors = error_cells(saved)
    untagged = [(i, name) for i, tagged, name in errors if not tagged]
    assert not untagged, f"cells raised that a student who skips the exercises still needs: {untagged}"
    exercise_errors = {name for _, _, name in errors}
    assert exercise_errors <= {"NotImplementedError", "AssertionError", "NameError"}, exercise_errors

    text = tab.text()
    for phrase in WIDGET_ERRORS:
        assert phrase not in text, f"{path}: the page says {phrase!r}"
    counts = output_counts(saved)
    assert counts["images"] >= 1, f"{path} drew no picture"
    assert counts["figure_text"] == 0, f"{path}: a figure was shown as text, not as a picture"
    drawn = page.evaluate("() => [...document.querySelectorAll('.jp-Notebook .jp-RenderedImage img')]"
                          ".filter(img => !img.closest('.jupyter-widgets')).length")  # a widget's own pictures apart
    assert drawn == counts["images"], f"the kernel sent {counts['images']} pictures; the page shows {drawn}"

    widgets = tab.widgets()
    assert len(widgets) == counts["widgets"], \
        f"the kernel sent {counts['widgets']} widgets; JupyterLab drew {len(widgets)} as widgets"
    moved, progress_bars = [], 0
    for i, widget in enumerate(widgets):
        widget.scroll_into_view_if_needed()
        tab.settled(widget)
        widget.screenshot(path=str(out / f"{stem}-widget{i}.png"))
        if not tab.has_control(widget):  # a progress bar (tqdm.auto) is a widget with nothing to move
            assert widget.query_selector(".widget-hprogress, .progress"), f"{path}: widget {i} has no control"
            progress_bars += 1
            continue
        before = tab.display(widget)
        assert before.strip(), f"{path}: widget {i} shows nothing"
        what = tab.move_first_control(widget)
        deadline = time.monotonic() + 120
        while tab.display(widget) == before:
            assert time.monotonic() < deadline, f"{path}: widget {i} did not change after moving {what}"
            time.sleep(0.5)
        tab.settled(widget)  # the new picture has finished drawing
        widget.screenshot(path=str(out / f"{stem}-widget{i}-moved.png"))
        moved.append(what)
    assert not any(phrase in tab.text() for phrase in WIDGET_ERRORS)

    REPORT[path] = {"seconds_in_browser": round(seconds, 1), "peak_rss_mb": round(usage["peak_rss_bytes"] / 1e6),
                    "peak_child_rss_mb": round(usage["peak_child_rss_bytes"] / 1e6), "widgets": len(widgets),
                    "lesson_widgets": len(moved), "progress_bars": progress_bars, "run_all_retries": tab.retries,
                    "controls_moved": moved, "pictures": counts["images"],
                    "screenshots": sorted(p.name for p in out.glob(f"{stem}*.png"))}
    (out / "report.json").write_text(json.dumps(REPORT, indent=2))
    print(f"{path}: {REPORT[path]}")
    _shutdown_kernels(lab)
    assert usage["limit_bytes"] == KERNEL_MEMORY_BYTES, "the kernel did not run under the memory limit"
    assert max(usage["peak_rss_bytes"], usage["peak_child_rss_bytes"]) < KERNEL_MEMORY_BYTES


def test_every_lesson_shows_a_widget_in_the_browser():
    ran = {path for path in REPORT}
    if ran != set(STUDENT_NOTEBOOKS):
        pytest.skip("runs after every student notebook ran in the browser (run the whole module)")
    for lesson in course.lessons():
        shown = sum(REPORT[p]["lesson_widgets"] for p in STUDENT_NOTEBOOKS if p.startswith(f"notebooks/{lesson}/"))
        assert shown >= 1, f"lesson {lesson} showed no widget with a control in the browser"


# --- nbgrader's Validate button -----------------------------------------------------------------------

VALIDATE_NOTEBOOK = STUDENT_NOTEBOOKS[0] if STUDENT_NOTEBOOKS else None


@pytest.mark.timeout(900)
@pytest.mark.skipif(VALIDATE_NOTEBOOK is None, reason="no lessons yet")
def test_validate_button_in_jupyterlab(lab, pages, binder):
    released_path = binder.repo / VALIDATE_NOTEBOOK
    lesson = Path(VALIDATE_NOTEBOOK).parent.name
    source = nbformat.read(course.ROOT / "assessments" / lesson / Path(VALIDATE_NOTEBOOK).name, 4)
    released = nbformat.read(released_path, 4)
    solutions = [grading_meta(c)["grade_id"] for c in source.cells if grading_meta(c).get("solution")]
    folder = binder.repo / "my-work"
    folder.mkdir(exist_ok=True)
    nbformat.write(released, folder / "blank.ipynb")
    nbformat.write(make_submission(source, released, solutions), folder / "solved.ipynb")

    page = pages()
    blank = LabPage(page, lab, "my-work/blank.ipynb").validate()
    page.screenshot(path=str(artifacts_dir() / "validate-blank.png"))
    assert "Success" not in blank and "NotImplementedError" in blank, blank
    page = pages()
    solved = LabPage(page, lab, "my-work/solved.ipynb").validate()
    page.screenshot(path=str(artifacts_dir() / "validate-solved.png"))
    assert "Success! Your notebook passes all the tests." in solved, solved
    _shutdown_kernels(lab)
