"""How ``nbgrader autograde`` runs a submission (``course/nbgrader_config.py`` puts it in place of Execute).

- The kernel is a ``SandboxKernelManager`` kernel (``course/sandbox.py``): guarded and sandboxed.
- Before each test cell the guard puts back what the notebook changed (``lmlab.kernelguard``); after it,
  the guard reports what changed while the test ran. The answers are signed with a key made here, so a
  kernel that lost its guard cannot fake them. A test cell scores its points only when it ran, raised
  nothing and the guard answered clean both times; otherwise it gets an error output, which nbgrader
  scores 0. Its ``execute_result`` outputs become ``display_data``: nbgrader would read a number there as
  partial credit, and test cells are scored by whether they raised, nothing else.
- A test cell's results, sent as plain data by ``lmlab.grading`` (``reported``, ``expect_equal``,
  ``expect_close``), are taken out of its outputs and compared here, in the grader's process, with the
  instructor's solution's results on the same test (``course/reference.py``): a test whose results are
  missing, extra or different gets an error output too, whatever the kernel said.
- Test cells are not stored in the kernel's history (``In``, ``_ih``), so later cells cannot print them.
- Outputs are capped in bytes: per cell (``max_cell_output_bytes``) and per notebook; errors stay.
- A kernel that died (``os._exit``, the memory limit) or stops answering after a timeout is stopped; the
  cells after it are not run and their tests score 0, and grading of the class goes on.
"""

from __future__ import annotations

import ast
import asyncio
import json
import secrets
import time
from pathlib import Path

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer, Unicode

from course.reference import reference
from course.sandbox import SandboxKernelManager
from lmlab.kernelguard import check_answer, expression
from lmlab.results import RESULT_MIME, compare_results


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _size(content: dict) -> int:
    return len(json.dumps(content.get("data", content.get("text", "")), default=str))


