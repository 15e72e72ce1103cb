"""The course as a student meets it: a Binder-like environment, JupyterLab from it, Chromium driving it.

- ``build_binder_env``: what repo2docker does, without Docker: a fresh virtual environment with the Python
  of ``binder/runtime.txt``, ``pip install -r binder/requirements.txt`` in a copy of the repository, then
  ``binder/postBuild``.
- ``Lab``: JupyterLab from that environment on 127.0.0.1, its kernels started under a memory limit.
- ``LabPage``: one notebook in the browser (Playwright for Python, pointed at the system's Chromium):
  run all cells from the menu, save, find the widgets, move a control, press Validate.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

import course

BINDER = course.ROOT / "binder"
KERNEL_MEMORY_BYTES = 2_000_000_000  # Binder's limit, 2 GB (mybinder.org gives each session 1 to 2 GB)
WIDGET_ERRORS = ("Error displaying widget", "model not found", "Failed to load model class",
                 "Could not create a view", "Loading widget...")

# The kernel: ipykernel started after lowering RLIMIT_DATA (heap and private mappings, inherited by the
# processes it starts). sys.argv: ["-c", LIMIT, "-f", CONNECTION_FILE].
_CAPPED_KERNEL = ("import resource, runpy, sys; limit = int(sys.argv.pop(1)); "
                  "resource.setrlimit(resource.RLIMIT_DATA, (limit, limit)); sys.argv[0] = 'ipykernel_launcher'; "
                  "runpy.run_module('ipykernel_launcher', run_name='__main__', alter_sys=True)")


# set by tests/conftest.py: whether this run selected the browser tests
BROWSER_SELECTED = pytest.StashKey[bool]()


def chromium_path() -> str | None:
    """The system's Chromium (Debian: package chromium), or None."""
    for name in (os.environ.get("LMLAB_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


def browser_available() -> bool:
    """Whether tests/test_browser.py can run here: Chromium and Playwright for Python are installed."""
    import importlib.util

    return chromium_path() is not None and importlib.util.find_spec("playwright") is not None


def repository_files(root: Path = course.ROOT) -> list[Path]:
    """What a clone of the repository holds: the files git tracks, and new ones it does not ignore."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=root, capture_output=True, check=True).stdout
    return [Path(p) for p in out.decode().split("\0") if p and (root / p).is_file()]


def copy_repository(dest: Path, root: Path = course.ROOT) -> Path:
    for rel in repository_files(root):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    return dest


def binder_python() -> str:
    """The interpreter binder/runtime.txt names (python-3.11: python3.11)."""
    version = re.fullmatch(r"python-(\d+\.\d+)", (BINDER / "runtime.txt").read_text().strip())[1]
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    found = shutil.which(f"python{version}")
    if not found:
        raise RuntimeError(f"binder/runtime.txt asks for Python {version}; no python{version} on PATH")
    return found


def clean_env(home: Path) -> dict[str, str]:
    """An environment with no Jupyter, IPython, matplotlib or virtual-environment settings from outside."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "IPYTHON", "NBGRADER", "MPL", "PYTHON", "VIRTUAL_ENV", "LMLAB"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"), PYDEVD_DISABLE_FILE_VALIDATION="1")
    return env


@dataclass
class BinderEnv:
    repo: Path      # the copy of the repository, Binder's working folder
    prefix: Path    # the virtual environment
    env: dict[str, str]
    install_seconds: float
    postbuild_output: str

    def bin(self, name: str) -> str:
        return str(self.prefix / "bin" / name)


def build_binder_env(work: Path) -> BinderEnv:
    """repo2docker's steps for binder/ (runtime.txt, requirements.txt, postBuild), without Docker."""
    repo = copy_repository(work / "repo")
    prefix = work / "env"
    env = clean_env(work / "home")
    env["PATH"] = os.pathsep.join([str(prefix / "bin"), env.get("PATH", "")])
    t0 = time.perf_counter()
    subprocess.run([binder_python(), "-m", "venv", str(prefix)], check=True, env=env)
    # --retries 0: the PyTorch CPU index in requirements.txt is not reachable offline; the registry is
    pip = subprocess.run([str(prefix / "bin" / "pip"), "install", "--retries", "0", "-r", "binder/requirements.txt"],
                         cwd=repo, env=env, capture_output=True, text=True)
    if pip.returncode:
        raise RuntimeError(
            f"pip install -r binder/requirements.txt failed:\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}")
    post = subprocess.run(["bash", "binder/postBuild"], cwd=repo, env=env, capture_output=True, text=True)
    if post.returncode:
        raise RuntimeError(f"binder/postBuild failed:\n{post.stdout}\n{post.stderr}")
    return BinderEnv(repo, prefix, env, time.perf_counter() - t0, post.stdout + post.stderr)


