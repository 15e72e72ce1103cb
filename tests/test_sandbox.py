"""The pieces of sandboxed grading, one by one: the sandbox itself, the guard's signed answers, the
preflight, the feedback scrubber and the exact-type comparisons of lmlab.grading."""

from __future__ import annotations

import json
import sys

import nbformat
import pytest
import torch

from course.feedback import REPLACEMENT, hidden_lines, scrub_hidden_lines
from course.preflight import check_notebook, preflight_submission, repair_metadata
from course.sandbox import SandboxUnavailable, bwrap_command, check_not_exposed, probe_bwrap
from lmlab.grading import expect_close, expect_equal, plain
from lmlab.kernelguard import KernelGuard, check_answer, expression

needs_bwrap = pytest.mark.skipif(probe_bwrap() is not None, reason=f"no sandbox: {probe_bwrap()}")


def _cell(kind, source, gid=None, **meta):
    cell = (nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell)(source)
    if gid:
        cell.metadata["nbgrader"] = {"grade_id": gid, "schema_version": 3, "grade": False, "solution": False,
                                     "locked": False, **meta}
    return cell


def _source():
    nb = nbformat.v4.new_notebook(cells=[
        _cell("code", "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION", "f", solution=True),
        _cell("code", "assert f(1) == 1\n### BEGIN HIDDEN TESTS\nassert f(12345) == 12345, 'big'\n"
                      "### END HIDDEN TESTS", "test_f", grade=True, locked=True, points=2),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


# --- the sandbox ---------------------------------------------------------------------------------------

@needs_bwrap
def test_the_sandbox_hides_the_course_and_the_network(tmp_path):
    """A command in the sandbox sees the environment and its box, nothing of the course, no network."""
    import subprocess

    box = tmp_path / "box"
    (box / "run").mkdir(parents=True)
    (box / "submission").mkdir()
    (box / "submission" / "data.txt").write_text("mine")
    secret = tmp_path / "assessments"
    secret.mkdir()
    (secret / "hidden.ipynb").write_text("hidden")
    probe = (
        "import os, socket\n"
        f"print(os.path.exists({str(secret)!r}), os.path.exists({str(tmp_path)!r} + '/box/submission'))\n"
        "print(open('/sandbox/submission/data.txt').read())\n"
        "try:\n    open('/sandbox/submission/x', 'w')\nexcept OSError as e:\n    print('read-only', e.errno)\n"
        "open('/sandbox/work/y', 'w').write('ok'); print('work ok')\n"
        "try:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\nexcept OSError as e:\n"
        "    print('no network', e.errno)\n"
        "print(os.getpid())\n"
    )
    cmd = bwrap_command([sys.executable, "-c", probe], box, {"PATH": "/usr/bin"}, 16 << 20, secret=[secret])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stderr
    assert lines[0] == "False False"  # neither the course nor the box's own host path
    assert lines[1] == "mine"
    assert lines[2].startswith("read-only") and lines[3] == "work ok"
    assert lines[4].startswith("no network")
    assert int(lines[5]) < 10, "the sandbox has its own process namespace"


def test_the_sandbox_refuses_to_show_a_folder_that_holds_the_hidden_tests(tmp_path):
    (tmp_path / "assessments").mkdir()
    with pytest.raises(SandboxUnavailable, match="holds"):
        check_not_exposed([tmp_path], [tmp_path / "assessments"])
    check_not_exposed([tmp_path / "venv"], [tmp_path / "assessments"])  # a sibling is fine


def test_grading_refuses_to_start_without_a_sandbox(tmp_path, monkeypatch):
    from course import autograde

    monkeypatch.setattr(autograde, "probe_bwrap", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(SystemExit, match="(?s)refusing to grade: bubblewrap.*--unsafe"):
        autograde.grade_class("00_example", root=tmp_path, env={})


# --- the guard's answers -------------------------------------------------------------------------------

def test_guard_answers_are_signed_and_checked():
    KernelGuard.snapshot(None, b"k" * 32)
    answer = KernelGuard.verify("n0nce")
    assert check_answer(answer, b"k" * 32, "verify", "n0nce") == []
    assert check_answer(answer, b"other key", "verify", "n0nce") is None  # forged or from another kernel
    assert check_answer(answer, b"k" * 32, "restore", "n0nce") is None   # an answer to another question
    assert check_answer(answer, b"k" * 32, "verify", "n0nce2") is None   # replayed
    mac, _, body = answer.partition(":")
    edited = body.replace('"changes": []', '"changes": ["builtins.abs"]')
    assert edited != body and check_answer(f"{mac}:{edited}", b"k" * 32, "verify", "n0nce") is None


def test_guard_puts_back_patched_functions_and_reports_them():
    import math

    import lmlab.grading as grading

    KernelGuard.snapshot(None, b"key")
    real_isclose, real_helper = math.isclose, grading._isclose
    try:
        math.isclose = lambda *a, **k: True
        grading._isclose = lambda *a, **k: True
        changes = check_answer(KernelGuard.restore("abc"), b"key", "restore", "abc")
    finally:
        math.isclose, grading._isclose = real_isclose, real_helper
    assert math.isclose is real_isclose
    assert "math.isclose" in changes and "lmlab.grading._isclose" in changes
    assert check_answer(KernelGuard.verify("abc"), b"key", "verify", "abc") == []


def test_guard_expression_uses_no_name_a_notebook_can_rebind():
    src = expression("verify", "abc123")
    import ast

    names = {n.id for n in ast.walk(ast.parse(src, mode="eval")) if isinstance(n, ast.Name)}
    assert names == {"c"}  # only the comprehension's own variable
    assert eval(src, {"__builtins__": {}}, {}) is not None  # finds the guard with no builtins at all
    with pytest.raises(ValueError):
        expression("verify", "x'); import os; ('")


# --- preflight -----------------------------------------------------------------------------------------

def test_preflight_finds_what_a_student_changed():
    source = _source()
    submitted = nbformat.from_dict(source)
    submitted.cells[1].metadata["nbgrader"]["points"] = 100
    submitted.cells.append(nbformat.from_dict(submitted.cells[0]))
    submitted.metadata["kernelspec"]["name"] = "other"
    found = [f.problem for f in check_notebook("nb", submitted, source)]
    assert any("points changed from 2 to 100" in f for f in found)
    assert any("'f' appears 2 times" in f for f in found)
    assert any("kernelspec" in f for f in found)
    markdown = nbformat.from_dict(source)
    markdown.cells[1].cell_type = "markdown"
    assert any("turned into a markdown cell" in f.problem for f in check_notebook("nb", markdown, source))
    removed = nbformat.from_dict(source)
    del removed.cells[1]
    assert any("'test_f' was removed" in f.problem for f in check_notebook("nb", removed, source))
    assert check_notebook("nb", nbformat.from_dict(source), source) == []


def test_preflight_repairs_what_nbgrader_cannot_read_and_keeps_the_original(tmp_path):
    source, released = tmp_path / "src.ipynb", tmp_path / "rel.ipynb"
    nbformat.write(_source(), source)
    nbformat.write(_source(), released)
    folder, keep = tmp_path / "sub", tmp_path / "originals"
    folder.mkdir()
    (folder / "nb.ipynb").write_text("{ not json")
    report = preflight_submission(folder, "ada", {"nb": source}, {"nb": released}, keep=keep)
    assert not report.ok and report.repaired and "not a readable notebook" in str(report.findings[0])
    assert nbformat.read(folder / "nb.ipynb", 4).cells[0].source == _source().cells[0].source
    assert (keep / "nb.ipynb").read_text() == "{ not json"
    twice = _source()
    twice.cells.append(nbformat.from_dict(twice.cells[1]))
    twice.cells.append(_cell("code", "x = 1"))
    twice.cells[-1].metadata["nbgrader"] = {"grade": True}  # nbgrader metadata without a grade_id
    assert repair_metadata(twice)
    assert [c.metadata.get("nbgrader", {}).get("grade_id") for c in twice.cells] == ["f", "test_f", None, None]


# --- feedback ------------------------------------------------------------------------------------------

def test_feedback_scrubs_hidden_lines_from_every_output():
    nb = _source()
    nb.cells[0].source += "\n# ### BEGIN HIDDEN TESTS in a student's comment"  # not a test cell: ignored
    lines = hidden_lines(nb)
    assert lines == ["assert f(12345) == 12345, 'big'"]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                  text="hello\n    assert f(12345) == 12345, 'big'\nbye")]
    shown = {"text/plain": "assert f(12345) == 12345, 'big'"}
    nb.cells[1].outputs = [nbformat.v4.new_output("execute_result", data=shown),
                           nbformat.v4.new_output("error", ename="E", evalue="x",
                                                  traceback=["  assert   f(12345) ==  12345, 'big'"])]
    assert scrub_hidden_lines(nb, lines) == 3
    assert nb.cells[0].outputs[0].text == f"hello\n{REPLACEMENT}\nbye"
    assert nb.cells[1].outputs[0].data["text/plain"] == REPLACEMENT
    assert nb.cells[1].outputs[1].traceback == [REPLACEMENT]


# --- exact comparisons ---------------------------------------------------------------------------------

class _AlwaysEqual(float):
    def __eq__(self, other):
        return True

    __hash__ = float.__hash__


class _Yes(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return True


@pytest.mark.parametrize("cheat", [_AlwaysEqual(0.0), torch.tensor(0.0).as_subclass(_Yes), "2.0", [2.0], None])
def test_exact_comparisons_refuse_look_alikes(cheat):
    with pytest.raises(AssertionError):
        expect_close(cheat, 2.0)
    with pytest.raises(AssertionError):
        expect_equal(cheat, 2.0)


def test_exact_comparisons_accept_the_real_thing():
    expect_close(2, 2.0)
    expect_close(0.1 + 0.2, 0.3, rel=1e-12)
    expect_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-7]), rel=1e-6)
    expect_equal({"a": [1, (2, "x")]}, {"a": [1, (2, "x")]})
    expect_equal(torch.tensor([1, 2]), torch.tensor([1, 2]))
    assert plain(torch.tensor([[1, 2]])) == ("tensor", "torch.int64", (1, 2), [[1, 2]])
    with pytest.raises(AssertionError, match="dtype"):
        expect_close(torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64))
    with pytest.raises(AssertionError, match="shape"):
        expect_close(torch.tensor([1.0, 1.0]), torch.tensor([[1.0, 1.0]]))
    with pytest.raises(AssertionError, match="expected 2.0, got 2.1"):
        expect_close(2.1, 2.0)
    with pytest.raises(AssertionError):
        expect_equal(1, True)  # exact types: a bool is not the int 1
    with pytest.raises(AssertionError):
        expect_equal(1.0, 1)



