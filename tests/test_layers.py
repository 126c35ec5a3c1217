"""The import structure of docs/architecture.md ("Layers"), checked on the source: no cycles, imports point down.

The import graph is read from the AST (module-level and function-level imports alike), so a deferred
import cannot hide a cycle. Light entry points are checked in fresh interpreters.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("midas_ref", "simulate", "validation")

#: Lowest first; a module may import modules of its own layer or of lower ones (docs/architecture.md).
LAYERS = (
    ("foundations", {"midas_ref.errors", "midas_ref._numba", "midas_ref.atomic", "midas_ref.kernel_layout"}),
    ("detector description", {"midas_ref.detector", "midas_ref.params", "midas_ref"}),
    ("kernels and tables", {"midas_ref.geometry_kernels", "midas_ref.peakfit_kernels", "midas_ref.rings",
                            "midas_ref.preprocess", "midas_ref.convert"}),
    ("forward model", {"midas_ref.panels", "midas_ref.geometry"}),
    ("image I/O", {"midas_ref._formats", "midas_ref._zarrzip", "midas_ref.io"}),
    ("measurement and fit", {"midas_ref.profiles_kernels", "midas_ref.profiles", "midas_ref.refine",
                             "midas_ref.guess", "midas_ref.strain", "midas_ref.uncertainty",
                             "midas_ref.model_select", "midas_ref.verdict"}),
    ("jobs", {"midas_ref.autocal", "midas_ref.panel_refine"}),
    ("set-up and outputs", {"midas_ref.inputs", "midas_ref.record", "midas_ref.outputs"}),
    ("simulator", {"simulate"}),
    ("validation harness", {"validation"}),
    ("command line", {"midas_ref.cli", "midas_ref.__main__"}),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module
                submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
                targets.update(submodules)
                if len(submodules) < len(node.names):  # names taken from the module itself
                    targets.add(base)
        graph[name] = {t for t in map(ours, targets) if t is not None and t != name}
    return graph


def _layer(module: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members if m != "midas_ref") or module in members:
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS (docs/architecture.md): add it")


def test_every_module_has_a_layer():
    assert all(_layer(m) >= 0 for m in _modules())


def test_imports_point_down_the_layers():
    upward = sorted(f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})"
                    for a, targets in _import_graph().items() for b in targets if _layer(b) > _layer(a))
    assert upward == []


def test_no_import_cycle():
    graph = _import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_only_the_entry_point_imports_the_command_line():
    importers = sorted(a for a, targets in _import_graph().items() for b in targets
                       if b.startswith("midas_ref.cli") and not a.startswith("midas_ref.cli"))
    assert importers == ["midas_ref.__main__"]


def test_the_graph_sees_deferred_imports():
    """The checker itself: a function-level import counts (the inputs set-up defers its io import)."""
    graph = _import_graph()
    assert "midas_ref.io" in graph["midas_ref.inputs"] and "midas_ref.autocal" in graph["midas_ref.inputs"]
    assert graph["midas_ref.atomic"] == {"midas_ref.errors"} and "midas_ref.geometry_kernels" in graph["midas_ref.geometry"]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return set(out.stdout.split())


@pytest.mark.parametrize("statement, absent", [
    ("import midas_ref", {"numba", "midas_ref.io", "midas_ref.geometry", "h5py", "zarr"}),
    ("import midas_ref.geometry", {"midas_ref.io", "midas_ref.params", "h5py", "tifffile", "zarr"}),
    ("import midas_ref.params", {"numba", "numpy", "midas_ref.io"}),
    ("import midas_ref.cli", {"numba", "midas_ref.io"}),
], ids=["package", "geometry", "params", "cli"])
def test_light_imports(statement, absent):
    loaded = _loaded_after(statement)
    assert statement.split()[-1] in loaded  # the import happened
    assert loaded & absent == set()
