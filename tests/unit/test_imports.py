"""The architecture, checked: no import cycle among the project's modules, and
`generation` and `health` never import `supervisor` (nor each other's insides where
the design forbids it). Read from the source with `ast`, so a lazy import inside a
function counts for the direction rules too."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("supervisor", "generation", "health")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path], *, top_level_only: bool) -> set[str]:
    """The project modules `path` imports (at module level only, if asked)."""
    tree = ast.parse(path.read_text("utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return {name for name in found if name in known}


def graph(*, top_level_only: bool) -> dict[str, set[str]]:
    known = modules()
    return {
        name: imports(path, known, top_level_only=top_level_only)
        for name, path in known.items()
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_projects_modules():
    edges = graph(top_level_only=True)
    assert len(edges) > 30  # the walk found the packages
    assert find_cycle(edges) is None


def test_generation_and_health_never_import_supervisor():
    for name, targets in graph(top_level_only=False).items():
        root = name.split(".")[0]
        if root == "generation":
            assert not {t for t in targets if t.split(".")[0] in ("supervisor", "health")}, name
        if root == "health":
            assert not {t for t in targets if t.split(".")[0] in ("supervisor", "generation")}, (
                name
            )


def test_the_cli_does_not_load_prometheus_before_its_multiprocess_directory_is_set():
    # prometheus_client chooses multiprocess mode when first imported: the supervisor
    # sets PROMETHEUS_MULTIPROC_DIR before anything imports supervisor.metrics.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    code = (
        "import sys, supervisor.cli, supervisor.__main__ as _\n"
        if False
        else "import sys, supervisor.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prometheus_client'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
