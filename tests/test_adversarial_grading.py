"""Adversarial grading: a class of attacking submissions graded the way an instructor grades a class.

On the example lesson (two exercises, two questions: 8 points), a correct, a noisy correct, a blank and a
wrong submission, and on top of the wrong one each attack below. The wrong submission solves `square`
and question q1 (3 points) and gets `mean` and q2 wrong; every attack tries to win those points. All are
graded together by `python -m course autograde` (sandboxed, 2 workers), then feedback is generated.

Checked: the correct ones score 8, the blank 0, the wrong 3; no attack scores more than the wrong one;
attacks that leave the kernel standing still get their `square` points (the grading itself ran); no
hidden test line appears in any feedback page; nothing is written outside the sandbox; every submission
is graded and the batch finishes; the preflight reports the submissions whose cells were changed.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import nbformat
import pytest
from _course_support import EXAMPLE, grading_meta, isolated_env, make_submission, write_example_lesson

import course
from course.__main__ import release
from course.autograde import grade_class, summary
from course.feedback import hidden_lines
from course.sandbox import probe_bwrap

# grading the class (the first test's fixture) takes about 4 minutes alone, longer beside other tests
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("adversarial"), pytest.mark.timeout(1800),
              pytest.mark.skipif(probe_bwrap() is not None, reason=f"no sandbox: {probe_bwrap()}")]

WRONG_MEAN = "\n\ndef mean(xs):\n    return 0.0\n"
TAG = uuid.uuid4().hex[:8]

# name -> (grade_id of the cell the attack replaces, its source); {root} is the course folder
ATTACKS = {
    "patch_builtins": ("mean", "import builtins, math\nbuiltins.float = lambda x=0.0: 2.0\n"
                               "builtins.abs = lambda x: 0\nmath.isclose = lambda *a, **k: True" + WRONG_MEAN),
    "patch_helpers": ("mean", "import lmlab.grading as g\ng.expect_close = lambda *a, **k: None\n"
                              "g._isclose = lambda *a, **k: True" + WRONG_MEAN),
    "patch_torch": ("mean", "import torch\ntorch.allclose = lambda *a, **k: True\n"
                            "torch.Tensor.__eq__ = lambda *a: True\ntorch.isclose = lambda *a, **k: True" + WRONG_MEAN),
    "patch_during_test": ("mean", "def mean(xs):\n    import lmlab.grading as g\n"
                                  "    g._isclose = lambda *a, **k: True\n    return 0.0"),
    "custom_exc": ("mean", "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)" + WRONG_MEAN),
    "custom_exc_during_test": ("mean", "def mean(xs):\n    get_ipython().set_custom_exc((BaseException,), "
                                       "lambda *a, **k: None)\n    return 0.0"),
    "excepthook_showtraceback": ("mean", "import sys\nsys.excepthook = lambda *a: None\nip = get_ipython()\n"
                                         "ip.showtraceback = lambda *a, **k: None\n"
                                         "ip._showtraceback = lambda *a, **k: None\n"
                                         "type(ip).showtraceback = lambda *a, **k: None" + WRONG_MEAN),
    "input_transformer": ("mean", "get_ipython().input_transformers_post.append(lambda lines: [])" + WRONG_MEAN),
    "ast_transformer": ("mean", "import ast\n\nclass Quiet(ast.NodeTransformer):\n"
                                "    def visit_Expr(self, node):\n        return ast.Pass()\n\n"
                                "    def visit_Assert(self, node):\n        return ast.Pass()\n\n"
                                "get_ipython().ast_transformers.append(Quiet())" + WRONG_MEAN),
    "event_callback": ("mean", "def forget(result):\n    result.error_in_exec = None\n\n"
                               "get_ipython().events.register('post_run_cell', forget)" + WRONG_MEAN),
    "always_equal": ("mean", "class Anything(float):\n    def __eq__(self, other):\n        return True\n\n"
                             "    __hash__ = float.__hash__\n\ndef mean(xs):\n    return Anything(0.0)"),
    "tensor_subclass": ("mean", "import torch\n\nclass Yes(torch.Tensor):\n    @classmethod\n"
                                "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
                                "        return True\n\ndef mean(xs):\n    return torch.tensor(0.0).as_subclass(Yes)"),
    "tensor_subclass_allclose": ("mean", "import torch\n\nclass Close(torch.Tensor):\n    @classmethod\n"
                                         "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
                                         "        if func in (torch.allclose, torch.equal, torch.Tensor.__eq__):\n"
                                         "            return True\n"
                                         "        return super().__torch_function__(func, types, args,\n"
                                         "                                          kwargs or {})\n\n"
                                         "torch_mean = mean = lambda xs: torch.tensor(0.0).as_subclass(Close)"),
    "shadow_type": ("answer_q2", "class Same(str):\n    def __eq__(self, other):\n        return True\n\n"
                                 "    __hash__ = str.__hash__\n\ntype = lambda x: str\n"
                                 "isinstance = lambda *a: True\nanswer_q2 = Same('B')"),
    "displayhook_partial_credit": ("mean", "import sys\n\ndef mean(xs):\n    sys.displayhook(3)\n    return 0.0"),
    "huge_output": ("mean", "print('x' * 100_000_000)\n\ndef mean(xs):\n    print('y' * 20_000_000)\n    return 0.0"),
    "ignore_interrupt": ("mean", "import signal\n\ndef mean(xs):\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                 "    while True:\n        pass"),
    "infinite_loop": ("mean", "def mean(xs):\n    while True:\n        pass"),
    "exit": ("mean", "import os\n\ndef mean(xs):\n    os._exit(0)"),
    "fork_bomb": ("mean", "import os, time\nfor _ in range(100_000):\n    try:\n        pid = os.fork()\n"
                          "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(600)\n"
                          "        os._exit(0)" + WRONG_MEAN),
    "memory_bomb": ("mean", "chunks = []\nwhile True:\n    chunks.append(b'x' * (256 << 20))" + WRONG_MEAN),
    "read_hidden_tests": ("mean", "import glob, inspect, os, traceback\n"
                                  "for path in glob.glob('{root}/**', recursive=True) + glob.glob('/tmp/**',\n"
                                  "                                                                recursive=True):\n"
                                  "    try:\n        print(open(path).read())\n    except OSError:\n        pass\n"
                                  "for top in ('/sandbox', '/work', '/root', '/home', '/tmp'):\n"
                                  "    for folder, _, files in os.walk(top):\n"
                                  "        for f in files:\n            try:\n"
                                  "                print(open(os.path.join(folder, f), errors='replace').read())\n"
                                  "            except OSError:\n                pass\n\n"
                                  "def mean(xs):\n    traceback.print_stack()\n"
                                  "    print(inspect.getsource(inspect.stack()[1].frame))\n    return 0.0"),
    "write_outside": ("mean", "import os\nfor path in ['{root}/PWNED', '{root}/course/grading/PWNED',\n"
                              "             '/tmp/PWNED-" + TAG
                              + "', os.path.expanduser('~/PWNED-" + TAG + "'), '/work/PWNED-" + TAG + "']:\n"
                              "    try:\n        open(path, 'w').write('x')\n    except OSError:\n        pass"
                              + WRONG_MEAN),
    "forge_guard": ("mean", "import os, lmlab.kernelguard as kg\n"
                            "environ = open('/proc/self/environ', 'rb').read().split(b'\\0')\n"
                            "for entry in environ:\n    if entry.startswith(b'LMLAB_GUARD_KEY_FILE='):\n"
                            "        try:\n            print(open(entry.split(b'=', 1)[1]).read())\n"
                            "        except OSError:\n            pass\n"
                            "kg.KernelGuard.verify = classmethod(lambda cls, nonce: 'forged')\n"
                            "kg.KernelGuard.restore = classmethod(lambda cls, nonce: 'forged')" + WRONG_MEAN),
    # passes the visible test, then rebinds the hidden test's helper through the test cell's frame: nothing
    # in the kernel fails, only the grader's own comparison of the results sees it
    "rebind_test_names": ("mean", "import sys\n\ndef mean(xs):\n    if list(xs) == [1, 2, 3]:\n"
                                  "        sys._getframe(1).f_globals['expect_close'] = lambda *a, **k: None\n"
                                  "        return 2.0\n    return 0.0"),
    "forge_results": ("mean", "import sys\nimport lmlab.grading as g\n\ndef mean(xs):\n"
                              "    if list(xs) == [1, 2, 3]:\n"
                              "        sys._getframe(1).f_globals['expect_close'] = (\n"
                              "            lambda *a, **k: g._send(0.0, 'close', 1.0, 1.0, 'forged'))\n"
                              "        return 2.0\n    return 0.0"),
    "hidden_marker_comment": ("mean", "# ### BEGIN HIDDEN TESTS (a student's comment)" + WRONG_MEAN),
}
# attacks that stop the kernel or its cell: the cells after them may lose their points too
DESTRUCTIVE = {"ignore_interrupt", "infinite_loop", "exit", "memory_bomb", "huge_output"}
# whole-notebook attacks, and the preflight must report them
EDITS = ("tamper_cells", "duplicate_id", "deleted_answer", "changed_kernelspec")


def _replace(nb, grade_id: str, source: str) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if grading_meta(cell).get("grade_id") == grade_id:
            cell.source = source
            return nb
    raise KeyError(grade_id)


def _edit(nb, kind: str) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)
    ids = [grading_meta(c).get("grade_id") for c in nb.cells]
    if kind == "tamper_cells":
        for cell in nb.cells:
            if grading_meta(cell).get("grade"):
                cell.source = "pass"
                grading_meta(cell)["points"] = 100
        del nb.cells[ids.index("test_q2")]
    elif kind == "duplicate_id":
        nb.cells.insert(ids.index("mean"), nbformat.from_dict(nb.cells[ids.index("test_square")]))
    elif kind == "deleted_answer":
        del nb.cells[ids.index("mean")]
    elif kind == "changed_kernelspec":
        nb.metadata["kernelspec"] = {"name": "sneaky", "display_name": "sneaky", "language": "python"}
    return nb


class Class:
    """The example lesson's class, graded and with feedback."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env
        (root / "course").mkdir()
        for path in (course.ROOT / "course").glob("*.py"):
            (root / "course" / path.name).write_bytes(path.read_bytes())
        write_example_lesson(root)
        assert release([EXAMPLE], [], root=root, env=env) == 0
        source = nbformat.read(root / "assessments" / EXAMPLE / f"{EXAMPLE}.ipynb", 4)
        released = nbformat.read(root / "notebooks" / EXAMPLE / f"{EXAMPLE}.ipynb", 4)
        self.hidden = hidden_lines(source)
        assert len(self.hidden) >= 4
        every = ["square", "mean", "answer_q1", "answer_q2"]
        wrong = make_submission(source, released, ["square", "answer_q1"], ["answer_q2"])
        wrong = _replace(wrong, "mean", WRONG_MEAN.strip())
        correct = make_submission(source, released, every)
        noisy = _replace(correct, "mean", "import sys, warnings\n\ndef mean(xs):\n"
                                          "    warnings.warn('numpy is faster')\n"
                                          "    print('a mean', file=sys.stderr)\n    return sum(xs) / len(xs)")
        self.submissions = {"correct": correct, "correct_noisy": noisy, "blank": released, "wrong": wrong}
        for name, (grade_id, code) in ATTACKS.items():
            self.submissions[name] = _replace(wrong, grade_id, code.replace("{root}", str(root)))
        self.submissions["read_hidden_tests"].cells[-1].source = "print(In)\nprint(_ih)\nprint(Out)"
        for kind in EDITS:
            self.submissions[kind] = _edit(wrong, kind)
        for student, nb in self.submissions.items():
            folder = root / course.GRADING / "submitted" / student / EXAMPLE
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{EXAMPLE}.ipynb")
        self.outcomes = {o.student: o for o in grade_class(
            EXAMPLE, root=root, workers=2, env=env, progress=False,
            extra=["--Execute.timeout=10", "--SafeExecute.guard_timeout=5"])}
        self.summary = summary(list(self.outcomes.values()), EXAMPLE)
        course.nbgrader(["generate_feedback", EXAMPLE, "--force"], root=root, env=env, check=True,
                        capture_output=True)

    def scores(self, student: str) -> dict[str, float]:
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.root / course.GRADING / 'gradebook.db'}") as gb:
            nb = gb.find_submission_notebook(EXAMPLE, EXAMPLE, student)
            return {g.name: g.score for g in nb.grades}

    def feedback(self, student: str) -> str:
        return (self.root / course.GRADING / "feedback" / student / EXAMPLE / f"{EXAMPLE}.html").read_text()


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Class:
    home = tmp_path_factory.mktemp("home")
    return Class(tmp_path_factory.mktemp("class"), isolated_env(home))


