"""Producing and steering jobs: what the app, the operator's commands and the
dashboard do to the queue (enqueue, list, cancel, retry, counts)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from health.stats import QueueStats
from supervisor.db import sql
from supervisor.db.jobs import Job, Status
from supervisor.errors import ChapterNotFoundError, InvalidStateError, JobNotFoundError

_one = sql.one
_all = sql.all_rows


def enqueue(conn: psycopg.Connection, chapter_id: UUID, preferences: Any) -> UUID:
    """Queue a job for an existing chapter; user and sequence are taken from it."""
    row = _one(conn, "enqueue", {"chapter_id": chapter_id, "preferences": Jsonb(preferences)})
    if row is None:
        raise ChapterNotFoundError(f"no chapter with id {chapter_id}")
    return row["id"]


def get(conn: psycopg.Connection, job_id: UUID) -> Job:
    row = _one(conn, "get", {"job_id": job_id})
    if row is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return Job.from_row(row)


def list_jobs(
    conn: psycopg.Connection, status: Status | None = None, limit: int = 50, **match: Any
) -> list[Job]:
    """The newest jobs first, optionally only those in `status`; `match` narrows
    further by `user_id`, `sequence_id`, `chapter_id` and `since` (see `matching`)."""
    rows = _all(conn, "list", {**_filter(status, **match), "limit": limit})
    return [Job.from_row(row) for row in rows]


def _filter(
    status: Status | None,
    *,
    user_id: UUID | None = None,
    chapter_id: UUID | None = None,
    since: float | None = None,
    sequence_id: UUID | None = None,
) -> dict[str, Any]:
    return {
        "status": status and status.value,
        "user_id": user_id,
        "sequence_id": sequence_id,
        "chapter_id": chapter_id,
        "since": since,
    }


def matching(conn: psycopg.Connection, status: Status, **match: Any) -> list[UUID]:
    """Ids of the jobs in `status` that `retry_matching` or `cancel_matching` would
    change: `since` (seconds) keeps jobs that ended that recently, or that have not
    ended and were created that recently."""
    return [row["id"] for row in _all(conn, "matching", _filter(status, **match))]


def retry_matching(
    conn: psycopg.Connection, status: Status, *, fresh: bool = False, **match: Any
) -> list[UUID]:
    """`retry` every failed or cancelled job in `status` that `match` selects."""
    rows = _all(conn, "retry_matching", {**_filter(status, **match), "fresh": fresh})
    return [row["id"] for row in rows]


def cancel_matching(conn: psycopg.Connection, status: Status, **match: Any) -> list[UUID]:
    """`cancel` every pending or processing job in `status` that `match` selects."""
    return [row["id"] for row in _all(conn, "cancel_matching", _filter(status, **match))]


def cancel(conn: psycopg.Connection, job_id: UUID) -> Job:
    """Cancel a pending or processing job; its worker notices at its next write."""
    row = _one(conn, "cancel", {"job_id": job_id})
    if row is None:
        job = get(conn, job_id)
        raise InvalidStateError(
            f"job {job_id} is {job.status}; only pending or processing jobs can be cancelled"
        )
    return Job.from_row(row)


def retry(conn: psycopg.Connection, job_id: UUID, *, fresh: bool = False) -> Job:
    """Put a failed or cancelled job back to pending with fresh retries.

    It resumes from its checkpoint unless `fresh`, which starts the chapter over.
    """
    row = _one(conn, "retry", {"job_id": job_id, "fresh": fresh})
    if row is None:
        job = get(conn, job_id)
        raise InvalidStateError(
            f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried"
        )
    return Job.from_row(row)


def stats(conn: psycopg.Connection) -> QueueStats:
    rows = _all(conn, "queue_stats", {})
    age = rows[0]["oldest_runnable_age"] if rows else None
    return QueueStats(
        depth_by_status={row["status"]: int(row["jobs"]) for row in rows},
        oldest_runnable_age_seconds=None if age is None else float(age),
    )


def last_hour(conn: psycopg.Connection) -> dict[str, int]:
    """Jobs completed and failed in the last hour."""
    row = _one(conn, "last_hour") or {}
    return {"completed": int(row.get("completed") or 0), "failed": int(row.get("failed") or 0)}


def story_stats(conn: psycopg.Connection, top: int = 5) -> dict[str, Any]:
    """Jobs held back by their story, the oldest one's age (seconds), and the `top`
    users by pending jobs: {user_id, pending, processing, oldest_pending_seconds}."""
    waits = _one(conn, "story_waits") or {}
    users = [
        {"user_id": str(r["user_id"]), "pending": r["pending"], "processing": r["processing"],
         "oldest_pending_seconds": _seconds(r["oldest_pending"])}
        for r in _all(conn, "user_backlog", {"limit": top})
    ]  # fmt: skip
    return {
        "waiting_on_story": int(waits.get("waiting") or 0),
        "oldest_wait_seconds": _seconds(waits.get("oldest_wait")),
        "top_users": users,
    }


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)
