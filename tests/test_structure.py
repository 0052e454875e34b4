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
MAX_MODULE_LINES = 400
MAX_INNER_IMPORTS = 5

# The layers, lowest first: a module may import its own layer and the layers below it, never one
# above — at module level or inside a function. ``defaults`` and ``config`` are the floor.
LAYERS = [
    ("defaults", "config", "versions", "console", "lazy", "registry"),
    ("bounds", "stats"),
    ("data",),
    ("lm",),
    ("adapters",),
    ("posteriors",),
    ("training",),
    ("estimators",),
    ("certify",),
    ("demo",),
    ("sweep",),
    ("racing",),
    ("report",),
    ("validation", "cli"),
]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def own_imports(root: Path) -> dict[str, list[tuple[str, bool]]]:
    """Module → [(imported module of the package, inside a function?)], every import counted."""
    graph: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(root.rglob("*.py")):
        name = _module_name(path, root)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        inner = {id(n) for fn in _functions(tree) for n in ast.walk(fn) if n is not fn}
        edges = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges += [(t, id(node) in inner) for t in targets if t.split(".")[0] == root.name]
        graph[name] = edges
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    return -1


def layer_violations(graph: dict[str, list[tuple[str, bool]]]) -> list[str]:
    return [
        f"{m} imports {t}" + (" (inside a function)" if inner else "")
        for m, edges in graph.items()
        for t, inner in edges
        if _layer(t) > _layer(m)
    ]


def import_cycles(graph: dict[str, list[tuple[str, bool]]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (a package counts as its __init__)."""
    nodes = set(graph)

    def resolve(t: str) -> str | None:
        while t and t not in nodes:
            t = t.rpartition(".")[0]
        return t or None

    succ = {m: {r for t, _ in edges if (r := resolve(t)) and r != m} for m, edges in graph.items()}
    # a package's __init__ re-exporting its submodules is not a cycle: drop edges parent -> child
    succ = {m: {t for t in s if not t.startswith(m + ".")} for m, s in succ.items()}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return out


def test_every_module_sits_in_a_layer():
    assert [m for m in own_imports(PKG) if _layer(m) < 0 and m != "pacbayes_sft"] == []


def test_no_module_imports_a_layer_above_it():
    assert layer_violations(own_imports(PKG)) == []


def test_no_circle_of_imports_counting_function_level_ones():
    assert import_cycles(own_imports(PKG)) == []


def test_few_function_level_imports_of_the_package():
    inner = [(m, t) for m, edges in own_imports(PKG).items() for t, i in edges if i]
    assert len(inner) <= MAX_INNER_IMPORTS, inner


def test_no_module_longer_than_the_limit():
    long = [p.name for p in PKG.rglob("*.py") if len(p.read_text().splitlines()) > MAX_MODULE_LINES]
    assert long == []


def test_the_import_checks_can_fail(tmp_path):
    pkg = tmp_path / "pacbayes_sft"
    (pkg / "bounds").mkdir(parents=True)
    (pkg / "sweep").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bounds" / "__init__.py").write_text("def f():\n    from ..sweep import g\n")
    (pkg / "sweep" / "__init__.py").write_text("from ..bounds import f\n")
    graph = own_imports(pkg)
    assert graph["pacbayes_sft.bounds"] == [("pacbayes_sft.sweep", True)]
    assert layer_violations(graph) == ["pacbayes_sft.bounds imports pacbayes_sft.sweep (inside a function)"]
    assert import_cycles(graph) == [["pacbayes_sft.bounds", "pacbayes_sft.sweep"]]


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


@pytest.mark.parametrize(
    "module", ["pacbayes_sft.bounds", "pacbayes_sft.stats", "pacbayes_sft.racing", "pacbayes_sft.sweep.config", "pacbayes_sft.sweep.store", "pacbayes_sft.certify.config"]
)
def test_pure_layers_and_configs_import_no_torch(module):
    """bounds/ is numpy/scipy only, and reading a config or a run folder loads no model code."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
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
