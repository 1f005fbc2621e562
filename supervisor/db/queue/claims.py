"""The worker's side of the queue: a claim, and everything written on its behalf.

Writes made for a `Claim` are fenced: when the job was cancelled, rescued or re-claimed
meanwhile they change nothing and raise LeaseLostError, which tells the worker to stop.
`WorkerQueue` binds these functions to one connection (the worker's `seam.JobQueue`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from supervisor.db import realtime, sql
from supervisor.db.connection import translated
from supervisor.db.jobs import Claim, Outcome, Status
from supervisor.db.memory import StoryMemory, recall, recall_with_vectors, remember  # noqa: F401
from supervisor.db.queue.steering import get
from supervisor.db.retries import failed_attempt
from supervisor.db.seam import STATEMENTS
from supervisor.errors import ConstraintViolation, JobNotFoundError, LeaseLostError

#: The latest earlier chapters' summaries a claim returns (the context builder shows
#: what of them fits its budget; the arc summary covers the rest).
CONTINUITY_SUMMARIES = 8
#: How much of chapter N-1's end a claim returns.
ENDING_CHARS = 2400

_one = sql.one
_all = sql.all_rows


#: The unique indexes that let only one job write a chapter, and one a story, at a
#: time: a claim that meets one raced another claim for the same story, and claims again.
ONE_WRITER_PER_CHAPTER = "generation_jobs_one_writer_per_chapter_idx"
ONE_WRITER_PER_STORY = "generation_jobs_one_writer_per_story_idx"
ONE_WRITER = (ONE_WRITER_PER_CHAPTER, ONE_WRITER_PER_STORY)
#: Claims in a row that may lose such a race (or find their user at the cap) before
#: the worker waits for the next wake-up instead.
CLAIM_TRIES = 3
#: A claim undone because its user was already at MAX_JOBS_PER_USER.
_OVER_CAP: Any = object()


def _claim_params(owner: str, max_per_user: int | None = None) -> dict[str, Any]:
    return {
        "owner": owner,
        "summaries": CONTINUITY_SUMMARIES,
        "ending_chars": ENDING_CHARS,
        "max_per_user": max_per_user,
    }


def claim(conn: psycopg.Connection, owner: str, max_per_user: int | None = None) -> Claim | None:
    """Claim the next runnable job for `owner` (see `claim` in queries.sql), or None
    when there is none. `max_per_user` caps one user's jobs in flight on every host."""
    for _ in range(CLAIM_TRIES):
        try:
            row = _claim_row(conn, owner, max_per_user)
        except ConstraintViolation as exc:
            if exc.constraint not in ONE_WRITER:
                raise
            continue  # another claim took a chapter of the same story this instant
        if row is not _OVER_CAP:
            return None if row is None else Claim.from_row(row)
    return None


def _claim_row(conn: psycopg.Connection, owner: str, max_per_user: int | None) -> Any:
    params = _claim_params(owner, max_per_user)
    if max_per_user is None:
        return _one(conn, "claim", params)
    # Two claims for one user, each seeing the other's as not yet committed, could both
    # pass the claim's own check: the count is taken again after a per-user lock, in a
    # statement whose snapshot sees every committed claim (a savepoint inside `finish`).
    undone = False
    with conn.transaction() as tx:
        row = _one(conn, "claim", params)
        if row is not None:
            _one(conn, "claim_user_lock", {"user_id": row["user_id"]})
            running = _one(conn, "user_in_flight", {"user_id": row["user_id"]})["running"]
            if running > max_per_user:
                undone = True
                raise psycopg.Rollback(tx)
    return _OVER_CAP if undone else row


def renew_leases(conn: psycopg.Connection, held: Sequence[tuple[str, UUID | str]]) -> int:
    """Refresh the heartbeat of each processing job in `held` ((owner, job id) pairs,
    what live workers say they hold); return how many."""
    if not held:
        return 0
    owners, job_ids = zip(*held, strict=True)
    return sql.run(
        conn, "renew_leases", {"owners": list(owners), "job_ids": [str(j) for j in job_ids]}
    )


def _fenced(conn: psycopg.Connection, name: str, claim: Claim, **params: Any) -> Any:
    row = _one(conn, name, {**claim.fence, **params})
    if row is None or not row["jobs"]:
        raise LeaseLostError(_why_lost(conn, claim))
    return row


