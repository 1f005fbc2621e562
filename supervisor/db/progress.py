"""Live job progress for terminals, driven by the database: LISTEN on
`generation_progress` (the trigger publishes every change of progress, step or
status), with a periodic re-read as the fallback when NOTIFY is unavailable."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from uuid import UUID

import psycopg

from supervisor.db import sql
from supervisor.db.connection import translated
from supervisor.db.jobs import Status

TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class JobProgress:
    job_id: UUID
    status: Status
    progress: int
    step: str
    error: str | None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


def bar(progress: int, width: int = 30) -> str:
    """`[#########---------------------]` for 0..100."""
    filled = max(0, min(width, round(width * progress / 100)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def describe(p: JobProgress, columns: int = 160) -> str:
    """One line for a job, at most `columns - 1` characters (so it never wraps on a
    terminal that wide): bar, percentage, status, and the step when it says more than
    the status (or the error). The bar shrinks first, then the detail is cut."""
    detail = p.error if p.status is Status.FAILED and p.error else p.step
    if detail == p.status.value:
        detail = ""
    detail = " ".join(detail.split())
    tail = f" {p.progress:3d}%  {p.status.value:<10} {detail}".rstrip()
    width = max(10, min(30, columns - 1 - len(tail) - 2))
    line = f"{bar(p.progress, width)}{tail}"
    return line if len(line) < columns else line[: max(columns - 2, 1)] + "…"


def read(conn: psycopg.Connection, job_ids: Sequence[UUID]) -> dict[UUID, JobProgress]:
    rows = sql.all_rows(conn, "progress", {"job_ids": list(job_ids)})
    return {
        row["id"]: JobProgress(
            row["id"],
            Status(row["status"]),
            row["progress"] or 0,
            row["current_step"] or "",
            row["error_message"],
        )
        for row in rows
    }


def follow(
    conn: psycopg.Connection,
    job_ids: Sequence[UUID],
    *,
    alive: Callable[[], bool] = lambda: True,
    poll_seconds: float = POLL_SECONDS,
) -> Iterator[dict[UUID, JobProgress]]:
    """Yield the jobs' progress now and after every change, until all are settled, or
    until `alive()`, asked at least every `poll_seconds`, says whoever would settle
    them is gone.

    `conn` must be an autocommit connection of its own (it LISTENs).
    """
    wanted = {str(j) for j in job_ids}
    sql.run(conn, "listen_progress")
    current = read(conn, job_ids)
    yield current
    while alive() and not all(p.done for p in current.values()):
        changed = False
        with translated("waiting for progress", conn):
            for note in conn.notifies(timeout=poll_seconds, stop_after=1):
                changed = changed or json.loads(note.payload).get("job_id") in wanted
        # A quiet period re-reads too: NOTIFY may be unavailable behind a pooler.
        latest = read(conn, job_ids)
        if changed or latest != current:
            current = latest
            yield current
