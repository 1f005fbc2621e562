"""Queue invariants a mutation run showed the rest of the suite could lose unnoticed:
every fenced write is fenced by owner AND attempt, claims skip locked rows, the
supervisor's backstop release gives the attempt back, and both rescue paths honour the
retry budget exactly at its boundary. Only public queue functions are called; what is
asserted is what the database then holds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from supervisor.db import queue
from supervisor.db.jobs import Claim, Status
from supervisor.errors import LeaseLostError

OUTLINE = {"title": "T", "bullets": ["a", "b"]}
CHECKPOINT = {"outline": OUTLINE, "sections_done": 1, "content_length": len("First section.")}


def job_row(conn: psycopg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    return conn.execute("select * from generation_jobs where id = %s", (job_id,)).fetchone()


def everything(conn: psycopg.Connection) -> tuple[list[dict], list[dict]]:
    """Every job and chapter row, to prove a stale write changed nothing anywhere."""
    jobs = conn.execute("select * from generation_jobs order by id").fetchall()
    chapters = conn.execute("select * from chapters order by id").fetchall()
    return jobs, chapters


def expire_lease(conn: psycopg.Connection, job_id: uuid.UUID) -> None:
    conn.execute(
        "update generation_jobs set heartbeat_at = now() - interval '1 hour' where id = %s",
        (job_id,),
    )


def write_a_section(conn: psycopg.Connection, claim: Claim) -> None:
    """What a worker commits for one finished section: the chapter then holds text."""
    queue.start_chapter(
        conn, claim, outline=OUTLINE, title="T", checkpoint={"sections_done": 0}, progress=10
    )
    queue.append_text(conn, claim, "First ")
    queue.checkpoint(
        conn, claim, text="section.", progress=50, step="section 1 of 2", checkpoint=CHECKPOINT
    )


# --- 1. every fenced write is fenced by owner and attempt ---------------------------

# Each fenced statement, called as the stale holder would call it. Each would change the
# job row (and most the chapter) if the fence let it through.
FENCED: dict[str, Callable[[psycopg.Connection, Claim], object]] = {
    "start_chapter": lambda conn, c: queue.start_chapter(
        conn, c, outline=OUTLINE, title="Stale", checkpoint={"sections_done": 0}, progress=10
    ),
    "cut_back": lambda conn, c: queue.cut_back(conn, c, 0),
    "append_text": lambda conn, c: queue.append_text(conn, c, " stale text"),
    "checkpoint": lambda conn, c: queue.checkpoint(
        conn, c, text=" stale", progress=90, step="stale", checkpoint={"sections_done": 2}
    ),
    "finish": lambda conn, c: queue.finish(
        conn, c, summary="stale", embedding=[1.0], embedding_model="m", word_count=1,
        checkpoint={},
    ),
    "finish_and_claim_next": lambda conn, c: queue.finish(
        conn, c, summary="stale", embedding=[1.0], embedding_model="m", word_count=1,
        checkpoint={}, next_owner=c.owner,
    ),
    "fail": lambda conn, c: queue.fail(
        conn, c, "stale failure", retryable=True, max_retries=3, backoff_base=1
    ),
    "release": queue.release,
    "note_unknown_preferences": lambda conn, c: queue.note_unknown_preferences(
        conn, c, ["stale"]
    ),
}  # fmt: skip


def released_then_reclaimed_by_another_owner(conn: psycopg.Connection) -> tuple[Claim, Claim]:
    """A release gives the attempt back, so B's claim has A's attempt number: only the
    owner tells A's stale claim from B's live one."""
    stale = queue.claim(conn, "host-a/1")
    write_a_section(conn, stale)
    assert queue.release(conn, stale) is True
    live = queue.claim(conn, "host-b/2")
    assert (live.job_id, live.attempt) == (stale.job_id, stale.attempt)
    assert live.owner != stale.owner
    return stale, live


def rescued_then_reclaimed_by_the_same_owner(conn: psycopg.Connection) -> tuple[Claim, Claim]:
    """A rescue counts the attempt, and the same owner claims the job again: only the
    attempt tells the first claim from the second."""
    stale = queue.claim(conn, "host-a/1")
    write_a_section(conn, stale)
    expire_lease(conn, stale.job_id)
    assert [o.status for o in queue.rescue(conn, lease_seconds=60, max_retries=3)] == [
        Status.PENDING
    ]
    live = queue.claim(conn, "host-a/1")
    assert (live.job_id, live.owner) == (stale.job_id, stale.owner)
    assert live.attempt == stale.attempt + 1
    return stale, live


@pytest.mark.parametrize("statement", FENCED)
@pytest.mark.parametrize(
    "scenario",
    [released_then_reclaimed_by_another_owner, rescued_then_reclaimed_by_the_same_owner],
    ids=["same-attempt-other-owner", "same-owner-next-attempt"],
)
def test_a_stale_claim_changes_nothing_and_is_told_it_lost_the_job(
    conn, job_factory, scenario, statement
):
    job_factory()
    stale, live = scenario(conn)
    job_factory()  # a pending job that a stale finish-and-claim must not take
    before = everything(conn)

    if statement == "release":
        assert queue.release(conn, stale) is False
    else:
        with pytest.raises(LeaseLostError):
            FENCED[statement](conn, stale)

    assert everything(conn) == before
    # The live claim's own writes still go through: the fence is not simply shut.
    queue.append_text(conn, live, " live")
    chapter = conn.execute(
        "select content from chapters where id = %s", (live.chapter_id,)
    ).fetchone()
    assert chapter["content"] == "First section. live"
    assert job_row(conn, live.job_id)["locked_by"] == live.owner


# --- 2. claims skip a locked row instead of queueing behind it ----------------------


def test_a_claim_skips_a_job_another_transaction_has_locked(conn, database_url, job_factory):
    oldest = job_factory()
    conn.execute(
        "update generation_jobs set created_at = now() - interval '1 minute' where id = %s",
        (oldest["id"],),
    )
    newer = job_factory()
    with (
        psycopg.connect(database_url, row_factory=dict_row) as locker,
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as claimer,
    ):
        # A claim that waited for the lock would fail with lock_timeout instead of
        # hanging the test; SKIP LOCKED never waits at all.
        claimer.execute("set lock_timeout = '3s'")
        locker.execute("select id from generation_jobs where id = %s for update", (oldest["id"],))
        started = time.monotonic()
        claim = queue.claim(claimer, "w1")
        elapsed = time.monotonic() - started
        assert claim is not None and claim.job_id == newer["id"]
        assert elapsed < 3.0
        assert job_row(conn, oldest["id"])["status"] == "pending"
        locker.rollback()
        # Once the lock is gone, the oldest job is claimable as usual.
        again = queue.claim(claimer, "w2")
        assert again is not None and again.job_id == oldest["id"]


# --- 3. the supervisor's backstop release gives the attempt back --------------------


@pytest.mark.parametrize("earlier_attempts", [0, 2])
def test_release_owner_gives_the_attempt_back_and_keeps_the_checkpoint(
    conn, job_factory, earlier_attempts
):
    job = job_factory(attempts=earlier_attempts)
    other = job_factory()
    claim = queue.claim(conn, "host/4242")
    assert claim.job_id == job["id"] and claim.attempt == earlier_attempts + 1
    write_a_section(conn, claim)
    elsewhere = queue.claim(conn, "host/777")  # another worker's job: not touched
    assert elsewhere.job_id == other["id"]

    outcomes = queue.release_owner(conn, "host/4242")

    assert [(o.job_id, o.status) for o in outcomes] == [(job["id"], Status.PENDING)]
    state = job_row(conn, job["id"])
    assert state["status"] == "pending" and state["attempts"] == earlier_attempts
    assert state["checkpoint"] == CHECKPOINT
    assert state["locked_by"] is None and state["run_after"] is None
    chapter = conn.execute(
        "select content from chapters where id = %s", (job["chapter_id"],)
    ).fetchone()
    assert chapter["content"] == "First section."
    assert job_row(conn, other["id"])["locked_by"] == "host/777"
    # The next claim resumes from the checkpoint, on the same attempt number.
    again = queue.claim(conn, "host/5000")
    assert again.job_id == job["id"] and again.attempt == earlier_attempts + 1
    assert again.checkpoint == CHECKPOINT


# --- 8. both rescue paths spend the retry budget exactly ----------------------------


def rescue_expired(conn: psycopg.Connection, claim: Claim, max_retries: int) -> list:
    expire_lease(conn, claim.job_id)
    return queue.rescue(conn, lease_seconds=60, max_retries=max_retries)


def rescue_dead_owner(conn: psycopg.Connection, claim: Claim, max_retries: int) -> list:
    reason = f"rescued: worker 0 ({claim.owner}) killed by SIGKILL"
    return queue.rescue_owner(conn, claim.owner, reason, max_retries=max_retries)


@pytest.mark.parametrize("max_retries", [1, 3])
@pytest.mark.parametrize(
    "rescue", [rescue_expired, rescue_dead_owner], ids=["lease-expired", "worker-died"]
)
def test_a_rescue_requeues_until_the_last_retry_and_fails_the_attempt_after_it(
    conn, job_factory, rescue, max_retries
):
    # MAX_RETRIES=m: attempts 1..m are each rescued back to pending (the last of them
    # leaves exactly one retry); attempt m+1 was the last allowed and ends failed.
    job = job_factory()
    for attempt in range(1, max_retries + 2):
        claim = queue.claim(conn, f"host/{1000 + attempt}")
        assert claim is not None and claim.job_id == job["id"] and claim.attempt == attempt
        outcomes = rescue(conn, claim, max_retries)
        state = job_row(conn, job["id"])
        assert state["attempts"] == attempt and state["locked_by"] is None
        if attempt <= max_retries:
            assert [(o.job_id, o.status) for o in outcomes] == [(job["id"], Status.PENDING)]
            assert state["status"] == "pending" and state["current_step"] == "rescued"
            assert state["completed_at"] is None
            assert "no retries left" not in state["error_message"]
        else:
            assert [(o.job_id, o.status) for o in outcomes] == [(job["id"], Status.FAILED)]
            assert state["status"] == "failed" and state["current_step"] == "failed"
            assert state["completed_at"] is not None
            assert state["error_message"].endswith("; no retries left")
            assert queue.claim(conn, "host/9999") is None