class _Close(torch.Tensor):
    """A subclass that answers the comparisons tests use with True, and is a normal tensor otherwise."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})


def test_guard_switches_off_tensor_subclass_dispatch_for_the_length_of_a_test():
    cheat, other = torch.tensor([1.0, 2.0]).as_subclass(_Close), torch.tensor([5.0, 5.0])
    assert torch.allclose(cheat, other)  # what a bare torch.allclose test would accept
    KernelGuard.snapshot(None, b"key")
    assert check_answer(KernelGuard.restore("t1"), b"key", "restore", "t1") == []
    try:
        assert not torch.allclose(cheat, other) and not torch.equal(cheat, other)
        assert torch.allclose(cheat, torch.tensor([1.0, 2.0]))  # the real comparison still works
    finally:
        changes = check_answer(KernelGuard.verify("t2"), b"key", "verify", "t2")
    assert changes == [] and torch.allclose(cheat, other), "dispatch is back on after the test"


def test_every_lesson_test_wraps_calls_of_the_student_function_in_exact():
    """Authoring rule 9: `_out = exact(fn(...))` for every exercise function `fn` a test cell calls."""
    import re

    import course

    unwrapped = []
    for lesson in course.lessons():
        for path in course.lesson_notebooks(lesson):
            nb = nbformat.read(path, 4)
            exercises = set()
            for cell in nb.cells:
                meta = cell.metadata.get("nbgrader", {})
                if meta.get("solution") and not cell.metadata.get("course", {}).get("question"):
                    exercises |= set(re.findall(r"^def (\w+)", cell.source, re.M))
            for cell in nb.cells:
                meta = cell.metadata.get("nbgrader", {})
                if not meta.get("grade") or meta.get("solution"):
                    continue
                for line in cell.source.split("\n"):
                    m = re.match(r"^\s*[\w, ()]+? = (\w+)\(", line)
                    if m and m.group(1) in exercises:
                        unwrapped.append(f"{path.name} {meta['grade_id']}: {line.strip()}")
    assert unwrapped == []


def test_every_exercise_sends_its_hidden_results_to_the_grader():
    """Authoring rule 11: the hidden part of each exercise's core test cell reports what it compares."""
    import re

    import course

    silent = []
    for lesson in course.lessons():
        for path in course.lesson_notebooks(lesson):
            for cell in nbformat.read(path, 4).cells:
                meta = cell.metadata.get("nbgrader", {})
                gid = meta.get("grade_id", "")
                if not meta.get("grade") or meta.get("solution") or gid.startswith("test_q") or gid.endswith("_edge"):
                    continue
                hidden = "".join(re.findall(r"BEGIN HIDDEN TESTS(.*?)END HIDDEN TESTS", cell.source, re.S))
                sends = r"\b(reported|expect_equal|expect_close)\("
                helpers = [name for name, body in re.findall(r"^def (\w+)\(.*?\n((?:(?: .*)?\n)+)", cell.source, re.M)
                           if re.search(sends, body)]  # a test's own helper that reports, called by the hidden part
                if not re.search(sends, hidden) and not any(re.search(rf"\b{h}\(", hidden) for h in helpers):
                    silent.append(f"{path.name} {gid}")
    assert silent == []


