"""The package's shape: no import cycles between modules, and no import from a lower layer to a higher one.

The graph is built from the source with ``ast`` (nothing is imported), counting every import: at module
level, inside functions and under ``TYPE_CHECKING`` alike, so that no cycle can hide behind a lazy import.
``methods/`` and ``kernels/`` are read as ``autopeft.methods`` and ``autopeft.kernels``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"autopeft": ROOT / "autopeft", "autopeft.methods": ROOT / "methods", "autopeft.kernels": ROOT / "kernels"}

# Layers, lowest first: a module may import from its own layer and the layers below it, never above.
# (README.md, "Architecture", explains each.) Packages not named here belong to the layer of their parent.
LAYERS = [
    {"autopeft.core"},
    {"autopeft.kernels"},
    {"autopeft.methods", "autopeft.peft"},
    {"autopeft.space", "autopeft.training"},
    {"autopeft.memory", "autopeft.oneshot"},
    {"autopeft.study"},
    {"autopeft.searching"},
    {"autopeft.report"},
    {"autopeft.api", "autopeft.cli"},
    {"autopeft.testing", "autopeft.benchmarking", "autopeft.__main__"},
]


def module_files() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if package == "autopeft" and name.startswith(("autopeft.methods", "autopeft.kernels")):
                continue
            found[name] = path
    return found


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the autopeft modules it imports (``from pkg import name`` counts ``pkg.name`` if a module)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = _resolve(name, is_package, node)
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in files else module)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def layer_of(module: str) -> int | None:
    for rank, packages in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return rank
    return None


def test_the_graph_sees_the_whole_package():
    graph = import_graph()
    assert {"autopeft.peft.plan", "autopeft.methods.lora", "autopeft.kernels.dispatch",
            "autopeft.searching.run", "autopeft.cli.commands.search"} <= set(graph)
    assert "autopeft.core.arch" in graph["autopeft.peft.plan"]
    assert "autopeft.methods.base" in graph["autopeft.methods.lora"]  # `from autopeft.methods.base import`


def test_find_cycles_finds_a_cycle_through_a_lazy_import():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if m != "autopeft" and layer_of(m) is None] == []


def test_no_upward_imports():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in sorted(import_graph().items()) for t in sorted(targets)
              if m != "autopeft" and layer_of(t) is not None and layer_of(t) > layer_of(m)]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("folder", ["autopeft", "methods", "kernels"])
def test_modules_over_400_lines_say_why(folder):
    long = [str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*.py")
            if len(p.read_text().splitlines()) > 400 and "Longer than 400 lines because" not in p.read_text()]
    assert not long, f"modules over 400 lines without a reason at the top: {long}"
