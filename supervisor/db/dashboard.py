"""What `storyworker dashboard` reads, by meaning; the SQL is in queries.sql
(`dashboard_*`). Its actions are the CLI's own: `queue.retry` and `queue.cancel`,
one job at a time, in one transaction for a bulk action.

Counts and lists stay bounded at any table size: statuses are counted exactly up to
a cap and estimated by the planner above it, lists are keyset-paginated, and bulk
actions touch at most a limit of jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from supervisor.db import queue, sql
from supervisor.db.jobs import Status
from supervisor.errors import InvalidStateError, JobNotFoundError

STATUSES = tuple(s.value for s in Status)
#: What each bulk action can change, as `jobs retry/cancel --status` allow.
ACTIONABLE = {"retry": ("failed", "cancelled"), "cancel": ("pending", "processing")}


@dataclass(frozen=True)
class JobFilter:
    """The Jobs page's filter; every field optional (None: no condition)."""

    status: str | None = None
    user_id: UUID | None = None
    sequence_id: UUID | None = None
    provider: str | None = None
    #: Text that error_message contains (case-insensitive, taken literally).
    text: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def params(self, statuses: Sequence[str] | None = None) -> dict[str, Any]:
        """The `dashboard_jobs` parameters; `statuses` narrows to those (within
        `status`, when both are given)."""
        wanted = [self.status] if self.status else None
        if statuses is not None:
            wanted = [s for s in (wanted or statuses) if s in statuses]
        return {
            "statuses": wanted,
            "user_id": self.user_id,
            "sequence_id": self.sequence_id,
            "provider": self.provider,
            "pattern": None if self.text is None else f"%{_literal(self.text)}%",
            "created_from": self.created_from,
            "created_to": self.created_to,
        }