class SafeExecute(Execute):
    """nbgrader's Execute with the guard around test cells, byte limits on outputs and a stop for a dead kernel."""

    max_cell_output_bytes = Integer(1 << 20, help="bytes of output a cell keeps (errors always stay)").tag(
        config=True)
    max_notebook_output_bytes = Integer(8 << 20, help="bytes of output a notebook keeps").tag(config=True)
    guard_timeout = Integer(20, help="seconds the guard may take to answer before and after a test cell").tag(
        config=True)
    compare_results = Bool(True, help="compare the results test cells send with the instructor's solution's, "
                                      "in the grader's process (course/reference.py)").tag(config=True)
    course_root = Unicode("", help="the course's root folder, where the lesson sources are").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(*args, **kwargs)
        self._stopped = ""  # why the kernel was stopped; cells after it do not run

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        if not isinstance(km, SandboxKernelManager):
            raise TypeError(f"grading needs a SandboxKernelManager, got {type(km).__name__}")
        self.guard_key = secrets.token_hex(32)
        km.guard_key = self.guard_key
        self._stopped, self._notebook_bytes = "", 0
        return km

    def preprocess(self, nb, resources=None, km=None):  # noqa: ANN001, ANN201
        self._reference: dict[str, list[dict]] | None = None
        info = (resources or {}).get("nbgrader", {})
        if self.compare_results and self.course_root and info.get("assignment") and info.get("notebook"):
            lesson = reference(info["assignment"], Path(self.course_root))
            self._reference = lesson.get(info["notebook"])
            if self._reference is None:
                self.log.warning("no reference results for %s/%s", info["assignment"], info["notebook"])
        return super().preprocess(nb, resources, km)

    # -- outputs --------------------------------------------------------------------------------------

    def output(self, outs, msg, display_id, cell_index):  # noqa: ANN001, ANN201
        kind, content = msg["msg_type"], msg["content"]
        if kind in ("display_data", "update_display_data") and RESULT_MIME in content.get("data", {}):
            if getattr(self, "_in_test", False):  # a test cell's result: for the grader, not the feedback
                self._results.append(content["data"][RESULT_MIME])
            return None
        if kind == "error":
            content["traceback"] = [line[:4000] for line in content.get("traceback", [])[-40:]]
            content["evalue"] = str(content.get("evalue", ""))[:4000]
            return super().output(outs, msg, display_id, cell_index)
        used = getattr(self, "_cell_bytes", 0)
        size = _size(content)
        if used + size > self.max_cell_output_bytes or self._notebook_bytes + size > self.max_notebook_output_bytes:
            if not getattr(self, "_cut", False):
                self._cut = True
                note = NotebookNode(output_type="stream", name="stdout",
                                    text=f"[output cut: more than {self.max_cell_output_bytes} bytes]\n")
                outs.append(note)
            return None
        self._cell_bytes = used + size
        self._notebook_bytes += size
        return super().output(outs, msg, display_id, cell_index)

    # -- cells ----------------------------------------------------------------------------------------

    def on_cell_executed(self, **kwargs):
        self._reply = kwargs.get("execute_reply")
        return super().on_cell_executed(**kwargs)

    async def _guard(self, action: str) -> list[str] | None:
        """Ask the kernel's guard to restore or verify; the changes it reports, or None if it did not answer."""
        nonce = secrets.token_hex(16)
        msg_id = self.kc.execute("", silent=True, store_history=False, stop_on_error=False,
                                 user_expressions={"guard": expression(action, nonce)})
        deadline = time.monotonic() + self.guard_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=remaining))
            except Exception:  # queue.Empty on timeout
                return None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            value = msg["content"].get("user_expressions", {}).get("guard", {})
            text = value.get("data", {}).get("text/plain") if value.get("status") == "ok" else None
            try:
                answer = ast.literal_eval(text) if text else None
            except (ValueError, SyntaxError):
                answer = None
            return check_answer(answer, self.guard_key.encode(), action, nonce) if isinstance(answer, str) else None

    async def _stop_kernel(self, why: str) -> None:
        self._stopped = why
        try:
            await asyncio.wait_for(self.km.shutdown_kernel(now=True), timeout=30)
        except Exception:  # noqa: BLE001 -- the kernel is gone either way
            self.log.warning("could not shut the kernel down cleanly")

    def _not_run(self, cell: NotebookNode) -> NotebookNode:
        cell.outputs = [_error("NotRun", f"not run: {self._stopped}")]
        return cell

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):  # noqa: ANN001
        if cell.cell_type != "code" or not cell.source.strip():
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        if self._stopped:
            return self._not_run(cell)
        is_test = bool(cell.metadata.get("nbgrader", {}).get("grade")) and not cell.metadata["nbgrader"].get(
            "solution")
        self._cell_bytes, self._cut, self._reply = 0, False, None
        self._in_test, self._results = is_test, []
        if is_test:
            before = await self._guard("restore")
            if before is None:
                await self._stop_kernel("the kernel did not answer the grader before a test cell")
                return self._not_run(cell)
        try:
            cell = await super().async_execute_cell(cell, cell_index, execution_count,
                                                    store_history=store_history and not is_test)
        except DeadKernelError:
            self._stopped = "the kernel stopped (it exited, or went over the memory limit)"
            cell.outputs = [*cell.get("outputs", []), _error("DeadKernelError", self._stopped)]
            return cell
        except CellTimeoutError:
            await self._stop_kernel("the kernel did not stop after the time limit of a cell")
            cell.outputs = [*cell.get("outputs", []), _error("CellTimeoutError", self._stopped)]
            return cell
        timed_out = any(o.output_type == "error" and o.get("ename") == "CellTimeoutError" for o in cell.outputs)
        if not is_test:
            if timed_out and await self._guard("verify") is None:
                await self._stop_kernel("the kernel did not stop after the time limit of a cell")
            return cell
        after = await self._guard("verify")
        for output in cell.outputs:
            if output.output_type == "execute_result":
                output.output_type = "display_data"
                output.pop("execution_count", None)
        status = (self._reply or {}).get("content", {}).get("status")
        if after is None:
            await self._stop_kernel("the kernel did not answer the grader after a test cell")
            cell.outputs.append(_error("GradingError", "the kernel did not answer the grader after this test"))
        elif after:
            cell.outputs.append(_error("TamperingDetected", "the test ran while the grading environment was "
                                                            f"changed: {', '.join(sorted(set(after))[:12])}"))
        elif status != "ok" and not any(o.output_type == "error" for o in cell.outputs):
            cell.outputs.append(_error("TestFailed", f"the test did not finish (status {status})"))
        elif status == "ok" and getattr(self, "_reference", None) is not None:
            grade_id = cell.metadata["nbgrader"].get("grade_id")
            why = compare_results(self._results, self._reference.get(grade_id, []))
            if why:
                cell.outputs.append(_error("ResultMismatch", f"the grader compared this test's results itself: {why}"))
        return cell

    # NotebookClient binds its synchronous wrapper to its own coroutine; bind it to this one
    execute_cell = run_sync(async_execute_cell)