def test_guard_puts_back_the_reference_functions_tests_compare_with():
    """A test computes its expected value with the library (lmlab.generation.greedy, F.cross_entropy, a
    GPT's forward): a submission that swaps those for its own function must not make them agree."""
    import torch.nn.functional as F

    import lmlab.generation as generation
    from lmlab.models import GPT

    KernelGuard.snapshot(None, b"key")
    saved = generation.greedy, F.cross_entropy, GPT.forward
    try:
        generation.greedy = lambda *a, **k: [0]
        F.cross_entropy = lambda *a, **k: torch.tensor(0.0)
        GPT.forward = lambda self, *a, **k: None
        torch.Tensor.allclose = lambda *a, **k: True  # shadows the C method of TensorBase
        changes = check_answer(KernelGuard.restore("r"), b"key", "restore", "r")
    finally:
        if "allclose" in vars(torch.Tensor):
            del torch.Tensor.allclose
        generation.greedy, F.cross_entropy, GPT.forward = saved
    assert generation.greedy is saved[0] and F.cross_entropy is saved[1] and GPT.forward is saved[2]
    for what in ("lmlab.generation.greedy", "torch.nn.functional.cross_entropy", "lmlab.models.gpt.GPT.forward",
                 "torch.Tensor.allclose (added)"):
        assert what in changes, (what, changes)
    assert check_answer(KernelGuard.verify("v"), b"key", "verify", "v") == []


