"""Structure rules of the package, read from its source: no import cycle, short inference code.

The import graph has an edge ``a -> b`` for every ``import`` / ``from ... import``
of a vosjax module ``b`` anywhere in module ``a`` (at module level or inside a
function: a deferred import is still a dependency), plus the implicit edges
to the parent packages of what it imports (importing ``vosjax.x.y`` runs
``vosjax/x/__init__.py`` first), except a module's own parents. ``if TYPE_CHECKING:`` blocks are left out
(they never run).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "vosjax"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """vosjax modules that module ``name`` imports (resolved to modules that exist)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def resolve(target: str) -> str | None:
        while target and target not in known:  # "vosjax.ops.memory.readout" -> the module
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "vosjax":
                        out.add(resolve(alias.name))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name if is_pkg else name.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        base = base.rpartition(".")[0]
                    mod = f"{base}.{child.module}" if child.module else base
                else:
                    mod = child.module or ""
                if mod.split(".")[0] != "vosjax":
                    continue
                for alias in child.names:  # "from vosjax.models import stcn" imports a module
                    sub = f"{mod}.{alias.name}"
                    out.add(sub if sub in known else resolve(mod))
            visit(child)

    visit(tree)
    out.discard(None)
    # importing a module first runs its parent packages
    for target in list(out):
        parts = target.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    # a module's own parent packages are already importing when it runs: no edge to them
    parts = name.split(".")
    out.difference_update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative DFS, 3 colours)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            nxt = next(children, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a2"}, "a2": {"x"}, "x": {"a2"}}) == ["a2", "x", "a2"]


def test_graph_reads_imports_and_parent_packages():
    graph = import_graph()
    assert "vosjax.inference" in graph["vosjax.training.evaluation"]  # the parent package
    assert "vosjax.inference.engine" in graph["vosjax.inference"]
    assert "vosjax.errors" in graph["vosjax.methods"]


def test_no_import_cycle_among_vosjax_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _long_functions(path: pathlib.Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - first + 1
            if n > limit:
                out.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    return out


@pytest.mark.parametrize("package", ["inference"])
def test_no_long_functions(package):
    long = [f for p in sorted((ROOT / package).glob("*.py")) for f in _long_functions(p, 80)]
    assert not long, "functions over 80 lines: " + "; ".join(long)


def test_imports_inside_functions_and_type_checking_blocks(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from vosjax import checkpoint\n"
        "def f():\n    from vosjax.ops import memory\n    import vosjax.losses as L\n"
    )
    got = _imports("vosjax.fake", f, set(_modules()))
    assert {"vosjax.ops.memory", "vosjax.ops", "vosjax.losses"} <= got
    assert "vosjax.checkpoint" not in got
