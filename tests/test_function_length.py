"""Short functions: none in the checked packages is over MAX_LINES lines (decorators, signature and docstring
included) unless a comment `# reads better whole: <why>` on the line above its `def` says why (issue 25 §7)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dopd"
PACKAGES = ("distill", "hparams")
MAX_LINES = 60
MARK = "# reads better whole:"


def long_functions(package: str) -> list[str]:
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), filename=str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - first + 1
            if length > MAX_LINES and not lines[first - 2].strip().startswith(MARK):
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_long_functions(package):
    assert long_functions(package) == [], f"split them, or say why one reads better whole ({MARK} ...)"
