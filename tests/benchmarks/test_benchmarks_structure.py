"""The shape of benchmarks/: its modules import one way (no two need each other, function-local imports included),
committed results live in results/ and not among the code, and no function is over 60 lines unless a comment on
its `def` line or the line above says why it reads better whole (a comment with the word "whole")."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
MAX_LINES = 60
CODE_SUFFIXES = {".py", ".sh", ".txt"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges() -> dict[str, set[str]]:
    """benchmarks module -> the benchmarks modules it imports (anywhere in the file)."""
    modules = {_module_name(p): p for p in BENCH.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = _resolve(name, path.name == "__init__.py", node)
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def test_benchmark_modules_import_one_way():
    graph = _edges()
    cycles = []
    for a, targets in graph.items():
        for b in targets:
            if a < b and a in graph.get(b, set()):
                cycles.append((a, b))
    # longer cycles: a depth-first search from every module
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    longer = sorted(m for m in graph if reaches(m, m, set()))
    assert not cycles and not longer, f"import cycles among benchmarks modules: {cycles or longer}"


def test_committed_results_are_not_among_the_benchmark_code():
    tracked = subprocess.run(["git", "ls-files", "benchmarks"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    data = [f for f in tracked if Path(f).suffix not in CODE_SUFFIXES]
    assert not data, f"results belong in results/, not benchmarks/: {data}"
    assert (REPO / "results" / "real_pair.jsonl").is_file()



def test_no_long_benchmark_function_without_a_reason():
    long = []
    for path in sorted(BENCH.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                comment = lines[node.lineno - 1].partition("#")[2] + lines[first - 2].partition("#")[2]
                said = "whole" in comment  # e.g. "# reads better whole: ..."
                if size > MAX_LINES and not said:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({size} lines)")
    assert not long, "functions over 60 lines with no comment saying why they read better whole:\n" + "\n".join(long)