def postbuild_disabled() -> list[str]:
    """The lab extensions (plugins) binder/postBuild disables."""
    text = (BINDER / "postBuild").read_text().replace("\\\n", " ")
    return [name for match in re.findall(r"jupyter labextension disable ([^\n;&|]+)", text) for name in match.split()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """``jupyter lab`` from a Binder environment, serving its repository on 127.0.0.1; kernels capped."""

    def __init__(self, binder: BinderEnv, work: Path, memory_bytes: int = KERNEL_MEMORY_BYTES):
        self.binder, self.memory_bytes = binder, memory_bytes
        self.token, self.port = secrets.token_hex(16), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(binder.env)
        kernels = work / "jupyter-path" / "kernels" / "python3"  # found before the environment's own python3
        kernels.mkdir(parents=True, exist_ok=True)
        spec = {"argv": [binder.bin("python"), "-c", _CAPPED_KERNEL, str(memory_bytes), "-f", "{connection_file}"],
                "display_name": "Python 3 (ipykernel)", "language": "python", "metadata": {"debugger": True}}
        (kernels / "kernel.json").write_text(json.dumps(spec))
        self.env["JUPYTER_PATH"] = str(work / "jupyter-path")
        # a student who answered "No" to JupyterLab's news question: no pop-up over the pages
        settings = Path(self.env["HOME"]) / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        self.log = open(work / "jupyterlab.log", "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [binder.bin("jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             f"--IdentityProvider.token={self.token}", "--allow-root", f"--ServerApp.root_dir={binder.repo}",
             "--ServerApp.port_retries=0",
             # window.jupyterapp: the tests read the notebook's cell models and kernel state from it (cells
             # out of view have no prompt text to read), as JupyterLab's own UI tests do
             "--LabApp.expose_app_in_browser=True"],
            cwd=binder.repo, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"jupyter lab did not answer within {timeout} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def kernel_for(self, path: str) -> dict:
        """The running kernel of the notebook at `path` (relative to the repository)."""
        for session in self.api("/api/sessions"):
            if session["path"] == path:
                return session["kernel"]
        raise LookupError(f"no kernel runs {path}")

    def kernel_usage(self, path: str) -> dict[str, int]:
        """Peak resident memory (bytes) of the notebook's kernel and of its largest finished child process,
        and the kernel's RLIMIT_DATA, asked of the kernel through its connection file (silently: nothing
        reaches the notebook)."""
        from jupyter_client import BlockingKernelClient

        kernel = self.kernel_for(path)
        client = BlockingKernelClient(connection_file=str(Path(self.env["JUPYTER_RUNTIME_DIR"])
                                                          / f"kernel-{kernel['id']}.json"))
        client.load_connection_file()
        client.start_channels()
        try:
            expressions = {"self": "__import__('resource').getrusage(0).ru_maxrss",
                           "children": "__import__('resource').getrusage(-1).ru_maxrss",
                           "limit": "__import__('resource').getrlimit(__import__('resource').RLIMIT_DATA)[0]"}
            reply = client.execute_interactive("", silent=True, store_history=False,
                                               user_expressions=expressions, timeout=60)
            values = reply["content"]["user_expressions"]
            data = {k: int(v["data"]["text/plain"]) for k, v in values.items()}
        finally:
            client.stop_channels()
        return {"peak_rss_bytes": data["self"] * 1024, "peak_child_rss_bytes": data["children"] * 1024,
                "limit_bytes": data["limit"]}

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# --- one notebook in the browser --------------------------------------------------------------------

# the open notebook as its models see it: each code cell's execution count and state, and the kernel's
_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {counts: cells.map(c => c.model.executionCount),
          running: cells.map(c => c.model.executionState === 'running'
                                  || !!(c.promptNode && /\\*/.test(c.promptNode.textContent))),
          kernel: kernel ? kernel.status : null,
          ready: panel.sessionContext.isReady};
}"""

_READY = """() => { const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const c = p && p.sessionContext;
  return !!(c && c.isReady && c.session && c.session.kernel && c.session.kernel.status === 'idle'); }"""

# widget roots: outputs whose view is an ipywidget; "display": what the widget shows (its Output widget)
_WIDGETS = """() => [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')]
  .filter(o => o.firstElementChild && o.firstElementChild.classList.contains('jupyter-widgets'))
  .map(o => o.firstElementChild)"""


CONTROLS = "[role=slider], select, .widget-toggle-button, input[type=checkbox]"  # what a student moves


class LabPage:
    """A notebook open in JupyterLab in a Playwright page."""

    def __init__(self, page, lab: Lab, path: str):
        self.page, self.lab, self.path = page, lab, path
        # reset: a fresh workspace, so that only this notebook is open
        page.goto(f"{lab.url}/lab/tree/{path}?reset&token={lab.token}")
        page.wait_for_selector(".jp-Notebook", timeout=120_000)
        # wait for the notebook's kernel to be up and idle, as the server sees it. JupyterLab sometimes asks
        # which kernel to start (when the notebook opens before it has read the kernel specs, as on a busy
        # first start); a student then presses Select
        deadline = time.monotonic() + 180
        while not self.kernel_idle():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: no idle kernel within 180 s")
            self.accept_kernel_dialog(wait_s=1)
        # and the page's own session to be ready with that kernel idle: Run All is pressed only then
        page.wait_for_function(_READY, timeout=120_000, polling=500)

    def kernel_idle(self) -> bool:
        """Whether the server runs a kernel for this notebook and that kernel is idle."""
        try:
            return self.lab.kernel_for(self.path).get("execution_state") == "idle"
        except LookupError:
            return False

    def accept_kernel_dialog(self, wait_s: float = 0) -> bool:
        """Press Select in JupyterLab's "Select Kernel" dialog, if it shows within `wait_s` seconds."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        dialog = self.page.locator(".jp-Dialog", has_text="Select Kernel")
        try:
            dialog.wait_for(state="visible", timeout=max(wait_s, 0.1) * 1000)
        except PlaywrightTimeout:
            return False
        dialog.get_by_role("button", name="Select", exact=True).click()
        dialog.wait_for(state="hidden", timeout=30_000)
        return True

    def menu(self, *names: str | re.Pattern) -> None:
        """Click through the menu bar: menu("Run", "Run All Cells")."""
        for name in names:
            self.page.get_by_role("menuitem", name=name, exact=True if isinstance(name, str) else None).click()

    def state(self) -> dict:
        """Each code cell's execution count (None: not run) and whether it runs, and the kernel's status."""
        return self.page.evaluate(_STATE)

    def run_all(self, timeout_s: float, stall_s: float = 90) -> float:
        """Run -> Run All Cells, then wait until every code cell has run; returns the seconds it took.

        Fails early when the run stops: no cell runs, the kernel is idle and nothing changed for `stall_s`
        seconds (a cell raised, or the run never started). If Run All started nothing at all (no cell has
        run), it is pressed again once, as a student would, and the retry is recorded in `self.retries`."""
        t0 = time.perf_counter()
        self.retries = 0
        self.accept_kernel_dialog()
        self.menu("Run", "Run All Cells")
        self.accept_kernel_dialog(wait_s=5)  # Run All may ask for a kernel first; Select then runs the cells
        last, changed = None, time.monotonic()
        while True:
            state = self.state()
            now = time.monotonic()
            if state and all(c is not None for c in state["counts"]) and not any(state["running"]) \
                    and state["kernel"] == "idle":
                break
            if state != last:
                last, changed = state, now
            elif now - changed > stall_s and state and not any(state["running"]) and state["kernel"] == "idle":
                if all(c is None for c in state["counts"]) and self.retries == 0:
                    self.retries += 1
                    self.accept_kernel_dialog()
                    self.menu("Run", "Run All Cells")
                    changed = time.monotonic()
                    continue
                self._fail(f"the run stopped: code cells not run: "
                           f"{[i for i, c in enumerate(state['counts']) if c is None][:10]}")
            if now - t0 > timeout_s:
                self._fail(f"not every cell ran within {timeout_s} s; last state {state}")
            self.accept_kernel_dialog(wait_s=1)  # waits up to a second
        return time.perf_counter() - t0

    def _fail(self, why: str) -> None:
        shot = artifacts_dir() / f"{Path(self.path).stem}-timeout.png"
        self.page.screenshot(path=str(shot))
        raise TimeoutError(f"{self.path}: {why}; see {shot}")

    def save(self) -> dict:
        """File -> Save Notebook; returns the notebook as saved on disk."""
        file = self.lab.binder.repo / self.path
        before = file.stat().st_mtime_ns
        self.menu("File", re.compile(r"^Save Notebook(\s+Ctrl\+S)?$"))
        deadline = time.monotonic() + 60
        while file.stat().st_mtime_ns == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path} was not saved within 60 s")
            time.sleep(0.2)
        time.sleep(0.5)  # the contents API writes atomically, but give it a moment
        return json.loads(file.read_text())

    def text(self) -> str:
        return self.page.locator(".jp-Notebook").inner_text()

    def widgets(self) -> list:
        """Element handles of the widget outputs, in notebook order."""
        handles = self.page.evaluate_handle(_WIDGETS)
        return [p.as_element() for p in handles.get_properties().values()]

    @staticmethod
    def display(widget) -> str:
        """What a widget shows: the HTML of its Output widgets (pictures as data URLs, printed text)."""
        return widget.evaluate("w => [...w.querySelectorAll('.widget-output')].map(o => o.innerHTML).join('\\n')")

    def settled(self, widget, timeout_s: float = 60) -> str:
        """Wait until what the widget shows stops changing and its pictures are decoded; returns it."""
        deadline, last = time.monotonic() + timeout_s, None
        while True:
            now = self.display(widget)
            drawn = widget.evaluate("w => [...w.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)")
            if now == last and drawn:
                return now
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: a widget was still changing after {timeout_s} s")
            last = now
            time.sleep(0.5)

    @staticmethod
    def has_control(widget) -> bool:
        return widget.query_selector(CONTROLS) is not None

    def move_first_control(self, widget) -> str:
        """Move the widget's first control by one step, as a keyboard user would; returns what was moved."""
        control = widget.query_selector(CONTROLS)
        if control is None:
            raise AssertionError("the widget has no slider, drop-down, toggle or check box")
        control.scroll_into_view_if_needed()
        role, tag = control.get_attribute("role"), control.evaluate("c => c.tagName.toLowerCase()")
        if role == "slider":
            at_end = control.get_attribute("aria-valuenow") == control.get_attribute("aria-valuemax")
            control.focus()
            control.press("ArrowLeft" if at_end else "ArrowRight")
            label = control.evaluate("c => c.closest('.widget-slider').querySelector('.widget-label').textContent")
            return f"slider {label!r}: {control.get_attribute('aria-valuetext')}"
        if tag == "select":
            options = control.evaluate("s => [...s.options].map(o => o.value)")
            current = control.evaluate("s => s.value")
            control.select_option(next(o for o in options if o != current))
            return f"drop-down: {control.evaluate('s => s.value')}"
        others = widget.query_selector_all(".widget-toggle-button:not(.mod-active)")
        target = others[0] if tag != "input" and others else control
        target.click()
        return "toggle"

    def validate(self, timeout_s: float = 300) -> str:
        """Press nbgrader's Validate button; returns the text of the dialog it opens."""
        self.page.get_by_role("button", name="Validate", exact=True).click()
        dialog = self.page.locator(".jp-Dialog")
        dialog.wait_for(timeout=timeout_s * 1000)
        # the dialog first says it is validating; wait for the verdict
        self.page.wait_for_function(
            "() => { const d = document.querySelector('.jp-Dialog-body');"
            " return d && !/^\\s*$/.test(d.innerText) && !/Validating/i.test(d.innerText); }",
            timeout=timeout_s * 1000, polling=500)
        return dialog.inner_text()


def error_cells(nb: dict) -> list[tuple[int, bool, str]]:
    """(index, tagged raises-exception, error name) of each code cell whose outputs hold an error."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append((i, "raises-exception" in cell["metadata"].get("tags", []), out.get("ename", "")))
    return found


def output_counts(nb: dict) -> dict[str, int]:
    """How many widget views, PNG pictures and figure texts without a picture the saved notebook holds."""
    counts = {"widgets": 0, "images": 0, "figure_text": 0}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            counts["widgets"] += "application/vnd.jupyter.widget-view+json" in data
            counts["images"] += "image/png" in data
            text = "".join(data.get("text/plain", ""))
            counts["figure_text"] += text.startswith("<Figure size") and "image/png" not in data
    return counts


def artifacts_dir() -> Path:
    """Where the browser tests leave their screenshots and report (LMLAB_TEST_ARTIFACTS, else build/)."""
    path = Path(os.environ.get("LMLAB_TEST_ARTIFACTS") or course.ROOT / "build" / "test-artifacts") / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path
