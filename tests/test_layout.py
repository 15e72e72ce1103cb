"""The package's layout rules, read from the source with ast (README, "Architecture").

- the library never imports lesson code (``lmlab.lessons``);
- no module imports another module's ``_private`` name;
- lesson packages never import each other;
- models import no data, training, generation, likelihood or plotting code, and text code imports no model
  (both may import ``lmlab.lm``, ``lmlab.checks`` and the other small shared modules);
- no graded exercise's answer ships in the package under the exercise's name.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lmlab"

# prefixes a models module may not import, and a text module may not import
MODELS_MAY_NOT = ("lmlab.text", "lmlab.train", "lmlab.generation", "lmlab.likelihood", "lmlab.plots",
                  "lmlab.widgets", "lmlab.lessons", "lmlab.bench", "lmlab.cli")  # fmt: skip
TEXT_MAY_NOT = ("lmlab.models", "lmlab.train", "lmlab.generation", "lmlab.likelihood", "lmlab.plots",
                "lmlab.widgets", "lmlab.lessons", "lmlab.bench", "lmlab.cli")  # fmt: skip
SHARED_MAY_NOT = ("lmlab.models", "lmlab.text", "lmlab.train", "lmlab.generation", "lmlab.likelihood",
                  "lmlab.plots", "lmlab.widgets", "lmlab.lessons", "lmlab.bench", "lmlab.cli")  # fmt: skip
SHARED = ("lmlab.lm", "lmlab.checks", "lmlab.device", "lmlab.fileio", "lmlab.grading", "lmlab.results")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "lmlab.generation.search"
    target: str  # the module imported from, e.g. "lmlab.generation.engine"
    name: str | None  # the name imported from it (None for "import x")
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[Import]:
    """Every import in ``source``, at any depth (also inside functions), with relative imports resolved."""
    out = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [Import(module, a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                out.append(Import(module, base, a.name, node.lineno))
                # "from lmlab import decoding" imports the module lmlab.decoding
                out.append(Import(module, f"{base}.{a.name}", None, node.lineno))
    return out


def private_attribute_uses(source: str, module: str) -> list[str]:
    """``alias._name`` where ``alias`` is an lmlab module bound by ``import lmlab.x as alias`` or
    ``from lmlab import x``."""
    tree = ast.parse(source)
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name.startswith("lmlab") and a.asname}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmlab"):
            aliases |= {a.asname or a.name for a in node.names}
    return [
        f"{module}:{node.lineno} {node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
        and node.attr.startswith("_") and not node.attr.startswith("__")
    ]


def within(target: str, prefixes: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def lesson_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["lmlab", "lessons"] else None


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """The broken rules of a package given as ``{module name: (source, is_package)}``."""
    bad = []
    for module, (source, is_package) in sources.items():
        for imp in imports_of(source, module, is_package):
            if not imp.target.startswith("lmlab"):
                continue
            where = f"{module}:{imp.line} imports {imp.target}" + (f".{imp.name}" if imp.name else "")
            if imp.name and imp.name.startswith("_") and not imp.name.startswith("__") and imp.target != module:
                bad.append(f"{where}: a private name of another module")
            lesson, target_lesson = lesson_of(module), lesson_of(imp.target)
            if lesson is None and within(imp.target, ("lmlab.lessons",)) and module != "lmlab.lessons":
                bad.append(f"{where}: library code imports lesson code")
            if lesson is not None and target_lesson is not None and target_lesson != lesson:
                bad.append(f"{where}: one lesson imports another")
            if within(module, ("lmlab.models",)) and within(imp.target, MODELS_MAY_NOT):
                bad.append(f"{where}: a model imports data, training, generation or plotting code")
            if within(module, ("lmlab.text",)) and within(imp.target, TEXT_MAY_NOT):
                bad.append(f"{where}: text code imports a model or what sits on models")
            if within(module, SHARED) and within(imp.target, SHARED_MAY_NOT):
                bad.append(f"{where}: a shared module imports a side of the library")
        bad += [f"{u}: a private name of another module" for u in private_attribute_uses(source, module)]
    return sorted(set(bad))


def package_sources() -> dict[str, tuple[str, bool]]:
    return {
        module_name(p, ROOT): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for p in sorted(PACKAGE.rglob("*.py"))
    }


def test_the_package_keeps_its_import_rules():
    assert len(package_sources()) > 20  # the walk found the package
    assert violations(package_sources()) == []


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("lmlab.train", "from lmlab.lessons.objective import lr_sweep\n", "library code imports lesson code"),
        ("lmlab.train", "def f():\n    import lmlab.lessons.decoding\n", "library code imports lesson code"),
        ("lmlab.likelihood", "from lmlab.generation.engine import _vocab_size\n", "private name"),
        ("lmlab.likelihood", "from lmlab.generation import engine\nengine._vocab_size(1)\n", "private name"),
        ("lmlab.lessons.decoding.experiments", "from lmlab.lessons.objective import lr_sweep\n",
         "one lesson imports another"),
        ("lmlab.lessons.decoding.experiments", "from ..objective.plots import plot_lr_sweep\n",
         "one lesson imports another"),
        ("lmlab.models.gpt", "from lmlab.text.data import TokenData\n", "a model imports"),
        ("lmlab.models.gpt", "from lmlab.plots import new_axes\n", "a model imports"),
        ("lmlab.text.data", "from lmlab.models.gpt import GPT\n", "text code imports a model"),
        ("lmlab.lm", "from lmlab.models import GPT\n", "a shared module imports"),
    ],
)  # fmt: skip
def test_each_rule_catches_its_break(module, source, rule):
    """The checker is not vacuous: a module that breaks a rule is reported, by that rule."""
    found = violations({module: (source, False)})
    assert found and all(rule in v for v in found), found


def test_allowed_imports_pass():
    ok = {
        "lmlab.lessons.decoding.widgets": ("from lmlab.lessons.decoding.plots import plot_draws\n", False),
        "lmlab.generation.search": ("from lmlab.generation.engine import start\nfrom lmlab.lm import lm_loss\n", False),
        "lmlab.models.gpt": ("from lmlab.lm import LMOutput\nfrom lmlab.models.cache import KVCache\n", False),
        "lmlab.text.synthetic": ("from lmlab.lm import LMOutput\nfrom lmlab.text.data import TokenData\n", False),
    }
    assert violations(ok) == []


# ---------------------------------------------------------------------------------------------- graded answers
def exercise_names() -> dict[str, str]:
    """{function or class name: notebook} of every graded exercise's solution cell in assessments/."""
    names = {}
    for path in sorted((ROOT / "assessments").glob("*/*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and meta.get("solution") and "BEGIN SOLUTION" in source:
                for name in re.findall(r"^(?:def|class) (\w+)", source, flags=re.M):
                    names[name] = path.name
    return names


def defined_names() -> dict[str, str]:
    """{name: module} of every function and class defined anywhere in the package (any depth)."""
    out = {}
    for module, (source, _) in package_sources().items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                out.setdefault(node.name, module)
            elif isinstance(node, ast.Assign):  # an alias such as `bigram_mle = fit_bigram`
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        out.setdefault(t.id, module)
    return out


def test_the_answer_check_sees_definitions_and_aliases():
    assert defined_names()["greedy"] == "lmlab.generation.search"
    assert defined_names()["GPT"] == "lmlab.models.gpt"
    assert "apply_warp" in defined_names()


def test_no_graded_answer_ships_in_the_package():
    answers = exercise_names()
    assert {"sequence_log_prob", "bigram_mle", "greedy_decode", "beam_step", "top_p_filter"} <= set(answers)
    defined = defined_names()
    shipped = {name: (answers[name], defined[name]) for name in answers if name in defined}
    assert shipped == {}, f"exercise answers defined in lmlab (name: (notebook, module)): {shipped}"


def test_every_top_level_name_loads_from_its_module():
    import importlib

    import lmlab

    for name in lmlab.__all__:
        value = getattr(lmlab, name)
        if name != "__version__":
            assert value is getattr(importlib.import_module(lmlab._HOME[name]), name)
    assert set(lmlab.__all__) <= set(dir(lmlab))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        lmlab.nothing  # noqa: B018


def test_the_graders_process_does_not_import_torch():
    """Every `nbgrader autograde` (one per submission) loads course/nbgrader_config.py, which imports the
    sandboxed executor; importing torch there would add seconds to each submission."""
    import subprocess
    import sys

    code = ("import sys\nimport course.execute, course.reference, course.feedback, course.sandbox\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout[:500]
