"""`storyworker demo`: everything at once on this machine, with no configuration.

A throwaway PostgreSQL (unless DATABASE_URL is set), migrations, a demo user with a
sequence of three chapters, the real supervisor with two workers, live progress bars
read from the database, the first lines of a finished chapter, and a clean shutdown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import psycopg

from supervisor.config import Settings
from supervisor.db import progress, queue, sql
from supervisor.db.connection import connect_for
from supervisor.db.migrate import migrate

PREMISE = (
    "A lighthouse keeper on a dying island finds a door in the sea that opens only at low tide."
)
CHAPTERS = ("The Door at Low Tide", "What the Sea Keeps", "The Last Lamp")
PREFERENCES = {
    "genre": "literary mystery",
    "tone": "wistful",
    "bullet_count": 4,
    "words_per_bullet": 120,
}


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """DATABASE_URL when set; else a throwaway PostgreSQL deleted afterwards."""
    if settings.database_url:
        click.echo("Using DATABASE_URL.")
        yield settings.database_url
        return
    import warnings

    # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here.
    warnings.filterwarnings("ignore", module="platformdirs")
    import pgserver

    root = tempfile.mkdtemp(prefix="storyworker-demo-")
    click.echo("Starting a throwaway PostgreSQL (pgserver)…")
    server = pgserver.get_server(Path(root, "pgdata"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _connect(dsn: str, purpose: str = "demo") -> psycopg.Connection:
    return connect_for(Settings(database_url=dsn), purpose)


def seed(dsn: str) -> list[uuid.UUID]:
    """Migrate, create a demo user, sequence and chapters, and queue one job each."""
    with _connect(dsn) as conn:
        migrate(conn)
        user = sql.one(conn, "demo_user")["id"]
        story = {"user_id": user, "title": "The Keeper", "premise": PREMISE}
        sequence = sql.one(conn, "demo_sequence", story)["id"]
        jobs = []
        for number, title in enumerate(CHAPTERS, start=1):
            chapter = {"sequence_id": sequence, "number": number, "title": title}
            chapter_id = sql.one(conn, "demo_chapter", chapter)["id"]
            jobs.append(queue.enqueue(conn, chapter_id, PREFERENCES))
        return jobs


def free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_supervisor(dsn: str, settings: Settings, port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "HEALTH_HOST": "127.0.0.1"}
    if settings.provider == "offline":
        env.update({"GENERATION_PROVIDER": "offline", "AI_REQUESTS_PER_MINUTE": "0"})
        env.setdefault("OFFLINE_LATENCY_MS", "60")
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--concurrency", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def show_progress(
    dsn: str, jobs: list[uuid.UUID], proc: subprocess.Popen
) -> dict[uuid.UUID, progress.JobProgress]:
    """Draw one live bar per job until every job is settled (or the supervisor dies)."""
    live = sys.stdout.isatty()
    drawn = 0
    final: dict[uuid.UUID, progress.JobProgress] = {}
    with _connect(dsn, "demo progress") as conn:
        for state in progress.follow(conn, jobs):
            final = state
            lines = [
                f"chapter {i + 1}  {progress.describe(state[j])}"
                for i, j in enumerate(jobs)
                if j in state
            ]
            if live and drawn:
                click.echo(f"\x1b[{drawn}A", nl=False)
            click.echo("\n".join(f"{line}\x1b[K" if live else line for line in lines))
            drawn = len(lines)
            if proc.poll() is not None:
                raise click.ClickException(f"the supervisor exited early (code {proc.returncode})")
    return final


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def excerpt(dsn: str, job_id: uuid.UUID, lines: int = 6) -> str:
    with _connect(dsn) as conn:
        row = sql.one(conn, "demo_excerpt", {"job_id": job_id})
    head = "\n".join(row["content"].splitlines()[:lines])
    return f"{row['title']} ({row['word_count']} words)\n\n{head}"


def run_demo(settings: Settings) -> int:
    """The whole demo; returns the exit code. Ctrl-C at any point leaves nothing running."""
    if settings.provider == "gemini" and settings.api_key:
        click.echo(f"A Gemini key is set: the demo will write with {settings.gemini_model}.")
    else:
        settings = settings.with_overrides(provider="offline")
        click.echo(
            "No Gemini key set: the demo writes with the offline provider (placeholder prose)."
        )
    log_path = Path(tempfile.mkdtemp(prefix="storyworker-demo-log-")) / "storyworker.log"
    proc: subprocess.Popen | None = None
    try:
        with database(settings) as dsn:
            jobs = seed(dsn)
            port = free_port(settings.port)
            proc = start_supervisor(dsn, settings, port, log_path)
            click.echo(f"Supervisor pid {proc.pid} with 2 workers; logs: {log_path}")
            click.echo(f"Health: http://127.0.0.1:{port}/health  (also /ready and /metrics)\n")
            final = show_progress(dsn, jobs, proc)
            code = stop(proc)
            click.echo(f"\nSupervisor stopped (exit code {code}).")
            done = [j for j in jobs if final[j].status is progress.Status.COMPLETED]
            if done:
                click.echo("\nThe first lines of " + excerpt(dsn, done[0]))
            return 0 if len(done) == len(jobs) and code == 0 else 1
    except KeyboardInterrupt:
        click.echo("\nInterrupted; stopping everything.")
        return 130
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            stop(proc, timeout=15)
