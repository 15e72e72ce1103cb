"""`python -m course new NN_name`: start a lesson that passes the course's pipeline tests at once.

It writes, for a lesson ``NN_name`` (two digits, an underscore, then lowercase words joined by ``_``):

- ``assessments/NN_name/NNa_name.ipynb``: the source notebook, with a title, a set-up cell that sizes the
  work by :func:`lmlab.grading.grading_mode` (the budget), a picture, a widget, one example exercise
  (answer cell, a core and an edge test cell with hidden tests, its result reported to the grader) and a
  question marker;
- ``assessments/NN_name/questions.toml`` (one concept question) and ``wrong_solutions.toml`` (three wrong
  answers of the exercise, which its tests catch);
- ``lmlab/lessons/name/`` (experiments, plots and widgets, thin over the experiments) and
  ``tests/test_lesson_name.py``, a test of that code against an independent reference;
- the lesson's row and section in ``course/syllabus.md``;

then renders the question and releases the student version into ``notebooks/NN_name/``. It refuses a
name that is not a valid folder name of this form, and a lesson, package or test file that exists, and
writes nothing then. course/authoring.md walks through the rest.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course import ROOT

NAME = re.compile(r"(?P<number>\d{2})_(?P<topic>[a-z][a-z0-9]*(?:_[a-z0-9]+)*)")
RESERVED = {"lessons", "grading", "example"}  # not a lesson package name


@dataclass(frozen=True)
class NewLesson:
    """Where ``new`` puts a lesson's parts, from its folder name (e.g. ``05_multitoken``)."""

    name: str  # the folder in assessments/ and notebooks/: 05_multitoken
    number: str  # 05
    topic: str  # multitoken: the package under lmlab/lessons/ and the notebook's name
    title: str  # shown in the notebook and the syllabus

    @property
    def notebook(self) -> str:
        return f"{self.number}a_{self.topic}.ipynb"

    @property
    def alias(self) -> str:
        """The short name the notebooks give the lesson package (`from lmlab.lessons import x as xl`)."""
        return "".join(part[0] for part in self.topic.split("_"))[:3] + "l"


def parse_name(name: str, title: str | None = None) -> NewLesson:
    """The lesson for folder name `name`; ValueError if it is not ``NN_words`` in lowercase ASCII."""
    if not isinstance(name, str):
        raise TypeError(f"a lesson name is a string like 05_multitoken, got {type(name).__name__}")
    match = NAME.fullmatch(name)
    if not match:
        raise ValueError(f"a lesson name is two digits, an underscore and lowercase words joined by '_' "
                         f"(letters and digits only), like 05_multitoken; got {name!r}")
    if match["number"] == "00" or match["topic"] in RESERVED:
        raise ValueError(f"{name!r} is reserved (00_ is the tests' example lesson; "
                         f"{', '.join(sorted(RESERVED))} are not lesson names): choose another")
    topic = match["topic"]
    return NewLesson(name, match["number"], topic, title or topic.replace("_", " ").capitalize())


def planned_paths(lesson: NewLesson, root: Path = ROOT) -> dict[str, Path]:
    """Every file or folder ``new`` creates, by role."""
    root = Path(root)
    return {"assessment": root / "assessments" / lesson.name, "student": root / "notebooks" / lesson.name,
            "package": root / "lmlab" / "lessons" / lesson.topic,
            "test": root / "tests" / f"test_lesson_{lesson.topic}.py"}


def conflicts(lesson: NewLesson, root: Path = ROOT) -> list[str]:
    """What already exists and would be overwritten: the lesson's folders, its package, its test file,
    another lesson with the same topic, or the lesson in the syllabus."""
    root = Path(root)
    found = [str(p.relative_to(root)) for p in planned_paths(lesson, root).values() if p.exists()]
    for folder in (root / "assessments").glob(f"*_{lesson.topic}"):
        if folder.name != lesson.name:
            found.append(f"assessments/{folder.name} (the same topic)")
    if f"notebooks/{lesson.name}/" in (root / "course" / "syllabus.md").read_text():
        found.append(f"course/syllabus.md already names notebooks/{lesson.name}/")
    return found


# --- what the lesson starts with ---------------------------------------------------------------------

def _cell(kind: str, source: str, cell_id: str, *, solution=False, grade=False, points=0, locked=True):
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    cell = make(source.strip("\n"))
    cell.id = cell_id.replace("_", "-")
    cell.metadata["nbgrader"] = {"grade": grade, "grade_id": cell_id, "locked": locked and not solution,
                                 "schema_version": 3, "solution": solution, "task": False}
    if grade:
        cell.metadata["nbgrader"]["points"] = points
    return cell


