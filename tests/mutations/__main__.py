"""python -m tests.mutations [--list] [--only NAME ...] [--previously caught|survived|new]

Applies each mutation to a scratch copy of the tree, runs the tests that should catch
it there, then (by default) the rest of the suite for any survivor, and prints a table
and `caught N/M`. Exit code 0 only when every mutation run was caught; 1 otherwise; 2
when the run cannot give verdicts (bad arguments, the copy is not what gets imported,
the baseline gives no answer).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path

from tests.mutations.catalog import CAUGHT, MUTATIONS, NEW, SURVIVED, Mutation
from tests.mutations.preflight import PreflightError, RestBaseline, baseline, isolation, say
from tests.mutations.runner import Options, Verdict, evaluate
from tests.mutations.scratch import StaleMutation, locate

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT_SECONDS = 1200


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutations",
        description="Plant known bugs in a scratch copy of the tree; the tests must catch them.",
    )
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only mutations whose name matches (a glob; repeatable)",
    )
    parser.add_argument(
        "--previously",
        action="append",
        choices=(CAUGHT, SURVIVED, NEW),
        help="run only mutations with this verdict in the last recorded run (repeatable)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"per mutation, all its runs together (default {DEFAULT_TIMEOUT_SECONDS})",
    )
    parser.add_argument(
        "--full-on-survivor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the rest of the suite when a mutation's own tests pass (default: yes)",
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first run the named test files unmutated; leave out what fails (default: yes)",
    )
    parser.add_argument(
        "--canary",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prove with a broken `python -m supervisor` that subprocesses import the copy",
    )
    parser.add_argument("--rev", help="copy this commit's tree instead of the working tree")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    parser.add_argument("--logs", type=Path, help="directory for pytest logs (default: a temp dir)")
    return parser.parse_args(argv)


def select(args: argparse.Namespace) -> list[Mutation]:
    chosen = list(MUTATIONS)
    if args.previously:
        chosen = [m for m in chosen if m.previously in args.previously]
    if args.only:
        unknown = [p for p in args.only if not any(fnmatch(m.name, p) for m in MUTATIONS)]
        if unknown:
            say(f"no mutation matches {', '.join(unknown)} (see --list)")
            raise SystemExit(2)
        chosen = [m for m in chosen if any(fnmatch(m.name, p) for p in args.only)]
    return chosen


def show_list(mutations: Sequence[Mutation]) -> None:
    """Each mutation, and where it applies in the working tree now."""
    for m in mutations:
        try:
            site = locate(ROOT, m)
            where = f"applies to {site.path}" + (f" ({site.note})" if site.note else "")
        except StaleMutation as exc:
            where = f"STALE: {exc}"
        print(f"{m.name}  [last run: {m.previously}]")
        print(f"    {m.what}")
        print(f"    file hint: {m.hint or '-'}; {where}")
        print(f"    tests: {', '.join(m.tests)}")


def table(verdicts: Sequence[Verdict]) -> str:
    header = ("mutation", "result", "run", "seconds", "file")
    rows = [header, *((v.name, v.status, v.run, f"{v.seconds:.1f}", v.where) for v in verdicts)]
    details = ["detail", *(v.detail for v in verdicts)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row, detail in zip(rows, details, strict=True):
        cells = [
            cell.rjust(width) if column == 3 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join([*cells, detail]).rstrip())
    return "\n".join(lines)


def run_all(mutations: Sequence[Mutation], options: Options) -> list[Verdict]:
    verdicts = []
    for number, mutation in enumerate(mutations, start=1):
        say(f"[{number}/{len(mutations)}] {mutation.name} ...")
        verdict = evaluate(mutation, options)
        say(f"    {verdict.status} ({verdict.run}) in {verdict.seconds:.1f}s: {verdict.detail}")
        verdicts.append(verdict)
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mutations = select(args)
    if args.list:
        show_list(mutations)
        return 0
    if not mutations:
        say("no mutation selected")
        return 2
    logs = args.logs or Path(tempfile.mkdtemp(prefix="storyworker-mutations-"))
    logs.mkdir(parents=True, exist_ok=True)
    say(f"logs: {logs}")
    options = Options(ROOT, args.rev, args.timeout, args.full_on_survivor, args.keep, logs)
    try:
        isolation(options, args.canary)
        if args.baseline:
            options = dataclasses.replace(
                options,
                skip=baseline(mutations, options),
                skip_in_rest=RestBaseline(mutations, options),
            )
    except PreflightError as exc:
        say(f"mutation run aborted: {exc}")
        return 2
    verdicts = run_all(mutations, options)
    caught = sum(v.caught for v in verdicts)
    print(table(verdicts))
    skipped = options.skip + (
        options.skip_in_rest() if any(v.run == "full" for v in verdicts) else ()
    )
    if skipped:
        print(f"left out (failing without any mutation): {' '.join(skipped)}")
    print(f"logs: {logs}")
    print(f"caught {caught}/{len(verdicts)}")
    return 0 if caught == len(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
