"""Admin commands over the queue: enqueue, jobs list/show/retry/cancel, health."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import click

from supervisor import exitcodes
from supervisor.cli.common import connect, fail, friendly_errors
from supervisor.config import load_settings
from supervisor.db import queue, timestamps
from supervisor.db.jobs import Job, Status


def read_preferences(value: str | None) -> Any:
    """--prefs: inline JSON, or @path to a JSON file; validated like the worker does."""
    if value is None:
        return {}
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text("utf-8")
        except OSError as exc:
            fail(f"cannot read preferences file {value[1:]}: {exc.strerror}", exitcodes.FAILURE)
    try:
        prefs = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        fail(f"--prefs is not valid JSON: {exc.msg} at {where}", exitcodes.USAGE)
    from generation.errors import InvalidPreferencesError
    from generation.preferences import parse_preferences

    try:
        parse_preferences(prefs)
    except InvalidPreferencesError as exc:
        fail(str(exc), exitcodes.USAGE)
    return prefs


@click.command()
@click.option("--chapter", "chapter_id", type=click.UUID, required=True, help="Chapter to write.")
@click.option("--prefs", help="user_preferences as JSON, or @file.json.")
@friendly_errors
def enqueue(chapter_id: UUID, prefs: str | None) -> None:
    """Queue a job for an existing chapter and print the job's id."""
    preferences = read_preferences(prefs)
    with connect("enqueue") as conn:
        click.echo(queue.enqueue(conn, chapter_id, preferences))


@click.group()
def jobs() -> None:
    """Inspect and steer jobs."""


def _age(job: Job) -> str:
    return timestamps.shown(job.created_at)


@jobs.command("list")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Only this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@friendly_errors
def list_command(status: str | None, limit: int) -> None:
    """The newest jobs first."""
    with connect("jobs list") as conn:
        found = queue.list_jobs(conn, Status(status) if status else None, limit)
    click.echo(f"{'id':36}  {'status':10}  {'progress':>8}  {'attempts':>8}  {'created':19}  step")
    for job in found:
        click.echo(
            f"{job.id!s:36}  {job.status:10}  {job.progress or 0:>7}%  {job.attempts:>8}  "
            f"{_age(job):19}  {job.current_step or ''}"
        )


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


def _when(value: Any) -> Any:
    """Timestamps at Python's bounds (PostgreSQL's infinities) as `infinity` text."""
    if isinstance(value, datetime) and value in (timestamps.LATEST, timestamps.EARLIEST):
        return timestamps.shown(value)
    return value


@jobs.command("show")
@click.argument("job_id", type=click.UUID)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@friendly_errors
def show(job_id: UUID, as_json: bool) -> None:
    """Everything about one job."""
    with connect("jobs show") as conn:
        job = queue.get(conn, job_id)
    data = {k: _when(v) for k, v in _job_fields(job).items()}
    if as_json:
        click.echo(json.dumps(data, default=str, indent=2))
        return
    for key, value in data.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        click.echo(f"{key + ':':16} {'' if shown is None else shown}")


@jobs.command("retry")
@click.argument("job_id", type=click.UUID)
@click.option("--fresh", is_flag=True, help="Discard the checkpoint and start the chapter over.")
@friendly_errors
def retry(job_id: UUID, fresh: bool) -> None:
    """Put a failed or cancelled job back to pending."""
    with connect("jobs retry") as conn:
        job = queue.retry(conn, job_id, fresh=fresh)
    click.echo(f"{job.id} is pending again" + (" (starting over)" if fresh else ""))


@jobs.command("cancel")
@click.argument("job_id", type=click.UUID)
@friendly_errors
def cancel(job_id: UUID) -> None:
    """Cancel a pending or processing job."""
    with connect("jobs cancel") as conn:
        job = queue.cancel(conn, job_id)
    click.echo(f"{job.id} cancelled")


@click.command()
@click.option("--url", help="Health endpoint (default: http://127.0.0.1:$PORT/health).")
@click.option("--timeout", type=float, default=5.0, show_default=True)
@friendly_errors
def health(url: str | None, timeout: float) -> None:
    """Ask the running health server and print its answer; exit 0 only when healthy."""
    from health.client import HealthClientError, fetch_health

    url = url or f"http://127.0.0.1:{load_settings().port}/health"
    try:
        status, body = fetch_health(url, timeout=timeout)
    except HealthClientError as exc:
        fail(str(exc), exitcodes.FAILURE)
    click.echo(json.dumps(body, indent=2))
    raise SystemExit(exitcodes.OK if status == 200 else exitcodes.FAILURE)