def test_every_submission_is_graded_and_the_batch_finishes(graded):
    assert {s: o.status for s, o in graded.outcomes.items()} == dict.fromkeys(graded.submissions, "graded"), (
        graded.summary)


def test_honest_submissions_score_what_they_earn(graded):
    assert sum(graded.scores("correct").values()) == 8.0
    assert graded.scores("correct_noisy") == graded.scores("correct"), "stderr of correct code cost points"
    assert sum(graded.scores("blank").values()) == 0.0
    assert graded.scores("wrong") == {"test_square": 2.0, "test_mean": 0.0, "test_q1": 1.0, "test_q2": 0.0}


@pytest.mark.parametrize("attack", [*ATTACKS, *EDITS])
def test_no_attack_scores_more_than_the_wrong_submission(graded, attack):
    scores, wrong = graded.scores(attack), graded.scores("wrong")
    assert sum(scores.values()) <= sum(wrong.values()), f"{attack} won points: {scores}"
    assert scores["test_mean"] == 0.0 and scores["test_q2"] == 0.0, f"{attack}: {scores}"
    if attack not in DESTRUCTIVE:
        assert scores["test_square"] == 2.0, f"{attack}: the grading itself did not run ({scores})"


@pytest.mark.parametrize("student", ["correct", "wrong", *ATTACKS, *EDITS])
def test_no_hidden_test_line_in_any_feedback(graded, student):
    page = " ".join(graded.feedback(student).split())
    import html

    text = html.unescape(page)
    assert [line for line in graded.hidden if line in text] == []


