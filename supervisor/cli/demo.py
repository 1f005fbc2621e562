"""`storyworker demo`: everything at once on this machine, with no configuration.

A throwaway PostgreSQL of its own, migrations, two demo users with a story of three
chapters each, the real supervisor with two workers writing both stories side by side
(each story's chapters one at a time, in order: issue 21), live progress bars read
from the database, the order each story was written in, the first lines of a finished
chapter, and a clean shutdown.

The demo never uses DATABASE_URL (from the environment or a `.env`): its workers write
placeholder prose and would take that database's pending jobs. `--database-url URL`
opts into another database on purpose; the demo then touches only what it created
there: its supervisor's claims and rescues are scoped to the demo's own stories (the
session setting `storyworker.claim_sequence`, sent in the connection string), and the
demo's users, stories, chapters and jobs are deleted at the end.

Everything the demo puts on disk (the database, the supervisor's log) lives in one
temporary folder, removed however the demo ends. A supervisor that exits early (a
rejected key, say) ends the demo at once, with the log line that says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from supervisor import exitcodes
from supervisor.cli.term import Term
from supervisor.config import Settings
from supervisor.db import progress, queue, sql
from supervisor.db.connection import connect_for
from supervisor.db.migrate import migrate
from supervisor.redact import redact, remember

#: Two users' stories: (who, title, premise, chapter titles).
STORIES = (
    (
        "Ada",
        "The Keeper",
        "A lighthouse keeper on a dying island finds a door in the sea that opens only at"
        " low tide.",
        ("The Door at Low Tide", "What the Sea Keeps", "The Last Lamp"),
    ),
    (
        "Ben",
        "The Salt Road",
        "A mapmaker hired to chart a desert road finds that the road redraws itself at night.",
        ("The Commission", "Night Ink", "Where the Road Ends"),
    ),
)
PREFERENCES = {
    "genre": "literary mystery",
    "tone": "wistful",
    "bullet_count": 4,
    "words_per_bullet": 120,
}
#: The session setting that scopes a supervisor's claims and rescues to some sequences.
CLAIM_SCOPE = "storyworker.claim_sequence"
#: How often the progress display looks at the supervisor between changes.
ALIVE_CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class Seeded:
    """What the demo created in its database: per story its user, sequence and jobs
    (chapter order), and a label per job for the progress bars."""

    user_ids: list[uuid.UUID]
    sequence_ids: list[uuid.UUID]
    jobs: list[uuid.UUID]
    labels: list[str]


class SupervisorExited(Exception):
    """The demo's supervisor ended before the jobs did."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the supervisor exited with code {code}: {reason}")
        self.code = code


@contextlib.contextmanager
def database(database_url: str | None, root: Path) -> Iterator[str]:
    """`database_url` when given (--database-url); else a throwaway PostgreSQL in
    `root`, stopped afterwards."""
    if database_url:
        click.echo("Using the database given with --database-url; only the demo's jobs run.")
        yield database_url
        return
    import warnings

    # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here.
    warnings.filterwarnings("ignore", module="platformdirs")
    import pgserver

    click.echo("Starting a throwaway PostgreSQL (pgserver)…")
    server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _connect(dsn: str, purpose: str = "demo") -> psycopg.Connection:
    return connect_for(Settings(database_url=dsn), purpose)


def seed(dsn: str) -> Seeded:
    """Migrate, create the demo's users, stories and chapters, and queue one job each,
    the first story's chapters first."""
    seeded = Seeded([], [], [], [])
    with _connect(dsn) as conn:
        migrate(conn)
        for who, title, premise, chapters in STORIES:
            user = sql.one(conn, "demo_user")["id"]
            story = {"user_id": user, "title": title, "premise": premise}
            sequence = sql.one(conn, "demo_sequence", story)["id"]
            seeded.user_ids.append(user)
            seeded.sequence_ids.append(sequence)
            for number, name in enumerate(chapters, start=1):
                chapter = {"sequence_id": sequence, "number": number, "title": name}
                chapter_id = sql.one(conn, "demo_chapter", chapter)["id"]
                seeded.jobs.append(queue.enqueue(conn, chapter_id, PREFERENCES))
                seeded.labels.append(f"{who} ch {number}")
    return seeded


def unseed(dsn: str, seeded: Seeded) -> None:
    """Delete the demo's users and, with them, their stories, chapters and jobs."""
    with _connect(dsn, "demo cleanup") as conn:
        for user in seeded.user_ids:
            sql.run(conn, "demo_cleanup", {"user_id": user})


def scoped(dsn: str, *sequence_ids: uuid.UUID) -> str:
    """`dsn` with its sessions' claims and rescues scoped to `sequence_ids`."""
    scope = ",".join(str(s) for s in sequence_ids)
    options = conninfo_to_dict(dsn).get("options") or ""
    return make_conninfo(dsn, options=f"{options} -c {CLAIM_SCOPE}={scope}".strip())


def story_order(dsn: str, seeded: Seeded) -> list[str]:
    """For each story, the chapters in the order they were started, and whether each
    started only after the one before it had ended."""
    lines = []
    with _connect(dsn) as conn:
        for (who, title, *_), sequence in zip(STORIES, seeded.sequence_ids, strict=True):
            rows = sql.all_rows(conn, "demo_story_order", {"sequence_id": sequence})
            numbers = ", ".join(str(r["chapter_number"]) for r in rows)
            serial = all(b["started_at"] >= a["completed_at"] for a, b in pairwise(rows))
            in_order = [r["chapter_number"] for r in rows] == sorted(
                r["chapter_number"] for r in rows
            )
            verdict = "one at a time, in order" if serial and in_order else "NOT in order"
            lines.append(f"{who}'s {title}: chapters {numbers}, {verdict}")
    return lines


