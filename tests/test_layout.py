"""The harness's import graph, read from the source (ast): no circles, no hidden imports.

An aebench import inside a function hides part of the graph, so harness/ has none: every
internal import is at module level, where this test (and a reader) can see it. Imports
inside functions are left for frameworks and optional packages (mlflow, matplotlib),
which must not load until they are needed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "harness"


def module_name(path: Path) -> str:
    parts = path.relative_to(HARNESS).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("aebench", *parts))


def aebench_imports(node: ast.AST) -> list[tuple[ast.stmt, str]]:
    """(statement, imported aebench module) for every import under ``node``."""
    found = []
    for stmt in ast.walk(node):
        if isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and (stmt.module or "").startswith("aebench"):
            found.append((stmt, stmt.module))
        elif isinstance(stmt, ast.Import):
            found.extend((stmt, alias.name) for alias in stmt.names if alias.name.startswith("aebench"))
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the harness modules it imports (a package import counts as its __init__)."""
    modules = {module_name(p): p for p in HARNESS.rglob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for stmt, target in aebench_imports(tree):
            if isinstance(stmt, ast.ImportFrom):
                submodules = {f"{target}.{alias.name}" for alias in stmt.names} & set(modules)
                edges[name] |= submodules or {target}
            else:
                edges[name].add(target)
        edges[name] &= set(modules) - {name, "aebench"}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import circle as a list of modules (first == last), or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 2
        stack.pop()
        return []

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_the_harness_has_no_import_circle() -> None:
    cycle = find_cycle(graph())
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(edges) == ["a", "b", "c", "a"]


def test_tracking_hears_the_training_only_through_its_listener() -> None:
    """The loop reports to tracking (train.loop.TrainingListener); tracking never calls back
    into the loop or the quality step."""
    assert not graph()["aebench.track.train_run"] & {"aebench.train.loop", "aebench.train.quality"}


@pytest.mark.parametrize("path", sorted(HARNESS.rglob("*.py")), ids=lambda p: str(p.relative_to(HARNESS)))
def test_no_aebench_import_hides_inside_a_function(path: Path) -> None:
    tree = ast.parse(path.read_text())
    hidden = [
        f"line {stmt.lineno}: {ast.unparse(stmt)}"
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for stmt, _ in aebench_imports(fn)
    ]
    assert not hidden, f"{path.name}: move to module level: {hidden}"


def test_importing_the_harness_loads_no_framework() -> None:
    """Every harness module imports without torch, jax, tensorflow, keras or mlflow loading."""
    import subprocess
    import sys

    modules = sorted(module_name(p) for p in HARNESS.rglob("*.py") if p.stem != "__main__")
    probe = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(f for f in ('torch', 'jax', 'tensorflow', 'keras', 'mlflow', 'flax') if f in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
