"""The `storyworker` command line."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import click

from supervisor import exitcodes
from supervisor.config import load_settings
from supervisor.errors import ConfigError, DatabaseError, StoryworkerError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    """Print one line to stderr and exit with `code`."""
    click.echo(f"storyworker: error: {message}", err=True)
    sys.exit(code)


def friendly_errors(func: F) -> F:
    """Turn storyworker's errors into one line on stderr and a distinct exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc), exitcodes.CONFIG)
        except DatabaseError as exc:
            fail(str(exc), exitcodes.UNAVAILABLE)
        except StoryworkerError as exc:
            fail(str(exc), exitcodes.FAILURE)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="storyworker")
def main() -> None:
    """storyworker: writes story chapters with an LLM from a PostgreSQL job queue."""


@main.command()
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


@main.command()
@click.option("--concurrency", type=int, help="Worker processes (WORKER_CONCURRENCY).")
@click.option("--port", type=int, help="Health server port (PORT).")
@click.option("--provider", help="gemini or offline (GENERATION_PROVIDER).")
@friendly_errors
def run(concurrency: int | None, port: int | None, provider: str | None) -> None:
    """Run the supervisor, its workers and the health server in the foreground."""
    from supervisor.arbiter.bootstrap import run as run_supervisor

    sys.exit(run_supervisor({"concurrency": concurrency, "port": port, "provider": provider}))


@main.command()
@friendly_errors
def demo() -> None:
    """Everything at once on this machine: a throwaway Postgres, two workers, live."""
    from supervisor import logs
    from supervisor.cli.demo import run_demo

    settings = load_settings()
    logs.configure("WARNING", settings.log_format)
    sys.exit(run_demo(settings))


@main.command()
@click.argument("job_id", type=click.UUID)
@friendly_errors
def watch(job_id: UUID) -> None:
    """A live progress bar for one job; exit 0 when it completes, 1 failed, 4 cancelled."""
    from supervisor.db import progress, queue
    from supervisor.db.connection import connect_for

    settings = load_settings()
    with connect_for(settings, "watch") as conn:
        queue.get(conn, job_id)  # a clear error for an unknown id
        live = sys.stdout.isatty()
        last = None
        for state in progress.follow(conn, [job_id]):
            last = state[job_id]
            line = progress.describe(last)
            click.echo(f"\r{line}\x1b[K" if live else line, nl=not live)
    if live:
        click.echo()
    if last is not None and last.status.value == "failed":
        sys.exit(1)
    if last is not None and last.status.value == "cancelled":
        sys.exit(4)


def _register_subcommands() -> None:
    from supervisor.cli import admin as cli_admin

    main.add_command(cli_admin.enqueue)
    main.add_command(cli_admin.jobs)
    main.add_command(cli_admin.health)


_register_subcommands()