def free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_supervisor(dsn: str, settings: Settings, port: int, log_path: Path) -> subprocess.Popen:
    # DATABASE_URL here wins over any .env the supervisor reads in this folder.
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


@contextlib.contextmanager
def supervisor(dsn: str, settings: Settings, log_path: Path) -> Iterator[subprocess.Popen]:
    """The supervisor, running; on the way out (an interrupt, an error) it is told to
    release its jobs at once (QUIT) and waited for."""
    port = free_port(settings.port)
    proc = start_supervisor(dsn, settings, port, log_path)
    click.echo(f"Supervisor pid {proc.pid} with 2 workers; logs: {log_path} (removed at the end)")
    click.echo(f"Health: http://127.0.0.1:{port}/health  (also /ready and /metrics)\n")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            stop(proc, timeout=15)


def show_progress(
    dsn: str, seeded: Seeded, proc: subprocess.Popen, log_path: Path
) -> dict[uuid.UUID, progress.JobProgress]:
    """Draw one live bar per job until every job is settled. Raises SupervisorExited
    as soon as the supervisor is gone with jobs unsettled."""
    jobs, labels = seeded.jobs, seeded.labels
    term = Term.detect()
    live = term.live
    drawn = 0
    final: dict[uuid.UUID, progress.JobProgress] = {}
    alive = lambda: proc.poll() is None  # noqa: E731
    with _connect(dsn, "demo progress") as conn:
        for state in progress.follow(conn, jobs, alive=alive, poll_seconds=ALIVE_CHECK_SECONDS):
            final = state
            lines = [
                term.show(f"{label}  {progress.describe(state[j], term.width - 11)}")
                for label, j in zip(labels, jobs, strict=True)
                if j in state
            ]
            if live and drawn:
                click.echo(f"\x1b[{drawn}A", nl=False)
            click.echo("\n".join(f"\r{line}\x1b[K" if live else line for line in lines))
            drawn = len(lines)
    if not (final and all(p.done for p in final.values())):
        raise SupervisorExited(proc.wait(), exit_reason(log_path))
    return final


def exit_reason(log_path: Path) -> str:
    """The log line that says why the supervisor stopped: the last error or critical
    one, preferring one that carries an error, else the last line."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    serious = [text for level, text in map(_level_and_text, lines) if level in _SERIOUS]
    with_error = [text for text in serious if "error" in text]
    found = with_error or serious or [_level_and_text(line)[1] for line in lines[-1:]]
    return found[-1] if found else "(its log is empty)"


_SERIOUS = {"ERROR", "CRITICAL"}


def _level_and_text(line: str) -> tuple[str, str]:
    """(level, message and fields) of one log line, text or JSON."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            rest = " ".join(f"{k}={v}" for k, v in record.items() if k not in _JSON_META)
            return str(record.get("level", "")), f"{record.get('message', '')} {rest}".strip()
    parts = line.split(" ", 3)  # timestamp, level, logger, message and fields
    return (parts[1], parts[3]) if len(parts) == 4 else ("", line)


_JSON_META = {"ts", "time", "timestamp", "level", "logger", "message"}


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


def choose_provider(settings: Settings) -> Settings:
    gemini = settings.options("gemini")
    if settings.provider == "gemini" and gemini.api_key:
        click.echo(f"A Gemini key is set: the demo will write with {gemini.model}.")
        return settings
    click.echo("No Gemini key set: the demo writes with the offline provider (placeholder prose).")
    return settings.with_overrides(provider="offline")


def follow_and_stop(dsn: str, seeded: Seeded, proc: subprocess.Popen, log: Path) -> int:
    """Show the jobs to their end, stop the supervisor, say in what order each story
    was written, quote a chapter; the exit code."""
    jobs = seeded.jobs
    final = show_progress(dsn, seeded, proc, log)
    code = stop(proc)
    click.echo(f"\nSupervisor stopped (exit code {code}).")
    click.echo("\n".join(story_order(dsn, seeded)))
    done = [j for j in jobs if final[j].status is progress.Status.COMPLETED]
    if done:
        click.echo("\nThe first lines of " + excerpt(dsn, done[0]))
    return exitcodes.OK if len(done) == len(jobs) and code == 0 else exitcodes.FAILURE


def run_demo(settings: Settings, database_url: str | None = None) -> int:
    """The whole demo; returns the exit code. Ctrl-C at any point leaves nothing running
    and no temporary folder behind."""
    settings = choose_provider(settings)
    try:
        with contextlib.ExitStack() as stack:
            root = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="storyworker-demo-", ignore_cleanup_errors=True)
            )
            dsn = stack.enter_context(database(database_url, Path(root)))
            seeded = seed(dsn)
            if database_url:  # runs after the supervisor has stopped
                stack.callback(unseed, dsn, seeded)
            worker_dsn = scoped(dsn, *seeded.sequence_ids) if database_url else dsn
            remember(dsns=[worker_dsn])
            log = Path(root, "storyworker.log")
            proc = stack.enter_context(supervisor(worker_dsn, settings, log))
            return follow_and_stop(dsn, seeded, proc, log)
    except SupervisorExited as exc:
        click.echo(f"storyworker: error: {redact(str(exc))}", err=True)
        return exc.code or exitcodes.FAILURE
    except KeyboardInterrupt:
        click.echo("\nInterrupted; stopping everything.")
        return exitcodes.INTERRUPTED
