"""The layers of `src/dopd` import one way, and no modules import each other in a cycle.

Layer order (a module may import from its own layer and from layers to its left, never to its right):

    dopd (the bare package: __version__)
      -> hparams
      -> data | distill          (siblings: neither imports the other)
      -> model
      -> annotate | eval         (siblings: neither imports the other)
      -> train
      -> cli                     (dopd.cli, dopd.__main__, dopd.env, dopd.cli_help, dopd.verbosity: `dopd-cli`)

`data` is below `model`: data code that needs a model takes a `VisionSpec` / adapter argument, and whoever loads
the adapter (model layer or above) passes it in. `distill` is pure tensors and needs neither data nor models.
`annotate` and `eval` each use models and data but not each other; `train` uses `eval` (evaluation during
training), `cli` dispatches to every layer.

What counts, for the layer rule: every `import` / `from ... import` in every file, at module level, inside
functions, and under `if TYPE_CHECKING:` alike. TYPE_CHECKING imports get no exemption: a type hint naming an upper
layer's class is a dependency on that layer too (use a protocol from the lower layer instead, as `VisionSpec`
does). Imports by string (`importlib.import_module(...)`, `dopd.model`'s lazy `__getattr__` table) are not parsed;
they stay inside one package.

What counts, for the cycle rule: module-level imports and function-local ones alike, but not those under `if
TYPE_CHECKING:` (they never run; they are how two modules of one layer may name each other's types). A deferred
import that closes a cycle still makes two modules need each other; deferring hides that from the interpreter, not
from the design (the registry <-> adapters knot of `dopd.model` was such a cycle). A package's implicit import of its
parents (`dopd.data.views` needs `dopd.data` initialised first) is not an edge; `from pkg import name` is an edge to
`pkg.name` when that is a module, else to `pkg` (its `__init__`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "dopd"

# layer name -> rank; equal ranks are siblings, which must not import each other
LAYER_RANK = {"base": 0, "hparams": 1, "data": 2, "distill": 2, "model": 3, "annotate": 4, "eval": 4, "train": 5,
              "cli": 6}
TOP_LEVEL_MODULES = {"dopd.cli": "cli", "dopd.__main__": "cli", "dopd.env": "cli", "dopd.cli_help": "cli",
                     "dopd.verbosity": "cli", "dopd": "base"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (resolved: a module or package of src/dopd)
    line: int
    where: str  # "module" (runs at import), "function" (runs at call time) or "type_checking" (never runs)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, where: str):
    """Yield (import node, where) for every import under `node`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, where
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, "type_checking" if where == "type_checking" else "function")
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), "type_checking")
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), where)
        else:
            yield from _walk(child, where)


def _resolve(module: str, target: str, modules: dict[str, Path]) -> str:
    """The deepest module of src/dopd that `target` names (a dotted path may end in a class or function)."""
    parts = target.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    if not parts:
        raise AssertionError(f"{module}: cannot resolve the import of {target!r} inside src/dopd")
    return ".".join(parts)


def collect_imports() -> list[Import]:
    modules = _modules()
    found: list[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, where in _walk(tree, "module"):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                if prefix != "dopd" and not prefix.startswith("dopd."):
                    continue
                # `from pkg import sub` imports the module pkg.sub; `from pkg import name` imports pkg
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
            for target in targets:
                if target != "dopd" and not target.startswith("dopd."):
                    continue
                found.append(Import(name, _resolve(name, target, modules), node.lineno, where))
    return found


def layer_of(module: str) -> str:
    if module in TOP_LEVEL_MODULES:
        return TOP_LEVEL_MODULES[module]
    layer = module.split(".")[1]
    assert layer in LAYER_RANK, f"{module}: package `dopd.{layer}` has no layer; add it to LAYER_RANK in this test"
    return layer


def layer_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src == dst or LAYER_RANK[dst] < LAYER_RANK[src]:
            continue
        kind = "sibling" if LAYER_RANK[dst] == LAYER_RANK[src] else "upward"
        bad.append(f"{imp.source}:{imp.line} imports {imp.target}: {kind} {src} -> {dst} ({imp.where})")
    return sorted(set(bad))


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components (more than one module, or a module importing itself) of the graph of imports
    that run (module-level and function-local), each as a sorted list of module names."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.where != "type_checking":
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan, recursive: the graph has a few hundred nodes
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_parser_sees_imports_everywhere() -> None:
    """Guard against the checks passing vacuously: function-local and module-level imports are both found, and an
    import under `if TYPE_CHECKING:` is classified as such."""
    imports = collect_imports()
    assert len(imports) > 100
    assert {"module", "function"} <= {i.where for i in imports}
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dopd.train import x\n"
                     "def f():\n    import dopd.model\nimport dopd.data\n")
    assert [w for _, w in _walk(tree, "module")] == ["module", "type_checking", "function", "module"]
    assert {layer_of(i.source) for i in imports} >= {"data", "model", "train", "eval", "annotate", "cli"}


def test_imports_follow_the_layer_order() -> None:
    bad = layer_violations(collect_imports())
    assert not bad, "imports against the layer order (see this test's docstring):\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    cycles = import_cycles(collect_imports())
    assert not cycles, "modules importing each other (function-local imports count):\n" + "\n".join(" <-> ".join(c) for c in cycles)
