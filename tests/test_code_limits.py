"""The project's size limits: no file in hellopack/ over 400 lines, no function with more than 8 parameters.

Parameters count as written: self/cls are not counted, ``*args`` and ``**kwargs`` count one each.
Group settings in a frozen dataclass instead of growing a signature; split a module by job
instead of growing a file. The failure lists every offender.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "hellopack"
MAX_LINES = 400
MAX_PARAMS = 8


def _files() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def count_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [p.arg for p in (*a.posonlyargs, *a.args)]
    n = len(names) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    return n - 1 if names and names[0] in ("self", "cls") else n


def long_files() -> list[str]:
    out = []
    for path in _files():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            out.append(f"{path.relative_to(ROOT.parent)}: {n} lines")
    return out


def wide_functions() -> list[str]:
    out = []
    for path in _files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = count_params(node)
                if n > MAX_PARAMS:
                    out.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}: {n} parameters")
    return out


def test_no_file_in_hellopack_is_over_400_lines() -> None:
    offenders = long_files()
    assert not offenders, f"files over {MAX_LINES} lines (split them by job):\n  " + "\n  ".join(offenders)


def test_no_function_in_hellopack_takes_more_than_8_parameters() -> None:
    offenders = wide_functions()
    assert not offenders, (f"functions with more than {MAX_PARAMS} parameters (group them in a frozen "
                           "dataclass):\n  " + "\n  ".join(offenders))


def test_the_parameter_count_follows_the_rule() -> None:
    tree = ast.parse("def f(self, a, /, b, *args, c, **kw): pass\n"
                     "def g(cls, a): pass\n"
                     "def h(a, b=1, *, c=2): pass\n")
    assert [count_params(fn) for fn in tree.body] == [5, 1, 3]  # type: ignore[arg-type]