def _why_lost(conn: psycopg.Connection, claim: Claim) -> str:
    try:
        job = get(conn, claim.job_id)
    except JobNotFoundError:
        return f"job {claim.job_id} was deleted"
    if job.status is Status.CANCELLED:
        return f"job {claim.job_id} was cancelled"
    if job.status is Status.PROCESSING:
        return f"job {claim.job_id} was re-claimed by {job.locked_by} (attempt {job.attempts})"
    return f"job {claim.job_id} is {job.status} and no longer held by {claim.owner}"


def start_chapter(
    conn: psycopg.Connection,
    claim: Claim,
    *,
    outline: Mapping[str, Any],
    title: str | None,
    checkpoint: Mapping[str, Any],
    progress: int,
    usage: Any = None,
) -> None:
    """Save the outline, empty the chapter for fresh text, and checkpoint, at once.
    `usage`, when given, replaces what the job spent so far (see worker.usage)."""
    _fenced(
        conn,
        "start_chapter",
        claim,
        outline=Jsonb(outline),
        title=title,
        checkpoint=Jsonb(checkpoint),
        progress=progress,
        usage=_jsonb(usage),
    )


def note_unknown_preferences(conn: psycopg.Connection, claim: Claim, keys: Sequence[str]) -> bool:
    """Name `keys` on the job (`context`'s "unknown_preferences"); whether they were new
    to it (False: an earlier attempt named the same)."""
    return bool(_fenced(conn, "note_unknown_preferences", claim, keys=Jsonb(list(keys)))["noted"])


def cut_back(conn: psycopg.Connection, claim: Claim, length: int) -> None:
    """Trim the chapter to `length` characters: what the last checkpoint committed."""
    _fenced(conn, "cut_back", claim, length=length)


def append_text(conn: psycopg.Connection, claim: Claim, text: str) -> None:
    """Append live text of the section being written (renews the lease too)."""
    _fenced(conn, "append_text", claim, text=text)


def send_live(
    conn: psycopg.Connection, claim: Claim, event: str, payload: Mapping[str, Any]
) -> list[str]:
    """Send one event of live text on the chapter's Realtime topic (LIVE_TEXT=broadcast),
    fenced like every write; the chapter is not touched. Returns the WARNINGs
    realtime.send raised in place of the errors it swallows (the event was lost)."""
    with realtime.warnings_during(conn) as heard:
        _fenced(conn, "live_send", claim, event=event, payload=Jsonb(payload))
    return heard


def checkpoint(
    conn: psycopg.Connection,
    claim: Claim,
    *,
    text: str,
    progress: int,
    step: str,
    checkpoint: Mapping[str, Any],
    usage: Any = None,
) -> None:
    """Commit a finished section: its remaining text plus progress, step, checkpoint
    and usage, in one transaction."""
    _fenced(
        conn,
        "checkpoint",
        claim,
        text=text,
        progress=progress,
        step=step,
        checkpoint=Jsonb(checkpoint),
        usage=_jsonb(usage),
    )


def finish(
    conn: psycopg.Connection,
    claim: Claim,
    *,
    summary: str,
    embedding: Sequence[float],
    embedding_model: str,
    word_count: int,
    checkpoint: Mapping[str, Any],
    next_owner: str | None = None,
    usage: Any = None,
    context: Mapping[str, Any] | None = None,
    memory: StoryMemory | None = None,
    max_per_user: int | None = None,
) -> Claim | None:
    """Mark the job completed and store the chapter's summary and embedding, what its
    prompts held of the story (`context`), and the story's memory after it (`memory`),
    all in one transaction: a finish that lost its claim stores nothing.

    With `next_owner`, the next job is claimed for it in the same transaction (one
    commit for both, which is what a busy queue spends its time on) and returned;
    `max_per_user` as for `claim`.
    """
    params = {
        "summary": summary,
        # No embedding (a provider without an embedding model) is stored as NULL, not
        # as an empty array named after no model.
        "embedding": list(embedding) or None,
        "embedding_model": embedding_model or None,
        "word_count": word_count,
        "checkpoint": Jsonb(checkpoint),
        "usage": _jsonb(usage),
        "context": _jsonb(context),
    }
    try:
        return _finish(
            conn, claim, params, memory, next_owner=next_owner, max_per_user=max_per_user
        )
    except ConstraintViolation as exc:
        if exc.constraint not in ONE_WRITER:
            raise
        # A claim race on one story (see `claim`) undid the whole transaction: finish
        # again, alone.
        return _finish(conn, claim, params, memory, next_owner=None, max_per_user=None)


