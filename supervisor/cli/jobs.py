"""`storyworker jobs`: list (a table or JSON, filtered), show, and retry or cancel one
job by id or every job of a status at once."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any
from uuid import UUID

import click

from supervisor import exitcodes
from supervisor.cli.common import connect, fail, friendly_errors
from supervisor.cli.manifest import describe, unknown_preferences
from supervisor.cli.term import Duration, Term
from supervisor.db import memory, queue, timestamps
from supervisor.db.jobs import Job, Status

#: Columns of `jobs list --json`: every column of generation_jobs but the checkpoint
#: (the worker's resume record, shown as `sections_done` by `jobs show`) and the
#: context manifest (shown by `jobs show`).
LISTED = tuple(name for name in Job.__dataclass_fields__ if name not in ("checkpoint", "context"))
SINCE_HELP = (
    "Only jobs that ended within DURATION (90s, 15m, 2h, 3d), or that have not ended "
    "and were created within it."
)
#: The statuses `jobs retry --status` and `jobs cancel --status` accept.
RETRYABLE, CANCELLABLE = ("failed", "cancelled"), ("pending", "processing")
#: Shortest error column.
ERROR_MIN = 16
#: Width of a terminal for `jobs list --wide`: nothing is cut.
WIDE = 1_000_000


@click.group()
def jobs() -> None:
    """Inspect and steer jobs."""


def _when(value: Any) -> Any:
    """Timestamps at Python's bounds (PostgreSQL's infinities) as `infinity` text."""
    if isinstance(value, datetime) and value in (timestamps.LATEST, timestamps.EARLIEST):
        return timestamps.shown(value)
    return value


def _json_value(value: Any) -> Any:
    value = _when(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value.value if isinstance(value, Status) else value


def _short(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _rows(job: Job, term: Term) -> list[str]:
    """The job's line; on a terminal too narrow for its error beside it, the error
    goes on a line of its own below."""
    # The step only when it says more than the status ("completed completed").
    step = "" if job.current_step in (None, job.status.value) else job.current_step
    head = (
        f"{job.id!s:36}  {job.status:10}  {job.progress or 0:>3}%  {job.attempts:>3}  "
        f"{timestamps.shown(job.created_at):19}  {step[:16]:16}  "
    )
    if not job.error_message:
        return [term.show(head.rstrip())]
    if not term.live:  # a pipe or a file: the whole error, for grep and for people
        return [term.show(head + " ".join(job.error_message.split()))]
    room = term.width - 1 - len(head)
    if room >= ERROR_MIN:
        return [term.show(head + _short(job.error_message, room))]
    below = "    error: "
    return [
        term.show(head.rstrip()),
        below + _short(job.error_message, term.width - 1 - len(below)),
    ]


@jobs.command("list")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Only this status.")
@click.option("--user", "user_id", type=click.UUID, help="Only this user's jobs.")
@click.option("--sequence", "sequence_id", type=click.UUID, help="Only this story's jobs.")
@click.option("--chapter", "chapter_id", type=click.UUID, help="Only this chapter's jobs.")
@click.option("--since", type=Duration(), help=SINCE_HELP)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of the jobs' columns.")
@click.option("--wide", is_flag=True, help="Never cut a line (on a terminal; a pipe gets all).")
@friendly_errors
def list_command(status: str | None, limit: int, as_json: bool, wide: bool, **match: Any) -> None:
    """The newest jobs first."""
    with connect("jobs list") as conn:
        found = queue.list_jobs(conn, Status(status) if status else None, limit, **match)
    if as_json:
        rows = [{k: _json_value(getattr(job, k)) for k in LISTED} for job in found]
        click.echo(json.dumps(rows, indent=2))
        return
    term = Term.detect()
    if wide:
        term = dataclasses.replace(term, width=WIDE)
    header = f"{'id':36}  {'status':10}  {'prog':>4}  {'att':>3}  {'created':19}  {'step':16}"
    beside = not term.live or term.width - 1 - len(header) - 2 >= ERROR_MIN
    click.echo(header + "  error" if beside else header.rstrip())
    for job in found:
        click.echo("\n".join(_rows(job, term)))


def _job_fields(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status.value,
        "progress": job.progress,
        "current_step": job.current_step,
        "attempts": job.attempts,
        "error_message": job.error_message,
        "chapter_id": job.chapter_id,
        "sequence_id": job.sequence_id,
        "user_id": job.user_id,
        "locked_by": job.locked_by,
        "run_after": job.run_after,
        "heartbeat_at": job.heartbeat_at,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "sections_done": (job.checkpoint or {}).get("sections_done"),
        "usage": job.usage,
        "user_preferences": job.user_preferences,
    }


def _json_fields(job: Job) -> dict[str, Any]:
    return {**_job_fields(job), "context": job.context}


@jobs.command("show")
@click.argument("job_id", type=click.UUID)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@friendly_errors
def show(job_id: UUID, as_json: bool) -> None:
    """Everything about one job."""
    with connect("jobs show") as conn:
        job = queue.get(conn, job_id)
        stale = memory.stale_after(conn, job_id)
    if as_json:
        data = {k: _when(v) for k, v in _json_fields(job).items()}
        data["memory_stale_after"] = stale
        click.echo(json.dumps(data, default=str, indent=2))
        return
    data = {k: _when(v) for k, v in _job_fields(job).items()}
    for key, value in data.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        click.echo(f"{key + ':':16} {'' if shown is None else shown}")
    steps = describe(job.context)
    click.echo(f"{'context:':16} {'' if steps else '(none recorded)'}")
    for line in steps:
        click.echo(f"  {line}")
    if unknown := unknown_preferences(job.context):
        click.echo(f"{'unknown prefs:':16} {', '.join(unknown)} (ignored; see the README)")
    if stale is not None:
        click.echo(
            f"{'memory:':16} stale: chapter {stale} was rewritten after this chapter was "
            "written from the story before it (this chapter is not rewritten)"
        )


def _bulk_target(job_id: UUID | None, status: str | None, *bulk_only: object) -> None:
    """Exactly one of ID and --status (the status itself is checked by StatusChoice)."""
    if (job_id is None) == (status is None):
        fail("give a job ID or --status STATUS (not both)", exitcodes.USAGE)
    if status is None and any(bulk_only):
        fail("--since and --dry-run go with --status", exitcodes.USAGE)


class StatusChoice(click.Choice):
    """--status of a bulk command: only the statuses it can change, in --help too; any
    other is one line and exit 2."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if value not in self.choices:
            fail(f"--status must be {' or '.join(self.choices)}, not {value}", exitcodes.USAGE)
        return value