def source_notebook(lesson: NewLesson) -> nbformat.NotebookNode:
    """The starting source notebook: every part a lesson has, each small and correct."""
    t, a = lesson.topic, lesson.alias
    cells = [
        _cell("markdown", f"""
# Lesson {lesson.number}a · {lesson.title}

One paragraph on the question this notebook answers and why it matters. Then what it covers:

1. a measured picture (section 1), with a widget to explore it;
2. an exercise: perplexity from per-token losses (section 2);
3. a concept question.

Exercises: write code in the cells marked `# YOUR CODE HERE`, then run the test cell below it. Concept
questions: set `answer_q1` to one letter. Visible tests check your work as you go; hidden tests grade it.
""", "title"),
        _cell("code", f"""
%matplotlib inline
import math

import matplotlib.pyplot as plt
from IPython.display import display

from lmlab.grading import grading_mode
from lmlab.lessons import {t} as {a}  # this lesson's experiments, figures and widget

FAST = grading_mode()  # True while the notebook is being graded: smaller workloads, no widgets
VOCAB_SIZES = [2, 4, 8, 16] if FAST else [2, 4, 8, 16, 32, 64, 128, 256]  # the budget: <= 45 s graded, 120 s
print("grading mode" if FAST else "normal mode")
""", "setup"),
        _cell("markdown", """
## 1. A measured picture

A model that gives each of $V$ tokens probability $1/V$ has cross-entropy $\\log V$ nats per token on any
text (Cover & Thomas 2006, sec. 2.1): the cell measures it with PyTorch's cross-entropy on random tokens
and draws it against $V$.
""", "s1"),
        _cell("code", f"""
rows = {a}.uniform_losses(VOCAB_SIZES, n_tokens=1000, seed=0)  # [(V, measured nats per token)]
{a}.plot_uniform_losses(rows)
plt.show()
for V, loss in rows[:3]:
    print(f"V = {{V:3d}}: {{loss:.4f}} nats per token, log V = {{math.log(V):.4f}}")
assert all(abs(loss - math.log(V)) < 1e-4 for V, loss in rows), "the text says the loss is log V"
""", "s1_run"),
        _cell("markdown", """
### Try it

Move the slider: the picture shows the probabilities of a uniform model over $V$ tokens, and the text
under it its loss and perplexity.
""", "s1_widget_intro"),
        _cell("code", f"""
{a}.show_uniform(8)  # the widget's first picture
if not FAST:
    display({a}.uniform_explorer())
""", "s1_widget"),
        _cell("markdown", """
## 2. Perplexity

Perplexity is the exponential of the mean negative log-likelihood per token (Jelinek et al. 1977): a
model with perplexity $k$ is as unsure as one choosing uniformly among $k$ tokens.

### Exercise 1 (2 points): perplexity from per-token losses

Write `perplexity_from_nlls(nlls)`:

- `nlls`: a list of floats, the negative log-likelihood of each token in nats;
- return the perplexity $\\exp\\big(\\frac{1}{n}\\sum_i \\text{nll}_i\\big)$ as a float;
- raise `ValueError` when `nlls` is empty: no tokens, no perplexity.

Write it yourself: lmlab's `perplexity` (`lmlab.likelihood`) is not allowed, and the tests fail if your
function calls it. Graded in two parts: the main behaviour (1 point) and the empty list (1 point).
""", "ex1_text"),
        _cell("code", """
def perplexity_from_nlls(nlls):
    \"\"\"exp(mean of the per-token negative log-likelihoods), in nats; ValueError when empty.\"\"\"
    ### BEGIN SOLUTION
    if len(nlls) == 0:
        raise ValueError("no tokens: perplexity needs at least one negative log-likelihood")
    return math.exp(sum(nlls) / len(nlls))
    ### END SOLUTION
""", "ex_perplexity_from_nlls", solution=True),
        _cell("code", """
from lmlab.grading import exact, forbid, reported  # exact types; lmlab's own function not allowed
import math

from lmlab.likelihood import perplexity

with forbid(perplexity):
    _p = exact(perplexity_from_nlls([math.log(4)] * 3))
assert isinstance(_p, float), f"return a float, got a {type(_p).__name__}"
assert math.isclose(_p, 4.0, rel_tol=1e-9), f"three tokens of loss log 4 have perplexity 4, got {_p}"
with forbid(perplexity):
    _p = exact(perplexity_from_nlls([0.0, 2.0]))
assert math.isclose(_p, math.e), \\
    f"the mean loss of [0, 2] is 1, so the perplexity is e = 2.718..., got {_p} (the exponential of the mean, " \\
    "not the mean of the exponentials)"
### BEGIN HIDDEN TESTS
_nlls = [0.5, 1.25, 3.0, 0.25]
with forbid(perplexity):
    _p = exact(perplexity_from_nlls(_nlls))
assert math.isclose(reported(_p, "the perplexity of four tokens", rel=2e-9), math.exp(1.25), rel_tol=1e-9), \\
    f"four tokens with mean loss 1.25: expected exp(1.25) = {math.exp(1.25):.6f}, got {_p}"
### END HIDDEN TESTS
""", "test_perplexity_from_nlls", grade=True, points=1),
        _cell("code", """
from lmlab.grading import exact, forbid  # exact types; lmlab's own function not allowed
import math

from lmlab.likelihood import perplexity

try:
    with forbid(perplexity):
        exact(perplexity_from_nlls([]))
except ValueError:
    pass
except ZeroDivisionError:
    raise AssertionError("an empty list has no mean: raise ValueError, do not divide by 0") from None
else:
    raise AssertionError("an empty list has no perplexity: raise ValueError")
### BEGIN HIDDEN TESTS
with forbid(perplexity):
    _p = exact(perplexity_from_nlls([2.5]))
assert math.isclose(_p, math.exp(2.5), rel_tol=1e-9), f"one token of loss 2.5: expected exp(2.5), got {_p}"
### END HIDDEN TESTS
""", "test_perplexity_from_nlls_edge", grade=True, points=1),
        _cell("markdown", """
### Check your understanding

<!-- questions: q1 -->
""", "q_s2"),
        _cell("markdown", """
## Summary

- A uniform model over $V$ tokens has cross-entropy $\\log V$ nats per token and perplexity $V$.
- Perplexity is the exponential of the mean per-token loss, not the mean of per-token exponentials.

## References

- Cover, T. M., & Thomas, J. A. (2006). *Elements of Information Theory*, 2nd ed., Wiley.
- Jelinek, F., Mercer, R. L., Bahl, L. R., & Baker, J. K. (1977). Perplexity — a measure of the difficulty
  of speech recognition tasks. *The Journal of the Acoustical Society of America*, 62(S1), S63.
""", "end"),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


QUESTIONS = '''
# Concept questions of lesson {name} (never given to students). See course/authoring.md.

[[question]]
id = "q1"
concept = "perplexity"
points = 1
text = """
A model's losses on a four-token text are 0, 0, 0 and 4 nats. A teammate averages the per-token
perplexities, (1 + 1 + 1 + e^4) / 4, and gets about 14.4. What is the text's perplexity?
"""
answer = "C"
explanation = """Perplexity is exp of the mean per-token loss (Jelinek et al. 1977): the mean is 1 nat, so \
the perplexity is e, about 2.72. Averaging per-token exponentials overweights the one hard token."""

[question.options]
A = "About 14.4, the teammate's mean"
B = "4, the largest per-token loss"
C = "About 2.72, which is e"
D = "1, since three tokens cost nothing"

[question.why_not]
A = "The mean of exponentials is at least the exponential of the mean (Jensen's inequality): it overstates it."
B = "4 is a loss in nats, not a perplexity, and the text's perplexity averages all four tokens."
D = "One token with loss 4 raises the mean loss to 1 nat; a perplexity of 1 needs every loss to be 0."
'''

WRONG = '''
# Wrong answers of the lesson's exercises (never given to students): `python -m course wrong {name}`
# checks that the tests catch every one. See course/authoring.md.

[[wrong]]
exercise = "ex_perplexity_from_nlls"
name = "mean of the exponentials"
mistake = "averages exp(nll) token by token: Jensen's inequality makes it too large"
code = """
def perplexity_from_nlls(nlls):
    if not nlls:
        raise ValueError("empty")
    return sum(math.exp(x) for x in nlls) / len(nlls)
"""

[[wrong]]
exercise = "ex_perplexity_from_nlls"
name = "the mean loss"
mistake = "returns the mean negative log-likelihood and forgets the exponential"
code = """
def perplexity_from_nlls(nlls):
    if not nlls:
        raise ValueError("empty")
    return sum(nlls) / len(nlls)
"""

[[wrong]]
exercise = "ex_perplexity_from_nlls"
name = "no check of the empty list"
mistake = "divides by len(nlls) without a check: ZeroDivisionError instead of ValueError"
code = """
def perplexity_from_nlls(nlls):
    return math.exp(sum(nlls) / len(nlls))
"""

[[wrong]]
exercise = "ex_perplexity_from_nlls"
name = "the exponential of the sum"
mistake = "exponentiates the total loss, not the mean: the perplexity of the whole text as one event"
code = """
def perplexity_from_nlls(nlls):
    if not nlls:
        raise ValueError("empty")
    return math.exp(sum(nlls))
"""
'''

PACKAGE = {
    "__init__.py": '''"""Lesson {number}, "{title}": its experiments, figures and widgets, in one namespace.

``from lmlab.lessons import {topic} as {alias}``, then ``{alias}.uniform_losses(...)``,
``{alias}.plot_uniform_losses(...)``, ``{alias}.uniform_explorer()``.
"""

from lmlab.lessons.{topic}.experiments import *  # noqa: F403
from lmlab.lessons.{topic}.experiments import __all__ as _experiments
from lmlab.lessons.{topic}.plots import *  # noqa: F403
from lmlab.lessons.{topic}.plots import __all__ as _plots
from lmlab.lessons.{topic}.widgets import *  # noqa: F403
from lmlab.lessons.{topic}.widgets import __all__ as _widgets

__all__ = [*_experiments, *_plots, *_widgets]
''',
    "experiments.py": '''"""Lesson {number}'s experiments: the numbers its notebooks show, computed here and tested in
tests/test_lesson_{topic}.py."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["uniform_losses"]


def uniform_losses(vocab_sizes: Sequence[int], *, n_tokens: int = 1000, seed: int = 0) -> list[tuple[int, float]]:
    """The cross-entropy (nats per token) of a uniform model over each vocabulary size V, measured on
    ``n_tokens`` random tokens (drawn with ``seed``): ``[(V, loss)]``; each loss is log V."""
    if not vocab_sizes or any(not isinstance(v, int) or v < 1 for v in vocab_sizes):
        raise ValueError(f"vocab_sizes must be positive integers, got {{list(vocab_sizes)!r}}")
    if not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens must be a positive integer, got {{n_tokens!r}}")
    g = torch.Generator().manual_seed(seed)
    rows = []
    for V in vocab_sizes:
        targets = torch.randint(V, (n_tokens,), generator=g)  # (n_tokens,)
        logits = torch.zeros(n_tokens, V)  # (n_tokens, V): every token equally likely
        rows.append((V, F.cross_entropy(logits, targets).item()))
    return rows
''',
    "plots.py": '''"""Lesson {number}'s figures, drawn with matplotlib from the experiments' results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["plot_uniform_losses"]


def plot_uniform_losses(rows: Sequence[tuple[int, float]], ax: Any = None) -> Any:
    """The measured loss of a uniform model against its vocabulary size V (log axis), with log V."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    sizes = np.array([V for V, _ in rows], dtype=float)
    ax.plot(sizes, np.log(sizes), color="0.7", lw=3, label="log V")
    ax.plot(sizes, [loss for _, loss in rows], "o", label="measured")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="vocabulary size V", ylabel="nats per token", title="a uniform model's loss")
    ax.legend()
    return ax
''',
    "widgets.py": '''"""Lesson {number}'s widget, thin over the experiments: :func:`uniform_explorer` redraws
:func:`show_uniform` when its slider is released."""

from __future__ import annotations

import math
from typing import Any

from lmlab.widgets import require_ipywidgets

__all__ = ["show_uniform", "uniform_explorer"]


def show_uniform(vocab_size: int) -> None:
    """The probabilities of a uniform model over ``vocab_size`` tokens, with its loss and perplexity."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.bar(range(vocab_size), [1 / vocab_size] * vocab_size)
    ax.set(xlabel="token", ylabel="probability", ylim=(0, 1), title=f"uniform over V = {{vocab_size}}")
    plt.show()
    print(f"loss log V = {{math.log(vocab_size):.3f}} nats per token, perplexity {{vocab_size}}")


def uniform_explorer() -> Any:
    """A slider for V: :func:`show_uniform`, redrawn when it is released."""
    w = require_ipywidgets()
    return w.interactive(show_uniform, vocab_size=w.IntSlider(value=8, min=2, max=64, description="V",
                                                              continuous_update=False))
''',
}

TEST = '''"""Lesson {number}'s code (lmlab/lessons/{topic}/) against independent references."""

import math

import pytest

from lmlab.lessons import {topic} as {alias}


def test_uniform_losses_are_log_v():
    rows = {alias}.uniform_losses([1, 2, 5, 64], n_tokens=200, seed=3)
    assert [V for V, _ in rows] == [1, 2, 5, 64]
    for V, loss in rows:
        assert loss == pytest.approx(math.log(V), abs=1e-6)  # the exact formula, not PyTorch's own number


def test_uniform_losses_is_deterministic_and_checks_its_input():
    assert {alias}.uniform_losses([3], seed=1) == {alias}.uniform_losses([3], seed=1)
    for bad in ([], [0], [2.5]):
        with pytest.raises(ValueError, match="vocab_sizes"):
            {alias}.uniform_losses(bad)
    with pytest.raises(ValueError, match="n_tokens"):
        {alias}.uniform_losses([2], n_tokens=0)


def test_the_picture_and_the_widget_draw(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    ax = {alias}.plot_uniform_losses({alias}.uniform_losses([2, 4]))
    assert len(ax.lines) == 2
    widget = {alias}.uniform_explorer()
    assert widget.children[0].value == 8
'''

SYLLABUS_SECTION = """
## {number} {words} — {title}

`notebooks/{name}/`: one notebook, about 30 minutes, with 1 code exercise (2 points) and 1 concept question
(1 point), 3 points in all. (Written by `python -m course new`: replace this paragraph and the list.)

**{number}a {words}** — after it you can:

- say why a uniform model over V tokens has loss log V and perplexity V;
- compute a perplexity from per-token losses (exercise: perplexity from per-token losses).
"""


def _syllabus_with(text: str, lesson: NewLesson) -> str:
    """The syllabus with the lesson's row added to the table of lessons and its section at the end."""
    words = lesson.topic.replace("_", " ")
    row = f"| {lesson.number} {words} | {lesson.title} | about 30 minutes | draft |"
    lines = text.rstrip("\n").split("\n")
    table = [i for i, line in enumerate(lines) if line.startswith("| ") and line.endswith("|")]
    if not table:
        raise ValueError("course/syllabus.md has no table of lessons (rows starting with '| ') to add a row to")
    lines.insert(table[-1] + 1, row)
    section = SYLLABUS_SECTION.format(number=lesson.number, words=words, title=lesson.title, name=lesson.name)
    return "\n".join(lines) + "\n" + section


def create(name: str, title: str | None = None, root: Path = ROOT, release_it: bool = True,
           env: dict[str, str] | None = None) -> list[Path]:
    """Create lesson `name` under `root` (see the module's docstring); returns the paths written.

    Writes nothing when the name is invalid or a part exists (ValueError saying which). With
    `release_it`, renders the question and releases the student notebook with nbgrader (RuntimeError if
    that fails; the lesson's files then stay, to be fixed and released again); `env` is nbgrader's
    environment (default: this process's)."""
    root = Path(root)
    lesson = parse_name(name, title)
    existing = conflicts(lesson, root)
    if existing:
        raise ValueError(f"lesson {name!r} would overwrite what exists: {', '.join(existing)}; choose another name")
    paths = planned_paths(lesson, root)
    fields = {"name": lesson.name, "number": lesson.number, "topic": lesson.topic, "title": lesson.title,
              "alias": lesson.alias}
    syllabus = root / "course" / "syllabus.md"
    new_syllabus = _syllabus_with(syllabus.read_text(), lesson)
    written: list[Path] = []
    try:
        folder = paths["assessment"]
        folder.mkdir(parents=True)
        written.append(folder)
        nbformat.write(source_notebook(lesson), folder / lesson.notebook)
        (folder / "questions.toml").write_text(QUESTIONS.format(**fields).lstrip(), encoding="utf-8")
        (folder / "wrong_solutions.toml").write_text(WRONG.format(**fields).lstrip(), encoding="utf-8")
        package = paths["package"]
        package.mkdir(parents=True)
        written.append(package)
        for file, template in PACKAGE.items():
            (package / file).write_text(template.format(**fields), encoding="utf-8")
        paths["test"].write_text(TEST.format(**fields), encoding="utf-8")
        written.append(paths["test"])
    except BaseException:
        for path in written:  # nothing half-made stays behind
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        raise
    syllabus.write_text(new_syllabus, encoding="utf-8")
    written.append(syllabus)
    if release_it:
        from course.__main__ import questions, release

        if questions(lesson.name, check=False, root=root) != 0:
            raise RuntimeError(f"rendering the questions of {lesson.name} failed (see above)")
        if release([lesson.name], [], root=root, **({} if env is None else {"env": env})) != 0:
            raise RuntimeError(f"nbgrader could not release {lesson.name}: see its output above")
        written.append(paths["student"])
    return written

