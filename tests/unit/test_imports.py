"""The architecture, checked: no import cycle among the project's modules, nothing in
`supervisor` climbing back up its layers, and `generation` and `health` never import
`supervisor` (nor each other's insides where the design forbids it). Read from the
source with `ast`, every import wherever it stands: a lazy import inside a function
closes a circle as surely as one at the top."""

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


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


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


def test_the_walk_sees_imports_inside_functions(tmp_path):
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def later():\n    from supervisor.launch import main\n", "utf-8")
    assert imports(lazy, modules()) == {"supervisor.launch"}


def test_no_import_cycle_among_the_projects_modules():
    edges = graph()
    assert len(edges) > 30  # the walk found the packages
    assert find_cycle(edges) is None


#: Within `supervisor`, what each layer must never import: the queue and database
#: code knows no process, a worker knows no supervisor, the supervisor no CLI.
BELOW = {
    "supervisor.db": ("supervisor.worker", "supervisor.arbiter", "supervisor.cli"),
    "supervisor.worker": ("supervisor.arbiter", "supervisor.cli"),
    "supervisor.arbiter": ("supervisor.cli",),
}


def test_nothing_in_supervisor_climbs_back_up_its_layers():
    climbing = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        for layer, above in BELOW.items()
        if name.startswith(f"{layer}.")
        for target in targets
        if target.startswith(above)
    ]
    assert climbing == []


def test_generation_and_health_never_import_supervisor():
    for name, targets in graph().items():
        root = name.split(".")[0]
        if root == "generation":
            assert not {t for t in targets if t.split(".")[0] in ("supervisor", "health")}, name
        if root == "health":
            assert not {t for t in targets if t.split(".")[0] in ("supervisor", "generation")}, name


def test_the_cli_does_not_load_prometheus_before_its_multiprocess_directory_is_set():
    # prometheus_client chooses multiprocess mode when first imported: the supervisor
    # sets PROMETHEUS_MULTIPROC_DIR before anything imports supervisor.metrics.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    code = (
        "import sys, supervisor.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prometheus_client'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_every_module_logs_under_its_own_name():
    # A module split from another keeps logging under the old name unless it uses
    # __name__; its lines would then be filed under the wrong module.
    stale = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value != name
            ):
                stale.append(f"{name} logs as {node.args[0].value!r}")
    assert stale == []