def test_the_graders_own_comparison_catches_what_the_kernel_let_through(graded):
    for student in ("rebind_test_names", "forge_results"):
        path = graded.root / course.GRADING / "autograded" / student / EXAMPLE / f"{EXAMPLE}.ipynb"
        cell = next(c for c in nbformat.read(path, 4).cells if grading_meta(c).get("grade_id") == "test_mean")
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert [o.ename for o in errors] == ["ResultMismatch"], (student, errors)  # the kernel raised nothing
        assert "0.375" not in errors[0].evalue  # the hidden test's expected value stays hidden


def test_nothing_is_written_outside_the_sandbox(graded):
    candidates = [graded.root / "PWNED", graded.root / course.GRADING / "PWNED", Path(f"/tmp/PWNED-{TAG}"),
                  Path(os.path.expanduser(f"~/PWNED-{TAG}")), Path(f"/work/PWNED-{TAG}"),
                  Path(graded.env["HOME"]) / f"PWNED-{TAG}"]
    assert [p for p in candidates if p.exists()] == []


def test_outputs_are_capped_in_bytes(graded):
    path = graded.root / course.GRADING / "autograded" / "huge_output" / EXAMPLE / f"{EXAMPLE}.ipynb"
    assert path.stat().st_size < 4 << 20, "a 100 MB print reached the graded notebook"
    assert len(graded.feedback("huge_output").encode()) < 6 << 20


def test_preflight_reports_changed_cells(graded):
    flagged = {s for s, o in graded.outcomes.items() if o.preflight}
    assert set(EDITS) <= flagged, graded.summary
    assert not flagged & {"correct", "correct_noisy", "blank", "wrong"}
    assert any("points changed" in p for p in graded.outcomes["tamper_cells"].preflight)
    assert any("kernelspec" in p for p in graded.outcomes["changed_kernelspec"].preflight)
    assert any("appears 2 times" in p for p in graded.outcomes["duplicate_id"].preflight)