def test_guard_accepts_a_library_wrapping_its_own_function_but_not_a_notebook_wrapper():
    """Importing torch._dynamo replaces torch.manual_seed by a wrapper of it (an installed file's code); a
    notebook's own wrapper of the same function is tampering."""
    import functools

    KernelGuard.snapshot(None, b"key")
    real = torch.manual_seed
    try:
        @functools.wraps(real)
        def cheat(seed):
            return real(0)

        torch.manual_seed = cheat
        changes = check_answer(KernelGuard.restore("a"), b"key", "restore", "a")
        assert "torch.manual_seed" in changes and torch.manual_seed is real
        import importlib

        dynamo = importlib.import_module("torch._dynamo")  # wraps torch.manual_seed when first imported
        torch.manual_seed = dynamo.disable(real)
        assert check_answer(KernelGuard.restore("b"), b"key", "restore", "b") == []
    finally:
        torch.manual_seed = real


@pytest.mark.parametrize("value", [0, -3, True, 1.5, float("nan"), float("-inf"), "é", None, b"\x00\xff",
                                   [1, (2.0, "x")], {"a": [None, False]}, (), []])
def test_results_travel_to_the_grader_with_their_exact_types(value):
    import json

    from lmlab.grading import decode_plain, encode_plain

    back = decode_plain(json.loads(json.dumps(encode_plain(value))))
    assert type(back) is type(value) and repr(back) == repr(value)


def test_the_grader_reads_only_what_encode_plain_writes():
    from lmlab.grading import decode_plain

    for junk in (None, [], ["i", "3"], ["b", 1], ["f", 1.0], ["z", 1], ["l", [["i"]]], {"value": 1}):
        with pytest.raises(TypeError):
            decode_plain(junk)


