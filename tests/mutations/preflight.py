"""Checks before any mutation: the copy is what gets imported, and the tests that will
judge the mutations pass without one."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tests.mutations.catalog import CLI_ADMIN, Mutation
from tests.mutations.runner import FAILED_CODES, PASSED_CODES, Options, leave_out, run_pytest
from tests.mutations.scratch import (
    IsolationError,
    check_isolation,
    make_copy,
    plant_canary,
    remove_copy,
)

CANARY_TIMEOUT_SECONDS = 180


class PreflightError(Exception):
    """The run cannot give meaningful verdicts; the message says why."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def isolation(options: Options, canary: bool) -> None:
    """The import probe, then (with `canary`) proof through a real test: with
    `python -m supervisor` broken in the copy, the CLI tests must fail."""
    root = make_copy(options.source, options.rev)
    try:
        check_isolation(root)
        say(f"isolation: a subprocess imports supervisor, generation and health from {root}")
        if not canary:
            return
        if not (root / CLI_ADMIN).exists():
            say(f"isolation: no {CLI_ADMIN}; canary skipped")
            return
        plant_canary(root)
        log = options.logs / "canary.log"
        run = run_pytest(root, ["-x", CLI_ADMIN], timeout=CANARY_TIMEOUT_SECONDS, log=log)
        if run.returncode not in FAILED_CODES:
            raise IsolationError(
                f"with `python -m supervisor` broken in the copy, {CLI_ADMIN} still gave"
                f" pytest exit code {run.returncode}: subprocesses run other code (log {log})"
            )
        say(f"isolation: canary caught by {run.failures[0] if run.failures else CLI_ADMIN}")
    except IsolationError as exc:
        raise PreflightError(f"isolation check failed: {exc}") from exc
    finally:
        remove_copy(root)


def baseline(mutations: Sequence[Mutation], options: Options) -> tuple[str, ...]:
    """Run every test file the mutations name on an unmutated copy. Returns pytest
    arguments that leave out whatever fails there (a test that fails anyway would
    "catch" every mutation); PreflightError when the run gives no answer."""
    files = list(dict.fromkeys(t for m in mutations for t in m.tests))
    return _unmutated("baseline", files, options)


class RestBaseline:
    """The same for the rest of the suite, run at most once and only when a survivor
    first needs it. A failure here only warns: the verdicts so far stand."""

    def __init__(self, mutations: Sequence[Mutation], options: Options) -> None:
        self._done = list(dict.fromkeys(t for m in mutations for t in m.tests))
        self._options = options
        self._skip: tuple[str, ...] | None = None

    def __call__(self) -> tuple[str, ...]:
        if self._skip is None:
            ignore = [f"--ignore={t}" for t in self._done]
            try:
                self._skip = _unmutated("baseline of the rest", ignore, self._options)
            except PreflightError as exc:
                say(f"WARNING: {exc}; the rest of the suite runs with nothing left out")
                self._skip = ()
        return self._skip


def _unmutated(label: str, args: list[str], options: Options) -> tuple[str, ...]:
    root = make_copy(options.source, options.rev)
    try:
        args = [a for a in args if a.startswith("-") or (root / a).exists()]
        say(f"{label}: python -m pytest {' '.join(args)} (no mutation)")
        log = options.logs / f"{label.replace(' ', '-')}.log"
        run = run_pytest(root, args, timeout=options.timeout, log=log)
    finally:
        remove_copy(root)
    if run.returncode in PASSED_CODES:
        say(f"{label}: passed in {run.seconds:.0f}s")
        return ()
    if run.returncode in FAILED_CODES and run.failures:
        say(f"{label}: WARNING, {len(run.failures)} failing without any mutation (log {log});")
        say("  they are left out of every run below:")
        for failure in run.failures:
            say(f"    {failure}")
        return leave_out(run.failures)
    what = "timed out" if run.returncode is None else f"gave pytest exit code {run.returncode}"
    raise PreflightError(f"{label} {what}; log {log}")