def _literal(text: str) -> str:
    """`text` as an ILIKE pattern that matches itself only."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Cursor:
    """Where a page of jobs ends: the last row's created_at (as PostgreSQL wrote it, so
    no precision is lost) and id."""

    created_at: str
    id: UUID

    def token(self) -> str:
        return f"{self.created_at}|{self.id}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        """ValueError for a token this class did not make."""
        created_at, _, job_id = token.rpartition("|")
        if created_at not in ("infinity", "-infinity"):
            datetime.fromisoformat(created_at)  # ValueError unless PostgreSQL's text
        return cls(created_at, UUID(job_id))


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    #: Where the next (older) page starts; None on the last page.
    next: Cursor | None = None


def configure(conn: psycopg.Connection, statement_timeout_ms: int) -> None:
    """Bound every statement of a dashboard connection."""
    sql.one(conn, "dashboard_session", {"timeout": str(statement_timeout_ms)})


# --- Overview ---------------------------------------------------------------------


@dataclass(frozen=True)
class StatusCount:
    status: str
    count: int
    #: False: above the cap, `count` is the planner's estimate.
    exact: bool


def status_counts(conn: psycopg.Connection, cap: int) -> list[StatusCount]:
    """Jobs per status: exact up to `cap`, the planner's estimate (never below the cap)
    above it."""
    found = []
    for row in sql.all_rows(conn, "dashboard_status_counts", {"cap": cap}):
        counted = int(row["counted"])
        if counted <= cap:
            found.append(StatusCount(row["status"], counted, True))
        else:
            estimated = int(row["estimated"] or 0)
            found.append(StatusCount(row["status"], max(estimated, counted), False))
    return found


def oldest_pending_seconds(conn: psycopg.Connection) -> float | None:
    row = sql.one(conn, "dashboard_oldest_pending")
    return None if row is None or row["age"] is None else float(row["age"])


@dataclass(frozen=True)
class Series:
    """Per-bucket figures over a window, oldest bucket first."""

    window_seconds: int
    step_seconds: int
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    latency_p50: list[float | None] = field(default_factory=list)
    latency_p95: list[float | None] = field(default_factory=list)


def series(conn: psycopg.Connection, window_seconds: int, step_seconds: int) -> Series:
    """Throughput and queue latency over the last `window_seconds`."""
    buckets = window_seconds // step_seconds
    params = {"window": window_seconds, "step": step_seconds}
    done = Series(
        window_seconds,
        step_seconds,
        [0] * buckets,
        [0] * buckets,
        [None] * buckets,
        [None] * buckets,
    )
    for row in sql.all_rows(conn, "dashboard_throughput", params):
        index = min(max(row["bucket"], 0), buckets - 1)
        done.completed[index] += int(row["completed"])
        done.failed[index] += int(row["failed"])
    for row in sql.all_rows(conn, "dashboard_latency", params):
        index = min(max(row["bucket"], 0), buckets - 1)
        done.latency_p50[index] = row["p50"]
        done.latency_p95[index] = row["p95"]
    return done


def waiting(conn: psycopg.Connection, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """Pending jobs held back by an earlier chapter of their story: how many, and the
    oldest `limit` of them."""
    rows = sql.all_rows(conn, "dashboard_waiting", {"limit": limit})
    return (int(rows[0]["total"]) if rows else 0), rows


def backlog(conn: psycopg.Connection, limit: int) -> list[dict[str, Any]]:
    """The users with the most jobs pending or processing."""
    return sql.all_rows(conn, "dashboard_backlog", {"limit": limit})


def tokens(conn: psycopg.Connection, window_seconds: int) -> list[dict[str, Any]]:
    """Tokens per provider and model spent by the jobs that ended in the window."""
    return sql.all_rows(conn, "dashboard_tokens", {"window": window_seconds})


# --- Jobs, a job, a story ---------------------------------------------------------


def jobs(
    conn: psycopg.Connection, where: JobFilter, limit: int, after: Cursor | None = None
) -> Page:
    """One page of jobs, newest first, after `after`."""
    params = {
        **where.params(),
        "after_at": after.created_at if after else None,
        "after_id": after.id if after else None,
        "limit": limit + 1,
    }
    rows = sql.all_rows(conn, "dashboard_jobs", params)
    if len(rows) <= limit:
        return Page(rows)
    rows = rows[:limit]
    return Page(rows, Cursor(rows[-1]["cursor_at"], rows[-1]["id"]))


def matching(conn: psycopg.Connection, where: JobFilter, action: str, limit: int) -> list[UUID]:
    """The newest `limit` + 1 jobs that `action` (retry or cancel) would change under
    `where`: one more than the limit says there are more."""
    params = {
        **where.params(ACTIONABLE[action]),
        "after_at": None,
        "after_id": None,
        "limit": limit + 1,
    }
    return [row["id"] for row in sql.all_rows(conn, "dashboard_jobs", params)]


def job(conn: psycopg.Connection, job_id: UUID) -> dict[str, Any] | None:
    """Every column of one job, its story's title and its chapter's text; None when
    there is no such job."""
    return sql.one(conn, "dashboard_job", {"job_id": job_id})


def text_since(conn: psycopg.Connection, job_id: UUID, offset: int) -> dict[str, Any] | None:
    """The job's state and its chapter's text after character `offset` (`reset`: the
    chapter is shorter now, and `text` is all of it)."""
    return sql.one(conn, "dashboard_text", {"job_id": job_id, "offset": offset})


def story(conn: psycopg.Connection, sequence_id: UUID) -> dict[str, Any] | None:
    return sql.one(conn, "dashboard_story", {"sequence_id": sequence_id})


def chapters(conn: psycopg.Connection, sequence_id: UUID) -> list[dict[str, Any]]:
    """The story's chapters in order, with their newest job and the job that wrote them."""
    return sql.all_rows(conn, "dashboard_story_chapters", {"sequence_id": sequence_id})


# --- actions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    changed: list[UUID]
    #: Jobs that were no longer in a state the action applies to.
    skipped: int = 0


def act(conn: psycopg.Connection, action: str, job_ids: Sequence[UUID]) -> Outcome:
    """`retry` or `cancel` each job exactly as `storyworker jobs retry/cancel ID` does,
    all in one transaction; a job that changed state meanwhile is skipped."""
    operation = {"retry": queue.retry, "cancel": queue.cancel}[action]
    changed, skipped = [], 0
    with conn.transaction():
        for job_id in job_ids:
            try:
                changed.append(operation(conn, job_id).id)
            except (InvalidStateError, JobNotFoundError):
                skipped += 1
    return Outcome(changed, skipped)