def _finish(
    conn: psycopg.Connection,
    claim: Claim,
    params: Mapping[str, Any],
    memory: StoryMemory | None,
    *,
    next_owner: str | None,
    max_per_user: int | None,
) -> Claim | None:
    with translated("finish", conn), conn.transaction():
        _fenced(conn, "finish", claim, **params)
        if memory is not None:
            remember(conn, claim, memory)
        if next_owner is None:
            return None
        row = _claim_row(conn, next_owner, max_per_user)
    return None if row is None or row is _OVER_CAP else Claim.from_row(row)


def fail(
    conn: psycopg.Connection,
    claim: Claim,
    message: str,
    *,
    retryable: bool,
    max_retries: int,
    backoff_base: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
    usage: Any = None,
    cut_to: int | None = None,
) -> Outcome:
    """Record a failed attempt as `retries.failed_attempt` decides: back to pending
    after a delay while retries remain (retryable errors only), otherwise failed.
    With `cut_to`, the chapter is cut back to that length (its last checkpoint) in the
    same statement. Returns what happened."""
    failed = failed_attempt(
        claim,
        message,
        retryable=retryable,
        max_retries=max_retries,
        backoff_base=backoff_base,
        retry_after=retry_after,
        rng=rng,
    )
    params = {
        "requeue": failed.requeue,
        "delay": failed.delay,
        "message": failed.message,
        "usage": _jsonb(usage),
        "cut_to": cut_to,
    }
    row = _one(conn, "fail", {**claim.fence, **params})
    if row is None:
        raise LeaseLostError(_why_lost(conn, claim))
    return Outcome(row["id"], Status(row["status"]), failed.retry_in_seconds)


def release(conn: psycopg.Connection, claim: Claim, usage: Any = None) -> bool:
    """Give the job back to pending without using up a retry. False if it was no
    longer ours to give (finished, cancelled or rescued meanwhile)."""
    return _one(conn, "release", {**claim.fence, "usage": _jsonb(usage)}) is not None


def _jsonb(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def rescue(conn: psycopg.Connection, *, lease_seconds: float, max_retries: int) -> list[Outcome]:
    """Take back processing jobs whose lease expired: pending again, or failed once
    their retries are spent. Safe to run from every host at once."""
    rows = _all(conn, "rescue", {"lease": lease_seconds, "max_retries": max_retries})
    return [Outcome(row["id"], Status(row["status"])) for row in rows]


def release_owner(conn: psycopg.Connection, owner: str) -> list[Outcome]:
    """Release whatever `owner` still holds, without using up a retry."""
    rows = _all(conn, "release_owner", {"owner": owner})
    return [Outcome(row["id"], Status(row["status"])) for row in rows]


def rescue_owner(
    conn: psycopg.Connection, owner: str, reason: str, *, max_retries: int
) -> list[Outcome]:
    """Requeue (or fail, when retries are spent) whatever the dead `owner` held."""
    rows = _all(
        conn, "rescue_owner", {"owner": owner, "reason": reason, "max_retries": max_retries}
    )
    return [Outcome(row["id"], Status(row["status"])) for row in rows]


class WorkerQueue:
    """`seam.JobQueue` over one connection: each of the worker's statements is the
    function of the same name above, with this connection bound."""

    def __init__(self, conn: psycopg.Connection, max_per_user: int | None = None) -> None:
        self.conn = conn
        #: MAX_JOBS_PER_USER (None: no cap), applied to every claim.
        self.max_per_user = max_per_user

    def __getattr__(self, name: str) -> Any:
        if name not in STATEMENTS:
            raise AttributeError(f"{name!r} is not one of the worker's statements")
        if name in ("claim", "finish") and self.max_per_user is not None:
            return functools.partial(globals()[name], self.conn, max_per_user=self.max_per_user)
        return functools.partial(globals()[name], self.conn)
