"""The public API takes settings objects, not long keyword lists."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "pacbayes_sft"
MAX_PARAMETERS = 10


def long_signatures(root: Path, limit: int) -> list[str]:
    """``file:name (count)`` for every public function or public method of a public class whose
    parameters (``self``/``cls`` excepted) number more than ``limit``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                fns = [node]
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                fns = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            else:
                continue
            for fn in fns:
                if fn.name.startswith("_") and fn.name != "__init__":
                    continue
                a = fn.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
                if len(names) > limit:
                    out.append(f"{path.relative_to(root)}:{fn.name} ({len(names)})")
    return out


def test_no_public_function_takes_more_than_ten_parameters():
    assert long_signatures(PKG, MAX_PARAMETERS) == []


def test_the_signature_check_can_fail(tmp_path):
    args = ", ".join(f"a{i}" for i in range(MAX_PARAMETERS + 1))
    (tmp_path / "m.py").write_text(
        f"def wide({args}):\n    pass\n\n\ndef _private({args}):\n    pass\n\n\n"
        f"class Public:\n    def method(self, {args}):\n        pass\n"
    )
    assert long_signatures(tmp_path, MAX_PARAMETERS) == [f"m.py:wide ({MAX_PARAMETERS + 1})", f"m.py:method ({MAX_PARAMETERS + 1})"]
