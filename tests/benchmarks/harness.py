"""Shared pieces of the benchmarks: databases, fixtures in bulk, processes, statistics."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from tests.pg import PgServer
from tests.service import FAST_ENV, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    """One measurement's samples, summarised as median and min-max."""

    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def row(self) -> str:
        if not self.samples:
            return f"{self.name:<58} {'n/a':>12}  {self.note}"
        low, high = min(self.samples), max(self.samples)
        spread = f"{_fmt(low)}-{_fmt(high)}"
        return f"{self.name:<58} {_fmt(self.median):>12} {self.unit:<8} {spread:>17}  {self.note}"


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


class Bench:
    """A benchmark session on one server: a clean, migrated database per measurement."""

    def __init__(self, server: PgServer, runs: int) -> None:
        self.server = server
        self.runs = runs

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        with self.server.database() as dsn:
            yield dsn


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, row_factory=dict_row)


def seed_chapters(
    dsn: str, count: int, prefs: dict | None = None, *, with_jobs: bool = True
) -> list[uuid.UUID]:
    """`count` chapters of one user, each the first chapter of a story of its own (a
    story's chapters are written one at a time, so chapters of one story would not
    measure the queue), each with a pending job unless not `with_jobs` (ids returned)."""
    import json

    with connect(dsn) as conn:
        user = conn.execute(
            "insert into auth.users values (gen_random_uuid()) returning id"
        ).fetchone()["id"]
        conn.execute(
            "with s as (insert into sequences (user_id, title, premise)"
            " select %s, 'Bench', 'p' from generate_series(1, %s) returning id)"
            " insert into chapters (sequence_id, chapter_number) select id, 1 from s",
            (user, count),
        )
        if not with_jobs:
            return []
        rows = conn.execute(
            "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences)"
            " select c.sequence_id, c.id, %s, %s from chapters c"
            " join sequences s on s.id = c.sequence_id where s.user_id = %s"
            " order by c.created_at, c.id returning id",
            (user, json.dumps(prefs or {}), user),
        ).fetchall()
        return [r["id"] for r in rows]


def empty_jobs(dsn: str, count: int) -> None:
    """Jobs with no chapter, each in a story of its own: the queue's own cost, nothing
    else."""
    with connect(dsn) as conn:
        user = conn.execute(
            "insert into auth.users values (gen_random_uuid()) returning id"
        ).fetchone()["id"]
        conn.execute(
            "with s as (insert into sequences (user_id) select %s from generate_series(1, %s)"
            " returning id)"
            " insert into generation_jobs (sequence_id, user_id, user_preferences)"
            " select id, %s, '{}' from s",
            (user, count, user),
        )


def python_processes(script: str, args: list[list[str]], timeout: float = 600) -> list[str]:
    """Run `script` in one process per argument list, all at once; their stdouts."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *a],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for a in args
    ]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a benchmark process failed: {[p.returncode for p in procs]}")
    return outputs


@contextlib.contextmanager
def storyworker(dsn: str, log_dir: Path, **env: str) -> Iterator[subprocess.Popen]:
    """A real `storyworker run`, healthy before the block runs, stopped after it."""
    port = free_port()
    full = {**os.environ, **FAST_ENV, "DATABASE_URL": dsn, "PORT": str(port), **env}
    full = {k: v for k, v in full.items() if not k.startswith(("GEMINI", "GOOGLE"))}
    log = (log_dir / f"storyworker-{port}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run"],
        env=full,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    proc.port = port  # type: ignore[attr-defined]
    try:
        from health.client import HealthClientError, fetch_health

        def healthy() -> bool:
            try:
                return fetch_health(f"http://127.0.0.1:{port}/health", 1)[0] == 200
            except HealthClientError:
                return False

        wait_for(healthy, 60, "a healthy storyworker", interval=0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> None:
    wait_for(predicate, timeout, "the benchmark condition", interval=interval)


def count(conn: psycopg.Connection, status: str) -> int:
    return conn.execute(
        "select count(*) as n from generation_jobs where status = %s", (status,)
    ).fetchone()["n"]


def now() -> float:
    return time.time()


def enqueue_jobs(
    conn: psycopg.Connection, prefs: dict, chapter_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """One pending job for `chapter_id`, or for every chapter; committed on return."""
    import json

    rows = conn.execute(
        "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences)"
        " select c.sequence_id, c.id, s.user_id, %s from chapters c"
        " join sequences s on s.id = c.sequence_id"
        " where %s::uuid is null or c.id = %s order by c.chapter_number returning id",
        (json.dumps(prefs), chapter_id, chapter_id),
    ).fetchall()
    return [r["id"] for r in rows]


def chapter_ids(conn: psycopg.Connection) -> list[uuid.UUID]:
    return [r["id"] for r in conn.execute("select id from chapters order by created_at, id")]
