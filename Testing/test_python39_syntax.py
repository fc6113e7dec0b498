"""The module and the core run on Slicer 5.6-5.8's Python 3.9: nothing newer may slip in.

vermin finds syntax, standard-library modules and keyword arguments newer than 3.9 (`match`,
`zip(strict=)`, tomllib, itertools.pairwise, ...). It does not judge `X | Y` unions
reliably (its heuristic also flags annotations that `from __future__ import annotations` keeps
as strings), so a small AST check covers the unions that Python 3.9 would evaluate: annotations
in a file without that import, annotations of a parameterNodeWrapper class (Slicer evaluates
them with typing.get_type_hints) and `|` between types anywhere else in code.
"""
from __future__ import annotations

import ast
import builtins
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "MyositisQMRI"
TYPE_NAMES = {name for name, value in vars(builtins).items() if isinstance(value, type)} | {
    "Path", "Optional", "Union", "Callable", "Sequence", "Iterable", "Mapping", "Any"}


def vermin_violations(path: Path) -> str:
    """vermin's report for `path` ('' when everything runs on Python 3.9)."""
    result = subprocess.run([sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())", "-t=3.9-", "--no-tips", "--violations",
                             "--no-make-paths-absolute", "--processes", "1", str(path)],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode not in (0, 1) or "Detecting python files" not in result.stdout:
        raise RuntimeError(f"vermin did not run: {result.stdout}{result.stderr}")
    return "" if result.returncode == 0 else result.stdout


def _is_type(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is None or isinstance(node.value, str)
    if isinstance(node, ast.Name):
        return node.id in TYPE_NAMES or node.id[:1].isupper()
    if isinstance(node, ast.Attribute):
        return node.attr[:1].isupper()
    if isinstance(node, ast.Subscript):
        return _is_type(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_type(node.left) and _is_type(node.right)
    return False


def _unions(node: ast.AST | None) -> list[ast.BinOp]:
    if node is None:
        return []
    return [n for n in ast.walk(node) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
            and _is_type(n.left) and _is_type(n.right)]


def runtime_unions(path: Path) -> list[str]:
    """`X | Y` between types that Python 3.9 would evaluate at run time: 'file:line: why'."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    postponed = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                    and any(a.name == "annotations" for a in n.names) for n in tree.body)
    annotations: set[int] = set()
    found = []
    for node in ast.walk(tree):
        annotated = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs + [node.args.vararg, node.args.kwarg]
            annotated = [a.annotation for a in arguments if a is not None] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotated = [node.annotation]
        for annotation in annotated:
            unions = _unions(annotation)
            annotations.update(id(u) for u in unions)
            if unions and not postponed:
                found.append(f"{path.name}:{annotation.lineno}: annotation evaluated without "
                             "'from __future__ import annotations'")
        if isinstance(node, ast.ClassDef) and any("parameterNodeWrapper" in ast.unparse(d) for d in node.decorator_list):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and _unions(item.annotation):
                    found.append(f"{path.name}:{item.lineno}: parameterNodeWrapper evaluates this annotation")
    for union in _unions(tree):
        if id(union) not in annotations:
            found.append(f"{path.name}:{union.lineno}: '{ast.unparse(union)}' is evaluated at run time")
    return sorted(set(found))


def test_module_and_core_need_nothing_newer_than_python_39():
    assert vermin_violations(SOURCES) == ""


def test_no_union_type_is_evaluated_at_run_time():
    found = [line for path in sorted(SOURCES.rglob("*.py")) for line in runtime_unions(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("code, feature", [
    ("match 1:\n    case 1:\n        pass\n", "pattern matching"),
    ("list(zip([1], [2], strict=True))\n", "zip(strict)"),
    ("from itertools import pairwise\n", "itertools.pairwise"),
    ("import tomllib\n", "tomllib"),
])
def test_an_injected_newer_construct_is_caught(tmp_path, code, feature):
    probe = tmp_path / "probe.py"
    probe.write_text(code, encoding="utf-8")
    assert feature in vermin_violations(probe)


def test_an_injected_runtime_union_is_caught(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from __future__ import annotations\nfrom pathlib import Path\n\n"
                     "def f(x: str | Path) -> int | None:\n    return isinstance(x, str | Path)\n\n"
                     "mask = 3 | 4\n", encoding="utf-8")
    assert runtime_unions(probe) == ["probe.py:5: 'str | Path' is evaluated at run time"]
    probe.write_text("def f(x: int | None):\n    pass\n", encoding="utf-8")
    assert runtime_unions(probe) == ["probe.py:1: annotation evaluated without 'from __future__ import annotations'"]
