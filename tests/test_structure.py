"""Two reading rules of issue 25, checked on every module of the package:
- a module's own-project dependencies are in its first lines: an import of `dopd` inside a function carries a
  comment saying why (an optional heavy dependency, or a real cycle);
- no function is longer than 60 lines unless a comment just above it says why it reads better whole.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dopd"
MAX_LINES = 60


def _files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _commented(lines: list[str], lineno: int) -> bool:
    """A `#` comment on line `lineno` (1-based) or above it, over a run of import and blank lines."""
    i = lineno - 1
    while i >= 0:
        line = lines[i].strip()
        if "#" in line:
            return True
        if i < lineno - 1 and line and not line.startswith(("import ", "from ")):
            return False
        i -= 1
    return False


def _says_why_first(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A comment between the `def` line and the function's first statement: the reason for all its local imports."""
    return any("#" in line for line in lines[fn.lineno:fn.body[0].lineno - 1])


def test_checked_files_exist() -> None:
    files = _files()
    names = {p.relative_to(PACKAGE).as_posix() for p in files}
    assert {"cli.py", "train/trainer.py", "distill/chunked.py", "hparams/parser.py", "model/loader.py"} <= names


def test_function_local_project_imports_say_why() -> None:
    bad = []
    for path in _files():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for fn in _functions(ast.parse(text)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("dopd")) \
                        or isinstance(node, ast.Import) and any(a.name.startswith("dopd") for a in node.names):
                    if not (_commented(lines, node.lineno) or _says_why_first(lines, fn)):
                        bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} in {fn.name}")
    assert not bad, "function-local imports of dopd without a comment saying why (move them to the top):\n" + \
        "\n".join(sorted(set(bad)))


def test_no_function_over_60_lines_without_a_reason() -> None:
    bad = []
    for path in _files():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for fn in _functions(ast.parse(text)):
            start = min([d.lineno for d in fn.decorator_list] + [fn.lineno])
            length = fn.end_lineno - start + 1
            if length > MAX_LINES and not _commented(lines, start - 1):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{fn.lineno} {fn.name}: {length} lines")
    assert not bad, f"functions over {MAX_LINES} lines (split them, or say above them why they read better " \
        "whole):\n" + "\n".join(bad)
