"""The service's own commands: migrate, run, demo and watch."""

from __future__ import annotations

import sys
from uuid import UUID

import click
import psycopg

from supervisor import exitcodes
from supervisor.cli.common import SettingFlag, friendly_errors
from supervisor.config import load_settings


@click.command()
@friendly_errors
def migrate() -> None:
    """Apply the database migrations shipped with storyworker (idempotent)."""
    from supervisor import logs
    from supervisor.db.connection import connect_for
    from supervisor.db.migrate import migrate as apply

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    with connect_for(settings, "migrate") as conn:
        applied = apply(conn)
    click.echo(
        f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")
    )


@click.command()
@click.option(
    "--concurrency",
    type=SettingFlag("WORKER_CONCURRENCY"),
    help="Worker processes (WORKER_CONCURRENCY).",
)
@click.option("--port", type=SettingFlag("PORT", "PORT"), help="Health server port (PORT).")
@click.option("--provider", help="gemini, openai or offline (GENERATION_PROVIDER).")
@friendly_errors
def run(concurrency: int | None, port: int | None, provider: str | None) -> None:
    """Run the supervisor, its workers and the health server in the foreground."""
    from supervisor.arbiter.bootstrap import run as run_supervisor

    sys.exit(run_supervisor({"concurrency": concurrency, "port": port, "provider": provider}))


@click.command()
@click.option(
    "--database-url",
    metavar="DSN",
    help="Run in this database instead of a throwaway one (never DATABASE_URL): only "
    "the demo's own jobs are touched, and what it created is deleted at the end.",
)
@friendly_errors
def demo(database_url: str | None) -> None:
    """Everything at once on this machine: a throwaway Postgres, two workers, live."""
    from supervisor import logs
    from supervisor.cli.demo import run_demo

    settings = load_settings()
    logs.configure("WARNING", settings.log_format)
    sys.exit(run_demo(settings, _checked_dsn("--database-url", database_url)))


def _checked_dsn(option: str, value: str | None) -> str | None:
    """`value` once it reads as its author meant, remembered as a secret; else a
    ConfigError (78) that shows it masked."""
    from supervisor.dsn import problem
    from supervisor.errors import ConfigError
    from supervisor.redact import redact_dsn, remember

    value = (value or "").strip() or None
    if value is None:
        return None
    remember(dsns=[value])
    wrong = problem(value)
    if wrong:
        raise ConfigError(f"{option} {wrong}: {redact_dsn(value)}")
    return value


@click.command()
@click.argument("job_id", type=click.UUID)
@friendly_errors
def watch(job_id: UUID) -> None:
    """A live progress bar for one job; exit 0 when it completes, 1 failed, 4
    cancelled, 66 no such job, 130 interrupted (Ctrl-C)."""
    from supervisor.cli.common import connect, fail
    from supervisor.db import queue
    from supervisor.errors import JobNotFoundError

    with connect("watch") as conn:
        try:
            queue.get(conn, job_id)
        except JobNotFoundError as exc:
            fail(str(exc), exitcodes.NO_SUCH_JOB)
        try:
            _follow(conn, job_id)
        except KeyboardInterrupt:
            click.echo()
            sys.exit(exitcodes.INTERRUPTED)


def _follow(conn: psycopg.Connection, job_id: UUID) -> None:
    """Draw the job's bar until it settles; exit with the code its end calls for."""
    from supervisor.cli.term import Term
    from supervisor.db import progress

    term = Term.detect()
    live = term.live
    last = None
    for state in progress.follow(conn, [job_id]):
        last = state[job_id]
        line = term.show(progress.describe(last, term.width))
        click.echo(f"\r{line}\x1b[K" if live else line, nl=not live)
    if live:
        click.echo()
    if last is not None and last.status.value == "failed":
        sys.exit(exitcodes.FAILURE)
    if last is not None and last.status.value == "cancelled":
        sys.exit(exitcodes.CANCELLED)
