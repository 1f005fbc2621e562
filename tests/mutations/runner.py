"""Running pytest in a scratch copy, and judging one mutation by what it did."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.mutations.catalog import Mutation
from tests.mutations.scratch import Site, StaleMutation, apply, environment, make_copy, remove_copy

CAUGHT, SURVIVED, STALE, TIMEOUT, ERROR = "caught", "survived", "stale", "timeout", "error"
#: pytest exit codes: 1 tests failed, 2 errors while collecting (the mutant breaks an
#: import), 0 all passed, 5 nothing collected (everything selected was left out).
FAILED_CODES, PASSED_CODES = (1, 2), (0, 5)
#: After the time limit pytest gets SIGINT, and this long to tear its fixtures down
#: (services, Postgres), before its process group is killed.
STOP_GRACE_SECONDS = 30
_SUMMARY_LINE = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$")
#: Longest test id shown in the table.
SHOWN_CHARS = 110


@dataclass(frozen=True)
class PytestRun:
    returncode: int | None  # None: stopped at the time limit
    seconds: float
    failures: tuple[str, ...]  # node ids (or files, for collection errors), in order
    log: Path


def run_pytest(root: Path, args: list[str], *, timeout: float, log: Path) -> PytestRun:
    """`python -m pytest ARGS` in the copy at `root`, output to `log`."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    started = time.monotonic()
    with log.open("w") as out:
        out.write(f"$ cd {root} && PYTHONPATH={root} {shlex.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(
            command,
            cwd=root,
            env=environment(root),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        code = _wait(proc, timeout)
    return PytestRun(code, time.monotonic() - started, _failures(log), log)


def _wait(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the pytest we started
        proc.wait()
    return None


def _failures(log: Path) -> tuple[str, ...]:
    """What pytest's short summary (`-ra`, set in pyproject.toml) lists as failed."""
    lines = log.read_text(errors="replace").splitlines()
    found = (_SUMMARY_LINE.match(line) for line in lines)
    return tuple(dict.fromkeys(match.group(1) for match in found if match))


def leave_out(failures: tuple[str, ...]) -> tuple[str, ...]:
    """pytest arguments that skip these tests (files that fail to collect: the file)."""
    return tuple(f"--deselect={f}" if "::" in f else f"--ignore={f}" for f in failures)


def _nothing() -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Options:
    source: Path  # the tree to copy
    rev: str | None  # a commit to copy instead of the working tree
    timeout: float  # per mutation, all its runs together
    full_on_survivor: bool
    keep: bool
    logs: Path
    #: Arguments leaving out what fails without any mutation: in the mutations' own
    #: test files, and (asked for only once a survivor needs it) in the rest.
    skip: tuple[str, ...] = ()
    skip_in_rest: Callable[[], tuple[str, ...]] = _nothing


@dataclass(frozen=True)
class Verdict:
    name: str
    status: str
    run: str  # the run that decided: "targeted", "full" ("-" when none ran)
    seconds: float
    where: str  # the file mutated
    detail: str

    @property
    def caught(self) -> bool:
        return self.status == CAUGHT


def evaluate(mutation: Mutation, options: Options) -> Verdict:
    """Plant `mutation` in a fresh copy and run its tests, then (when they all pass
    and `options.full_on_survivor`) the rest of the suite."""
    started = time.monotonic()
    root = make_copy(options.source, options.rev)
    try:
        try:
            site = apply(root, mutation)
        except StaleMutation as exc:
            return Verdict(mutation.name, STALE, "-", time.monotonic() - started, "-", str(exc))
        return _run_tests(root, mutation, site, options, started)
    finally:
        if not options.keep:
            remove_copy(root)


def _run_tests(
    root: Path, mutation: Mutation, site: Site, options: Options, started: float
) -> Verdict:
    present = [t for t in mutation.tests if (root / t).exists()]
    missing = [t for t in mutation.tests if t not in present]
    notes = [site.note] if site.note else []
    notes += [f"missing: {', '.join(missing)}"] if missing else []
    left_out = [a for a in options.skip if a.split("=", 1)[1].split("::")[0] in present]
    if left_out:
        notes.append(f"{len(left_out)} of its tests left out: they fail without any mutation")
    if options.keep:
        notes.append(f"copy kept in {root}")
    status, which, detail = SURVIVED, "-", "no test ran"
    for which, args in _stages(present, options):
        asked = time.monotonic()
        arguments = args()
        started += time.monotonic() - asked  # the baseline of the rest is not the mutant's
        remaining = started + options.timeout - time.monotonic()
        log = options.logs / f"{mutation.name}.{which}.log"
        status, detail = _judge(run_pytest(root, arguments, timeout=remaining, log=log), options)
        if status != SURVIVED:
            break
        detail = "the whole suite passed" if which == "full" else "its tests passed"
    elapsed = time.monotonic() - started
    return Verdict(mutation.name, status, which, elapsed, str(site.path), _join(detail, notes))


def _stages(present: list[str], options: Options) -> list[tuple[str, Callable[[], list[str]]]]:
    """The runs for one mutation, in order, each with its pytest arguments (made when
    the run starts): its own test files, then the rest of the suite."""
    stages: list[tuple[str, Callable[[], list[str]]]] = []
    if present:
        stages.append(("targeted", lambda: ["-x", *options.skip, *present]))
    if options.full_on_survivor:
        rest = [f"--ignore={t}" for t in present]
        stages.append(("full", lambda: ["-x", *options.skip, *options.skip_in_rest(), *rest]))
    return stages


def _judge(run: PytestRun, options: Options) -> tuple[str, str]:
    if run.returncode is None:
        return TIMEOUT, f"no verdict within {options.timeout:.0f}s; log {run.log}"
    if run.returncode in FAILED_CODES:
        if not run.failures:
            return CAUGHT, f"pytest exit code {run.returncode}"
        first = run.failures[0]
        return CAUGHT, first if len(first) <= SHOWN_CHARS else first[: SHOWN_CHARS - 3] + "..."
    if run.returncode in PASSED_CODES:
        return SURVIVED, ""
    return ERROR, f"pytest exit code {run.returncode}; log {run.log}"


def _join(detail: str, notes: list[str]) -> str:
    return "; ".join([detail, *notes]) if notes else detail
