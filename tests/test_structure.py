"""The shape of the code: layers that do not import each other, functions short enough to read."""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "pacbayes_sft"
MAX_FUNCTION_LINES = 80


def _loaded_after_importing(package: str) -> set[str]:
    """Modules of pacbayes_sft loaded after importing every submodule of ``package`` in a fresh interpreter."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.startswith('pacbayes_sft'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "package,forbidden",
    [("pacbayes_sft.training", "pacbayes_sft.estimators"), ("pacbayes_sft.estimators", "pacbayes_sft.training")],
)
def test_training_and_estimators_do_not_import_each_other(package, forbidden):
    loaded = _loaded_after_importing(package)
    assert any(m.startswith(package + ".") for m in loaded)  # the walk really imported the package
    assert not [m for m in loaded if m == forbidden or m.startswith(forbidden + ".")]


def test_bounds_imports_no_torch():
    code = "import sys, pacbayes_sft.bounds; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def long_functions(root: Path, limit: int) -> list[str]:
    """``file:name (lines)`` for every function longer than ``limit`` lines (decorators excluded)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for fn in _functions(ast.parse(path.read_text())):
            n = fn.end_lineno - fn.lineno + 1
            if n > limit:
                out.append(f"{path.relative_to(root)}:{fn.name} ({n})")
    return out


def test_no_function_longer_than_the_limit():
    assert long_functions(PKG, MAX_FUNCTION_LINES) == []


def test_the_length_check_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def long():\n{body}\n")
    assert long_functions(tmp_path, MAX_FUNCTION_LINES) == [f"m.py:long ({MAX_FUNCTION_LINES + 1})"]


def test_every_subpackage_is_importable():
    import importlib

    import pacbayes_sft

    names = [m.name for m in pkgutil.walk_packages(pacbayes_sft.__path__, "pacbayes_sft.")]
    assert "pacbayes_sft.adapters" in names and "pacbayes_sft.lm.scoring" in names
    for name in names:
        importlib.import_module(name)


def test_every_name_in_the_readme_api_section_imports():
    import importlib
    import re

    readme = (PKG.parent / "README.md").read_text()
    api = readme.split("## Python API", 1)[1].split("## ", 1)[0]
    imports = re.findall(r"^from (pacbayes_sft[\w.]*) import (.+)$", api, flags=re.M)
    assert len(imports) >= 5
    for module, names in imports:
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(mod, name), f"{module}.{name}"


def test_docs_point_nowhere_outside_the_repository():
    import re

    root = PKG.parent
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "experiments" / "README.md"]
    for doc in docs:
        text = doc.read_text()
        assert not re.search(r"\.\./|shared/DESIGN", text), doc.name
        # every repository path a document names in backticks exists
        for path in re.findall(r"`((?:docs|experiments|pacbayes_sft|benchmarks|tests)/[\w./-]+)`", text):
            assert (root / path).exists() or "*" in path, f"{doc.name}: {path}"
