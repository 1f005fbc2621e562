"""Scratch copies of the tree, and planting a mutation in one.

The real tree is only ever read. A copy is imported instead of the editable install
because PYTHONPATH (which every subprocess inherits) comes before site-packages, where
the editable finder lives; `check_isolation` proves it before any mutation runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from tests.mutations.catalog import Mutation

PACKAGES = ("supervisor", "generation", "health")
SOURCE_SUFFIXES = (".py", ".sql")
JUNK = shutil.ignore_patterns(
    ".venv",
    ".git",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    "*.egg-info",
    "build",
    "dist",
    ".env",
    ".coverage",
)


class StaleMutation(Exception):
    """The mutation's text does not occur exactly once: the entry needs updating."""


class IsolationError(Exception):
    """Code run in the scratch copy would not import the scratch copy."""


def make_copy(source: Path, rev: str | None = None) -> Path:
    """A fresh temporary copy of `source` without virtualenv, git and caches; with
    `rev`, the tree of that commit instead of the working tree."""
    root = Path(tempfile.mkdtemp(prefix="storyworker-mutant-")).resolve()
    if rev is None:
        shutil.copytree(source, root, ignore=JUNK, symlinks=True, dirs_exist_ok=True)
        return root
    archive = root.with_suffix(".tar")
    try:
        subprocess.run(
            ["git", "-C", str(source), "archive", "--format=tar", "-o", str(archive), rev],
            check=True,
            capture_output=True,
        )
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    finally:
        archive.unlink(missing_ok=True)
    return root


def remove_copy(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def source_files(root: Path) -> list[Path]:
    """Every *.py and *.sql file of the three packages, relative to `root`."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts:
                found.append(path.relative_to(root))
    return found


@dataclass(frozen=True)
class Site:
    """Where a mutation applies, and how the search went."""

    path: Path
    note: str = ""


def locate(root: Path, mutation: Mutation) -> Site:
    """The one file holding `mutation.old` exactly once; StaleMutation otherwise.

    Files matching the hint are searched first; only when none of them holds the text
    at all is every file searched (a module renamed by a reorganisation), and then the
    note says so.
    """
    files = source_files(root)
    hinted = [p for p in files if fnmatch(p.name, mutation.hint)] if mutation.hint else files
    hits = _count(root, hinted, mutation.old)
    note = ""
    if not hits and mutation.hint:
        hits = _count(root, files, mutation.old)
        note = f"not in a file named {mutation.hint!r}"
    total = sum(hits.values())
    if total == 1:
        return Site(next(iter(hits)), note)
    scope = f"files named {mutation.hint!r}" if mutation.hint and not note else "the packages"
    if total == 0:
        raise StaleMutation(f"old text not found in {scope}")
    where = ", ".join(f"{path} ({n}x)" for path, n in hits.items())
    raise StaleMutation(f"old text found {total} times in {scope}: {where}")


def _count(root: Path, files: list[Path], text: str) -> dict[Path, int]:
    counts = {path: (root / path).read_text("utf-8").count(text) for path in files}
    return {path: n for path, n in counts.items() if n}


def apply(root: Path, mutation: Mutation) -> Site:
    """Plant `mutation` in the copy at `root`; StaleMutation when it does not apply."""
    site = locate(root, mutation)
    path = root / site.path
    text = path.read_text("utf-8")
    path.write_text(text.replace(mutation.old, mutation.new, 1), "utf-8")
    return site


def environment(root: Path) -> dict[str, str]:
    """The environment for pytest in the copy: its processes import the copy."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


IMPORT_PROBE = (
    "import json, importlib; "
    f"print(json.dumps({{p: importlib.import_module(p).__file__ for p in {PACKAGES!r}}}))"
)


def check_isolation(root: Path) -> None:
    """Import the packages in a subprocess started elsewhere with the copy's
    environment, as `python -m supervisor run` is started by the tests, and make sure
    each comes from the copy. IsolationError otherwise."""
    with tempfile.TemporaryDirectory(prefix="storyworker-probe-") as elsewhere:
        result = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE],
            cwd=elsewhere,
            env=environment(root),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if result.returncode != 0:
        raise IsolationError(f"importing the scratch copy failed:\n{result.stderr.strip()}")
    files = json.loads(result.stdout)
    wrong = {p: f for p, f in files.items() if not Path(f).resolve().is_relative_to(root)}
    if wrong:
        shown = ", ".join(f"{p} from {f}" for p, f in wrong.items())
        raise IsolationError(f"a subprocess imports {shown}, not the scratch copy {root}")


def plant_canary(root: Path) -> None:
    """Break `python -m supervisor` in the copy (and nothing the test process imports)."""
    main = root / "supervisor" / "__main__.py"
    if not main.exists():
        raise IsolationError(f"{main} is missing: cannot plant the canary")
    main.write_text("raise SystemExit(97)  # mutation canary\n", "utf-8")
