"""The package's shape, checked from its source (stdlib ast) and in fresh processes:
one dependency direction, no cycles, viz/io free of torch, nothing importing the CLI."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, cli_env

PACKAGE = ROOT / "landscape"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports anywhere (top level or inside functions), absolute names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from . import engine` names a module
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_the_walk_sees_the_package():
    assert {"landscape.api", "landscape.engine.scheduler", "landscape.io.surface_file", "landscape.viz.figures",
            "landscape.cli.main", "landscape.core.theta", "landscape.analysis.hessian"} <= set(MODULES)
    assert "landscape.io.surface_file" in GRAPH["landscape.engine.writers"]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (one per back edge)."""
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def test_no_import_cycles():
    # a package's __init__ re-exporting its own modules is not a cycle of the design
    graph = {m: {n for n in deps if not (MODULES[n].name == "__init__.py" and m.startswith(n + "."))}
             for m, deps in GRAPH.items()}
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize("package", ["landscape.viz", "landscape.io"])
def test_viz_and_io_never_import_torch(package):
    reach, todo = set(), [m for m in MODULES if m == package or m.startswith(package + ".")]
    while todo:  # everything they import from landscape, transitively
        m = todo.pop()
        if m not in reach:
            reach.add(m)
            todo += GRAPH[m]
    offenders = sorted(m for m in reach if any(i == "torch" or i.startswith("torch.") for i in imports(MODULES[m])))
    assert offenders == []


def test_nothing_imports_the_cli():
    """Only the entry points (`python -m landscape`, plot_surface.py) call it."""
    users = sorted(m for m, deps in GRAPH.items() if not m.startswith(("landscape.cli", "landscape.__main__"))
                   and any(d.startswith("landscape.cli") for d in deps))
    assert users == []


def test_the_engine_knows_nothing_of_losses():
    engine = [m for m in MODULES if m.startswith("landscape.engine")]
    for m in engine:
        assert not any(d.startswith(("landscape.core.tasks", "landscape.core.evaluate", "landscape.analysis", "torch"))
                       for d in imports(MODULES[m])), m


def loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["landscape.viz", "landscape.viz.info", "landscape.viz.vtk", "landscape.io",
                                    "landscape.io.surface_file", "landscape.io.reference", "landscape.options"])
def test_light_modules_load_neither_torch_nor_pyplot(module):
    mods = loaded(f"import {module}")
    assert "torch" not in mods and "matplotlib.pyplot" not in mods


def test_figures_load_pyplot_but_not_torch():
    mods = loaded("import landscape.viz.figures")
    assert "torch" not in mods and "matplotlib.pyplot" in mods


def test_info_command_loads_neither_torch_nor_pyplot(tmp_path):
    import numpy as np

    from landscape.core.grid import Grid
    from landscape.io import surface_file

    path = tmp_path / "s.h5"
    surface_file.create(path, Grid(np.linspace(-1, 1, 3)), ["train/loss"], attrs={"job": "{}"})
    code = f"from landscape.cli import main\nassert main(['info', {str(path)!r}]) == 2"  # no point computed yet
    mods = loaded(code)
    assert "torch" not in mods and "matplotlib.pyplot" not in mods
