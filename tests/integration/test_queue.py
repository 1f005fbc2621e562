"""The job queue against a real PostgreSQL: claim, fencing, retries, release, rescue."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import psycopg
import pytest

from supervisor.db import queue, retries
from supervisor.db.jobs import Claim, Status
from supervisor.errors import InvalidStateError, JobNotFoundError, LeaseLostError

CHECKPOINT = {"outline": {"title": "T", "bullets": ["a", "b"]}, "sections_done": 1}


def row(conn: psycopg.Connection, table: str, id_: uuid.UUID) -> dict:
    return conn.execute(f"select * from {table} where id = %s", (id_,)).fetchone()


def finish(conn: psycopg.Connection, claim: Claim, **extra: Any) -> Claim | None:
    """queue.finish with an empty result: the fencing is what these tests look at."""
    return queue.finish(
        conn,
        claim,
        summary="s",
        embedding=[],
        embedding_model="m",
        word_count=0,
        checkpoint={},
        **extra,
    )


def expire_lease(conn: psycopg.Connection, job_id: uuid.UUID) -> None:
    conn.execute(
        "update generation_jobs set heartbeat_at = now() - interval '1 hour' where id = %s",
        (job_id,),
    )


def make_runnable(conn: psycopg.Connection, job_id: uuid.UUID) -> None:
    conn.execute("update generation_jobs set run_after = now() where id = %s", (job_id,))


def test_claim_takes_the_oldest_runnable_job(conn, job_factory):
    later = job_factory(run_after=None)
    conn.execute(
        "update generation_jobs set created_at = now() - interval '1 minute' where id = %s",
        (later["id"],),
    )
    job_factory()
    delayed = job_factory()
    conn.execute(
        "update generation_jobs set run_after = now() + interval '1 hour', "
        "created_at = now() - interval '2 minutes' where id = %s",
        (delayed["id"],),
    )
    claim = queue.claim(conn, "w1")
    assert claim is not None and claim.job_id == later["id"]
    assert claim.attempt == 1 and claim.owner == "w1"
    job = row(conn, "generation_jobs", later["id"])
    assert job["status"] == "processing" and job["locked_by"] == "w1"
    assert job["heartbeat_at"] is not None and job["started_at"] is not None


def test_claim_returns_none_when_nothing_is_runnable(conn, job_factory):
    job_factory(status="completed")
    assert queue.claim(conn, "w1") is None


def test_a_chapter_is_never_written_by_two_jobs_at_once(conn, chapter_factory, job_factory):
    chapter = chapter_factory()
    # Two live jobs for one chapter, as a database migrated before issue 21 may hold
    # (a new one now cancels the older when it is inserted: see test_story_order).
    conn.execute("set session_replication_role = replica")
    first = job_factory(chapter=chapter)
    second = job_factory(chapter=chapter)
    conn.execute("set session_replication_role = default")
    assert queue.claim(conn, "w1").job_id == first["id"]
    assert queue.claim(conn, "w2") is None
    conn.execute("update generation_jobs set status = 'completed' where id = %s", (first["id"],))
    assert queue.claim(conn, "w2").job_id == second["id"]


CLAIMER = textwrap.dedent(
    """
    import sys
    from supervisor.db.connection import connect
    from supervisor.db import queue
    conn = connect(sys.argv[1])
    owner = sys.argv[2]
    while (claim := queue.claim(conn, owner)) is not None:
        print(claim.job_id, flush=True)
        queue.finish(conn, claim, summary="", embedding=[], embedding_model="none",
                     word_count=0, checkpoint={})
    """
)


@pytest.mark.slow
def test_eight_processes_claim_500_jobs_exactly_once(conn, database_url, sequence_factory):
    seq = sequence_factory()
    conn.execute(
        """
        with ch as (
            insert into chapters (sequence_id, chapter_number)
            select %(s)s, n from generate_series(1, 500) n returning id
        )
        insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences)
        select %(s)s, ch.id, %(u)s, '{}'::jsonb from ch
        """,
        {"s": seq["id"], "u": seq["user_id"]},
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, database_url, f"w{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    claimed = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        claimed += out.split()
    assert len(claimed) == 500
    assert len(set(claimed)) == 500
    counts = conn.execute(
        "select status, count(*) as n, max(attempts) as a from generation_jobs group by status"
    ).fetchall()
    assert counts == [{"status": "completed", "n": 500, "a": 1}]
    # More than one process did real work: the claims really ran side by side.
    assert sum(1 for p in procs if p.returncode == 0) == 8


def test_checkpoint_appends_and_records_progress_in_one_go(conn, job_factory):
    job = job_factory()
    claim = queue.claim(conn, "w1")
    queue.start_chapter(
        conn,
        claim,
        outline=CHECKPOINT["outline"],
        title="T",
        checkpoint={"sections_done": 0},
        progress=10,
    )
    queue.append_text(conn, claim, "Once upon")
    queue.checkpoint(
        conn, claim, text=" a time.", progress=50, step="section 1 of 2", checkpoint=CHECKPOINT
    )
    chapter = row(conn, "chapters", job["chapter_id"])
    state = row(conn, "generation_jobs", job["id"])
    assert chapter["content"] == "Once upon a time."
    assert chapter["title"] == "T" and chapter["outline"] == CHECKPOINT["outline"]
    assert state["progress"] == 50 and state["current_step"] == "section 1 of 2"
    assert state["checkpoint"] == CHECKPOINT


def test_start_chapter_replaces_old_text_and_cut_back_trims(conn, chapter_factory, job_factory):
    chapter = chapter_factory(content="old text", title="The app's own title")
    job_factory(chapter=chapter)
    claim = queue.claim(conn, "w1")
    queue.start_chapter(
        conn,
        claim,
        outline={"title": "T", "bullets": []},
        title="A generated title",
        checkpoint={},
        progress=10,
    )
    assert row(conn, "chapters", chapter["id"])["content"] == ""
    # A title the app set is the user's; only an empty one is filled from the outline.
    assert row(conn, "chapters", chapter["id"])["title"] == "The app's own title"
    queue.append_text(conn, claim, "finished. half-writ")
    queue.cut_back(conn, claim, len("finished."))
    assert row(conn, "chapters", chapter["id"])["content"] == "finished."


def test_stale_holder_changes_nothing_after_rescue_and_reclaim(conn, job_factory):
    job = job_factory()
    first = queue.claim(conn, "w1")
    queue.start_chapter(
        conn,
        first,
        outline={"title": "T", "bullets": ["a"]},
        title="T",
        checkpoint={"sections_done": 0},
        progress=10,
    )
    queue.append_text(conn, first, "first holder")
    expire_lease(conn, job["id"])
    outcomes = queue.rescue(conn, lease_seconds=60, max_retries=3)
    assert [(o.job_id, o.status) for o in outcomes] == [(job["id"], Status.PENDING)]
    assert "rescued" in row(conn, "generation_jobs", job["id"])["error_message"]
    second = queue.claim(conn, "w2")
    assert second.job_id == job["id"] and second.attempt == 2
    before_job = row(conn, "generation_jobs", job["id"])
    before_chapter = row(conn, "chapters", job["chapter_id"])

    with pytest.raises(LeaseLostError, match="re-claimed by w2"):
        queue.checkpoint(conn, first, text=" more", progress=90, step="x", checkpoint={})
    with pytest.raises(LeaseLostError):
        queue.append_text(conn, first, " more")
    with pytest.raises(LeaseLostError):
        finish(conn, first)
    with pytest.raises(LeaseLostError):
        queue.fail(conn, first, "boom", retryable=True, max_retries=3, backoff_base=1)
    assert queue.release(conn, first) is False
    assert row(conn, "generation_jobs", job["id"]) == before_job
    assert row(conn, "chapters", job["chapter_id"]) == before_chapter


def test_retryable_failures_back_off_with_jitter_until_retries_are_spent(conn, job_factory):
    job = job_factory()
    delays = []
    for attempt in range(1, 5):
        claim = queue.claim(conn, "w1")
        assert claim.attempt == attempt
        outcome = queue.fail(
            conn,
            claim,
            "HTTP 503",
            retryable=True,
            max_retries=3,
            backoff_base=10,
            rng=random.Random(attempt),
        )
        state = row(conn, "generation_jobs", job["id"])
        if attempt <= 3:
            assert outcome.status is Status.PENDING and state["status"] == "pending"
            assert state["locked_by"] is None
            wait = conn.execute(
                "select extract(epoch from run_after - now()) as s from generation_jobs"
                " where id = %s",
                (job["id"],),
            ).fetchone()["s"]
            assert float(wait) == pytest.approx(outcome.retry_in_seconds, abs=2)
            assert "retrying" in state["error_message"] and "HTTP 503" in state["error_message"]
            delays.append(outcome.retry_in_seconds)
            assert queue.claim(conn, "w1") is None  # not before run_after
            make_runnable(conn, job["id"])
        else:
            assert outcome.status is Status.FAILED and state["status"] == "failed"
            assert state["error_message"] == "failed after 4 attempts: HTTP 503"
            assert state["completed_at"] is not None
    assert delays == sorted(delays) and len(set(delays)) == 3
    # Each delay lies in its jitter band [base*2^(n-1)/2, base*2^(n-1)].
    for n, delay in enumerate(delays, start=1):
        assert 10 * 2 ** (n - 1) / 2 <= delay <= 10 * 2 ** (n - 1)


def test_jitter_differs_between_jobs():
    delays = {retries.retry_delay(3, 10.0, random.Random(seed)) for seed in range(20)}
    assert len(delays) > 15
    assert all(20 <= d <= 40 for d in delays)


def test_retry_after_from_the_provider_is_honoured(conn, job_factory):
    job_factory()
    claim = queue.claim(conn, "w1")
    outcome = queue.fail(
        conn, claim, "rate limited", retryable=True, max_retries=3, backoff_base=1, retry_after=120
    )
    assert outcome.retry_in_seconds == 120


def test_permanent_failure_fails_at_once(conn, job_factory):
    job = job_factory()
    claim = queue.claim(conn, "w1")
    outcome = queue.fail(
        conn,
        claim,
        "user_preferences.bullet_count must be an integer",
        retryable=False,
        max_retries=3,
        backoff_base=10,
    )
    assert outcome.status is Status.FAILED
    state = row(conn, "generation_jobs", job["id"])
    assert state["status"] == "failed" and state["attempts"] == 1
    assert state["error_message"] == "user_preferences.bullet_count must be an integer"


def test_release_does_not_use_up_a_retry_and_keeps_the_checkpoint(conn, job_factory):
    job = job_factory()
    claim = queue.claim(conn, "w1")
    queue.checkpoint(conn, claim, text="x", progress=50, step="s", checkpoint=CHECKPOINT)
    assert queue.release(conn, claim) is True
    state = row(conn, "generation_jobs", job["id"])
    assert state["status"] == "pending" and state["attempts"] == 0
    assert state["checkpoint"] == CHECKPOINT and state["locked_by"] is None
    again = queue.claim(conn, "w2")
    assert again.attempt == 1 and again.checkpoint == CHECKPOINT


def test_cancel_wins_over_a_late_finish(conn, job_factory):
    job = job_factory()
    claim = queue.claim(conn, "w1")
    queue.cancel(conn, job["id"])
    with pytest.raises(LeaseLostError, match="cancelled"):
        finish(conn, claim)
    with pytest.raises(LeaseLostError, match="cancelled"):
        queue.checkpoint(conn, claim, text="late", progress=90, step="x", checkpoint={})
    assert row(conn, "generation_jobs", job["id"])["status"] == "cancelled"
    assert row(conn, "chapters", job["chapter_id"])["content"] == ""


def test_rescue_fails_a_job_whose_retries_are_spent(conn, job_factory):
    job = job_factory(attempts=3)
    queue.claim(conn, "dead-host:123")
    expire_lease(conn, job["id"])
    outcomes = queue.rescue(conn, lease_seconds=60, max_retries=3)
    assert [o.status for o in outcomes] == [Status.FAILED]
    state = row(conn, "generation_jobs", job["id"])
    assert state["status"] == "failed"
    assert "dead-host:123" in state["error_message"]
    assert "no retries left" in state["error_message"]


def test_rescue_leaves_fresh_leases_alone_and_renewal_keeps_them_fresh(conn, job_factory):
    job = job_factory()
    queue.claim(conn, "w1")
    conn.execute(
        "update generation_jobs set heartbeat_at = now() - interval '50 seconds' where id = %s",
        (job["id"],),
    )
    assert queue.renew_leases(conn, [("w1", job["id"]), ("w9", job["id"])]) == 1
    assert queue.rescue(conn, lease_seconds=30, max_retries=3) == []
    assert row(conn, "generation_jobs", job["id"])["status"] == "processing"


def test_admin_cancel_and_retry(conn, job_factory):
    job = job_factory()
    with pytest.raises(InvalidStateError, match="only failed or cancelled"):
        queue.retry(conn, job["id"])
    queue.cancel(conn, job["id"])
    with pytest.raises(InvalidStateError, match="is cancelled"):
        queue.cancel(conn, job["id"])
    retried = queue.retry(conn, job["id"])
    assert retried.status is Status.PENDING and retried.attempts == 0
    with pytest.raises(JobNotFoundError):
        queue.get(conn, uuid.uuid4())


def test_enqueue_takes_user_and_sequence_from_the_chapter(conn, chapter_factory):
    chapter = chapter_factory()
    job_id = queue.enqueue(conn, chapter["id"], {"genre": "noir"})
    job = queue.get(conn, job_id)
    owner = row(conn, "sequences", chapter["sequence_id"])["user_id"]
    assert job.status is Status.PENDING and job.user_id == owner
    assert job.sequence_id == chapter["sequence_id"] and job.user_preferences == {"genre": "noir"}


def test_insert_notifies_and_progress_is_published(conn, database_url, job_factory):
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("listen generation_jobs")
        listener.execute("listen generation_progress")
        job = job_factory()
        claim = queue.claim(conn, "w1")
        queue.checkpoint(conn, claim, text="x", progress=30, step="section 1 of 4", checkpoint={})
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=4)]
    assert ("generation_jobs", str(job["id"])) in got
    progress = [p for c, p in got if c == "generation_progress"]
    assert any('"progress" : 30' in p and "section 1 of 4" in p for p in progress), progress


def test_queue_stats(conn, job_factory):
    job_factory()
    job_factory(status="failed")
    stats = queue.stats(conn)
    assert stats.depth_by_status["pending"] == 1
    assert stats.depth_by_status["failed"] == 1
    assert stats.depth_by_status["processing"] == 0
    assert stats.oldest_runnable_age_seconds is not None


def test_oldest_pending_counts_from_when_the_job_became_runnable(conn, job_factory):
    """A job created long ago waits only from its retry (or its run_after), not from
    its created_at; one never touched since its insert waits from that."""
    old = job_factory(status="failed")
    conn.execute(
        "update generation_jobs set created_at = now() - interval '3 hours' where id = %s",
        (old["id"],),
    )
    queue.retry(conn, old["id"])
    assert queue.stats(conn).oldest_runnable_age_seconds < 60
    delayed = job_factory()
    conn.execute(
        "update generation_jobs set created_at = now() - interval '2 hours',"
        " run_after = now() - interval '10 minutes' where id = %s",
        (delayed["id"],),
    )
    assert 590 < queue.stats(conn).oldest_runnable_age_seconds < 660
    fresh = job_factory()
    conn.execute(
        "update generation_jobs set created_at = now() - interval '1 hour' where id = %s",
        (fresh["id"],),
    )
    assert 3590 < queue.stats(conn).oldest_runnable_age_seconds < 3660


def test_claim_brings_the_chapter_and_earlier_summaries(
    conn, sequence_factory, chapter_factory, job_factory
):
    seq = sequence_factory(title="Saga", premise="Ships")
    chapter_factory(sequence_id=seq["id"], chapter_number=1, summary="one")
    chapter_factory(sequence_id=seq["id"], chapter_number=2, summary="two")
    chapter_factory(sequence_id=seq["id"], chapter_number=4, summary="later, not earlier")
    third = chapter_factory(sequence_id=seq["id"], chapter_number=3, content="so far")
    job_factory(chapter=third)
    claim = queue.claim(conn, "w1")
    ctx = claim.context
    assert (ctx.sequence_id, ctx.user_id, ctx.chapter_number) == (seq["id"], seq["user_id"], 3)
    assert (ctx.sequence_title, ctx.premise, ctx.content) == ("Saga", "Ships", "so far")
    assert ctx.recent_summaries == ((1, "one"), (2, "two"))  # oldest first, by number
    assert ctx.written == (1, 2) and ctx.missing == () and ctx.later_written


def test_claim_of_a_job_whose_chapter_is_gone_has_no_context(conn, chapter_factory, job_factory):
    job = job_factory()
    conn.execute("alter table generation_jobs drop constraint generation_jobs_chapter_id_fkey")
    conn.execute("delete from chapters where id = %s", (job["chapter_id"],))
    claim = queue.claim(conn, "w1")
    assert claim.job_id == job["id"] and claim.context is None


def test_finish_can_claim_the_next_job_in_the_same_commit(conn, job_factory):
    first, second = job_factory(), job_factory()
    claim = queue.claim(conn, "w1")
    nxt = finish(conn, claim, next_owner="w1")
    assert nxt is not None and nxt.job_id == second["id"] and nxt.owner == "w1"
    assert row(conn, "generation_jobs", first["id"])["status"] == "completed"
    assert row(conn, "generation_jobs", second["id"])["status"] == "processing"
    assert finish(conn, nxt, next_owner="w1") is None  # nothing left


def test_a_lost_finish_claims_nothing(conn, job_factory):
    first, second = job_factory(), job_factory()
    claim = queue.claim(conn, "w1")
    queue.cancel(conn, first["id"])
    with pytest.raises(LeaseLostError):
        finish(conn, claim, next_owner="w1")
    assert row(conn, "generation_jobs", second["id"])["status"] == "pending"


def test_renewal_keeps_only_the_jobs_a_worker_says_it_holds(conn, job_factory):
    # A claim whose reply was lost: the database says w1 holds the job, w1 does not know.
    job = job_factory()
    queue.claim(conn, "w1")
    stale = "update generation_jobs set heartbeat_at = now() - interval '50 seconds'"
    conn.execute(stale + " where id = %s", (job["id"],))
    assert queue.renew_leases(conn, [("w1", uuid.uuid4())]) == 0
    assert queue.renew_leases(conn, []) == 0
    assert [o.job_id for o in queue.rescue(conn, lease_seconds=30, max_retries=3)] == [job["id"]]


def test_a_chapter_emptied_to_null_mid_job_and_infinite_timestamps_break_nothing(
    conn, job_factory, database_url
):
    from supervisor.db.connection import connect

    conn.execute("alter table chapters alter column content drop not null")  # an app's shape
    job = job_factory()
    claim = queue.claim(conn, "w1")
    conn.execute("update chapters set content = null where id = %s", (job["chapter_id"],))
    queue.append_text(conn, claim, "some text")
    content = conn.execute(
        "select content from chapters where id = %s", (job["chapter_id"],)
    ).fetchone()["content"]
    assert content == "some text"
    conn.execute("update chapters set content = null where id = %s", (job["chapter_id"],))
    queue.cut_back(conn, claim, 0)  # resume after a cleared chapter
    # An old row (from before the guard) with a timestamp no Python datetime holds.
    conn.execute(
        "update generation_jobs set created_at = 'infinity' where id = %s", (job["id"],)
    )
    with connect(database_url) as worker:
        assert queue.get(worker, job["id"]).created_at.year == 9999