def _report(changed: list[UUID], verbs: tuple[str, str], dry_run: bool) -> None:
    """`retried 3 jobs`; a dry run says `would retry 3 jobs:` and lists them."""
    noun = "job" if len(changed) == 1 else "jobs"
    if dry_run:
        click.echo(f"would {verbs[0]} {len(changed)} {noun}" + (":" if changed else ""))
        for job_id in changed:
            click.echo(str(job_id))
    else:
        click.echo(f"{verbs[1]} {len(changed)} {noun}")


def bulk_options(allowed: tuple[str, ...]) -> Any:
    """JOB_ID, or --status (one of `allowed`) with --since and --dry-run."""
    options = [
        click.argument("job_id", type=click.UUID, required=False),
        click.option(
            "--status",
            type=StatusChoice(allowed),
            help="Every job in this status instead of one JOB_ID.",
        ),
        click.option("--since", type=Duration(), help="With --status: o" + SINCE_HELP[1:]),
        click.option("--dry-run", is_flag=True, help="With --status: say which, change nothing."),
    ]

    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@jobs.command("retry")
@bulk_options(RETRYABLE)
@click.option("--fresh", is_flag=True, help="Discard the checkpoint and start the chapter over.")
@friendly_errors
def retry(
    job_id: UUID | None, status: str | None, since: float | None, dry_run: bool, fresh: bool
) -> None:
    """Put a failed or cancelled job (or every job of --status) back to pending."""
    _bulk_target(job_id, status, since, dry_run)
    with connect("jobs retry") as conn:
        if status is not None:
            if dry_run:
                changed = queue.matching(conn, Status(status), since=since)
            else:
                changed = queue.retry_matching(conn, Status(status), since=since, fresh=fresh)
            return _report(changed, ("retry", "retried"), dry_run)
        assert job_id is not None
        job = queue.retry(conn, job_id, fresh=fresh)
    click.echo(f"{job.id} is pending again" + (" (starting over)" if fresh else ""))


@jobs.command("cancel")
@bulk_options(CANCELLABLE)
@friendly_errors
def cancel(job_id: UUID | None, status: str | None, since: float | None, dry_run: bool) -> None:
    """Cancel a pending or processing job (or every job of --status)."""
    _bulk_target(job_id, status, since, dry_run)
    with connect("jobs cancel") as conn:
        if status is not None:
            if dry_run:
                changed = queue.matching(conn, Status(status), since=since)
            else:
                changed = queue.cancel_matching(conn, Status(status), since=since)
            return _report(changed, ("cancel", "cancelled"), dry_run)
        assert job_id is not None
        job = queue.cancel(conn, job_id)
    click.echo(f"{job.id} cancelled")