def _sent(value, kind="close", rel=1e-5, abs=0.0, what="the result"):
    from lmlab.grading import encode_plain, plain

    return {"value": encode_plain(plain(value)), "kind": kind, "rel": rel, "abs": abs, "what": what}


def test_the_grader_compares_results_with_the_reference_and_never_shows_it():
    from lmlab.grading import compare_results

    ref = [_sent(0.375), _sent(torch.tensor([1.0, 2.0])), _sent("abc", "equal"), _sent([1, 2], "equal")]
    same = [_sent(0.375 * (1 + 1e-7)), _sent(torch.tensor([1.0, 2.0 + 1e-6])), _sent("abc"), _sent([1, 2])]
    assert compare_results(same, ref) is None
    assert compare_results([_sent(float("nan"))], [_sent(float("nan"))]) is None
    assert compare_results([_sent(3)], [_sent(3.0)]) is None  # close: an int for a float, like expect_close
    wrong = {
        "a value off": [_sent(0.376), *same[1:]],
        "a result missing": same[:3],
        "a result extra": [*same, _sent(1)],
        "another dtype": [same[0], _sent(torch.tensor([1.0, 2.0], dtype=torch.float64)), *same[2:]],
        "another shape": [same[0], _sent(torch.tensor([[1.0, 2.0]])), *same[2:]],
        "a tuple for a list": [*same[:3], _sent((1, 2))],
        "an int for a str": [same[0], same[1], _sent(3), same[3]],
        "a float for an int (exact)": [*same[:3], _sent([1, 2.0])],
        "not plain data": [{"value": ["x"]}, *same[1:]],
    }
    for name, results in wrong.items():
        why = compare_results(results, ref)
        assert why, name
        assert "0.375" not in why and "abc" not in why, (name, why)  # the reference stays hidden


def test_reported_sends_plain_data_only_while_autograding(monkeypatch):
    import lmlab.grading as g

    sent = []
    monkeypatch.setattr(g, "_publish", lambda data: sent.append(data))
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert g.reported([1, 2]) == [1, 2] and not sent
    monkeypatch.setenv("NBGRADER_EXECUTION", "validate")
    g.expect_equal(3, 3)
    assert not sent
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    t = torch.tensor([1.0])
    assert g.reported(t, "the scores", rel=1e-3) is t
    g.expect_equal(3, 3, "three")
    with pytest.raises(AssertionError):
        g.expect_close(2.5, 2.0)  # sent before it is compared: a failing test still tells the grader
    records = [d[g.RESULT_MIME] for d in sent]
    assert [(r["kind"], r["rel"], r["what"]) for r in records] == [
        ("close", 1e-3, "the scores"), ("equal", 0.0, "three"), ("close", 1e-9, "the result")]
    assert g.decode_plain(records[0]["value"]) == ("tensor", "torch.float32", (1,), [1.0])
    with pytest.raises(AssertionError):
        g.reported(_AlwaysEqual(0.0))
    with pytest.raises(ValueError, match="rel and abs"):
        g.reported(1.0, rel=-1)


def test_the_reference_run_keeps_each_test_cells_results(tmp_path):
    from _course_support import EXAMPLE, isolated_env, write_example_lesson

    from course.reference import fingerprint, reference, reference_path

    write_example_lesson(tmp_path)
    env = isolated_env(tmp_path / "home")
    notebooks = reference(EXAMPLE, tmp_path, env)
    from lmlab.grading import decode_plain

    got = {gid: [(r["kind"], decode_plain(r["value"])) for r in rs] for gid, rs in notebooks[EXAMPLE].items()}
    assert got == {"test_square": [("equal", 9), ("equal", 16)], "test_mean": [("close", 2.0), ("close", 0.375)],
                   "test_q1": [], "test_q2": []}
    stored = reference_path(EXAMPLE, tmp_path)
    assert json.loads(stored.read_text())["fingerprint"] == fingerprint(EXAMPLE, tmp_path, env)
    assert fingerprint(EXAMPLE, tmp_path, {**env, "LMLAB_COURSE_VARIANT": "7"}) != fingerprint(EXAMPLE, tmp_path, env)
    stored.write_text("{cut sh")  # a file cut short is made again
    assert reference(EXAMPLE, tmp_path, env) == notebooks
