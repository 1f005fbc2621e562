"""Issue 21 against a real PostgreSQL: a story's chapters are claimed one at a time, in
chapter order; the newer of two live jobs for one chapter wins; users are served
fairly (fewest jobs in flight first, after priority); MAX_JOBS_PER_USER caps one
user; a waiting job's current_step says what it waits for."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from supervisor.db import queue
from supervisor.db.connection import translated
from supervisor.db.jobs import Claim
from supervisor.errors import ConstraintViolation, LeaseLostError


def done(conn: psycopg.Connection, claim: Claim, summary: str = "s") -> None:
    queue.finish(
        conn, claim, summary=summary, embedding=[], embedding_model="", word_count=0,
        checkpoint={},
    )  # fmt: skip


def job(conn: psycopg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    return conn.execute("select * from generation_jobs where id = %s", (job_id,)).fetchone()


@pytest.fixture
def story(sequence_factory, chapter_factory, job_factory):
    """`story(n, order=...)`: a story of n chapters with one pending job each, queued
    in `order` (chapter numbers, default 1..n); its jobs by chapter number."""

    def make(n: int, order: list[int] | None = None, **seq: Any) -> dict[int, dict[str, Any]]:
        sequence = sequence_factory(**seq)
        chapters = {k: chapter_factory(sequence_id=sequence["id"], chapter_number=k)
                    for k in range(1, n + 1)}  # fmt: skip
        return {k: job_factory(chapter=chapters[k]) for k in order or range(1, n + 1)}

    return make


def test_chapters_queued_in_reverse_are_claimed_in_order_one_at_a_time(conn, story):
    jobs = story(3, order=[3, 2, 1])
    for number in (1, 2, 3):
        claim = queue.claim(conn, "w1")
        assert claim.job_id == jobs[number]["id"]
        assert claim.context.chapter_number == number
        assert queue.claim(conn, "w2") is None  # nothing else of the story meanwhile
        done(conn, claim, summary=f"summary {number}")
    assert queue.claim(conn, "w1") is None


def test_each_chapter_is_sent_the_summaries_of_every_earlier_one(conn, story):
    story(3)
    seen = []
    while (claim := queue.claim(conn, "w1")) is not None:
        seen.append(claim.context.recent_summaries)
        done(conn, claim, summary=f"summary {claim.context.chapter_number}")
    assert seen == [(), ((1, "summary 1"),), ((1, "summary 1"), (2, "summary 2"))]


def test_a_chapter_waiting_for_its_retry_holds_back_the_next(conn, story):
    jobs = story(2)
    conn.execute(
        "update generation_jobs set run_after = now() + interval '1 hour' where id = %s",
        (jobs[1]["id"],),
    )
    assert queue.claim(conn, "w1") is None
    conn.execute("update generation_jobs set run_after = null where id = %s", (jobs[1]["id"],))
    assert queue.claim(conn, "w1").job_id == jobs[1]["id"]


def test_a_chapter_that_failed_for_good_lets_the_next_run_and_names_it_missing(conn, story):
    jobs = story(3)
    first = queue.claim(conn, "w1")
    queue.fail(conn, first, "refused", retryable=False, max_retries=3, backoff_base=1)
    second = queue.claim(conn, "w1")
    assert second.job_id == jobs[2]["id"]
    assert second.context.missing == (1,)
    assert second.context.recent_summaries == ()
    done(conn, second, summary="summary 2")
    third = queue.claim(conn, "w1")
    assert third.context.missing == (1,)
    assert third.context.recent_summaries == ((2, "summary 2"),)


def test_a_chapter_never_queued_is_missing_and_does_not_hold_the_story(
    conn, sequence_factory, chapter_factory, job_factory
):
    sequence = sequence_factory()
    for number in (1, 3):
        chapter_factory(sequence_id=sequence["id"], chapter_number=number)
    fourth = job_factory(chapter=chapter_factory(sequence_id=sequence["id"], chapter_number=4))
    claim = queue.claim(conn, "w1")
    assert claim.job_id == fourth["id"]
    assert claim.context.missing == (1, 2, 3)


def test_an_earlier_chapter_rewritten_later_runs_and_one_queued_meanwhile_waits(conn, story):
    jobs = story(3)
    for _ in range(2):
        done(conn, queue.claim(conn, "w1"))
    third = queue.claim(conn, "w1")
    assert third.job_id == jobs[3]["id"]
    chapter_two = jobs[2]["chapter_id"]
    rewrite = conn.execute(
        "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences)"
        " values (%s, %s, %s, '{}') returning id, current_step",
        (jobs[2]["sequence_id"], chapter_two, jobs[2]["user_id"]),
    ).fetchone()
    assert rewrite["current_step"] is None  # the trigger writes it after the insert
    assert job(conn, rewrite["id"])["current_step"] == "waiting for chapter 3"
    assert queue.claim(conn, "w2") is None  # chapter 3 is being written
    done(conn, third)
    claim = queue.claim(conn, "w2")
    assert claim.job_id == rewrite["id"]
    assert claim.context.recent_summaries == ((1, "s"),) and claim.context.later_written


def test_waiting_jobs_say_what_they_wait_for(conn, story):
    jobs = story(3)
    steps = lambda: [job(conn, jobs[k]["id"])["current_step"] for k in (1, 2, 3)]  # noqa: E731
    assert steps() == [None, "waiting for chapter 1", "waiting for chapter 2"]
    first = queue.claim(conn, "w1")
    assert steps() == ["starting", "waiting for chapter 1", "waiting for chapter 2"]
    done(conn, first)
    assert steps() == ["completed", "queued", "waiting for chapter 2"]
    queue.cancel(conn, jobs[2]["id"])
    assert steps() == ["completed", "cancelled", "queued"]


def test_the_newer_of_two_pending_jobs_for_one_chapter_wins(conn, chapter_factory, job_factory):
    chapter = chapter_factory()
    older = job_factory(chapter=chapter)
    newer = job_factory(chapter=chapter)
    row = job(conn, older["id"])
    assert row["status"] == "cancelled"
    assert row["error_message"] == (
        f"superseded by job {newer['id']}, queued later for the same chapter"
    )
    assert queue.claim(conn, "w1").job_id == newer["id"]


def test_a_double_click_while_writing_leaves_none_of_the_older_text(
    conn, chapter_factory, job_factory
):
    chapter = chapter_factory(title=None)
    older = job_factory(chapter=chapter)
    first = queue.claim(conn, "w1")
    outline = {"title": "Older", "bullets": ["a", "b"]}
    checkpoint = {"outline": outline, "sections_done": 0}
    queue.start_chapter(
        conn, first, outline=outline, title="Older", checkpoint=checkpoint, progress=10
    )
    queue.append_text(conn, first, "text of the older job")
    newer = job_factory(chapter=chapter)
    assert job(conn, older["id"])["status"] == "cancelled"
    text = conn.execute("select * from chapters where id = %s", (chapter["id"],)).fetchone()
    assert (text["content"], text["outline"], text["title"]) == ("", None, None)
    with pytest.raises(LeaseLostError, match="cancelled"):
        queue.append_text(conn, first, "more of the older job")
    second = queue.claim(conn, "w2")
    assert second.job_id == newer["id"] and second.context.content == ""


def test_a_user_with_nothing_in_flight_goes_before_a_backlog(
    conn, user_factory, sequence_factory, chapter_factory, job_factory
):
    a, b = user_factory()["id"], user_factory()["id"]
    backlog = [job_factory(chapter=chapter_factory(sequence_id=sequence_factory(user_id=a)["id"]))
               for _ in range(20)]  # fmt: skip
    first = queue.claim(conn, "w1")
    assert first.job_id == backlog[0]["id"]
    late = job_factory(chapter=chapter_factory(sequence_id=sequence_factory(user_id=b)["id"]))
    assert queue.claim(conn, "w2").job_id == late["id"]
    # Both in flight, one each: the oldest job again.
    assert queue.claim(conn, "w3").job_id == backlog[1]["id"]


def test_priority_goes_before_fairness_and_age(
    conn, user_factory, sequence_factory, chapter_factory, job_factory
):
    a, b = user_factory()["id"], user_factory()["id"]
    new = lambda user, **kw: job_factory(  # noqa: E731
        chapter=chapter_factory(sequence_id=sequence_factory(user_id=user)["id"]), **kw
    )
    new(a)
    queue.claim(conn, "w1")  # a has one in flight
    plain_b = new(b)
    paid_a = new(a, priority=5)
    assert queue.claim(conn, "w2").job_id == paid_a["id"]
    assert queue.claim(conn, "w3").job_id == plain_b["id"]


def test_max_jobs_per_user_caps_one_user_only(
    conn, user_factory, sequence_factory, chapter_factory, job_factory
):
    a, b = user_factory()["id"], user_factory()["id"]
    for user in (a, a, b):
        job_factory(chapter=chapter_factory(sequence_id=sequence_factory(user_id=user)["id"]))
    first = queue.claim(conn, "w1", max_per_user=1)
    assert first.user_id == a
    second = queue.claim(conn, "w2", max_per_user=1)
    assert second.user_id == b
    assert queue.claim(conn, "w3", max_per_user=1) is None
    assert queue.claim(conn, "w3") is not None  # no cap: a's second job


def test_a_candidate_another_claim_is_locking_is_passed_over(
    conn, database_url, chapter_factory, job_factory
):
    jobs = [job_factory() for _ in range(3)]
    with psycopg.connect(database_url, row_factory=dict_row) as other:
        other.execute("select id from generation_jobs where id = %s for update", (jobs[0]["id"],))
        assert queue.claim(conn, "w1").job_id == jobs[1]["id"]
        other.rollback()
    assert queue.claim(conn, "w2").job_id == jobs[0]["id"]


def test_the_database_refuses_a_second_writer_for_one_story(conn, story):
    jobs = story(2)
    queue.claim(conn, "w1")
    with pytest.raises(psycopg.errors.UniqueViolation, match="one_writer_per_story"):
        conn.execute(
            "update generation_jobs set status = 'processing' where id = %s", (jobs[2]["id"],)
        )


@contextlib.contextmanager
def story_race(
    conn: psycopg.Connection, database_url: str, chapter_2: dict[str, Any]
) -> Iterator[psycopg.Connection]:
    """Two snapshots that each see a runnable chapter of one story: another session
    (yielded, its transaction open) claims `chapter_2`'s job, and meanwhile chapter 1
    of the same story is queued (without the triggers, as an app of a version before
    the story triggers would): runnable in `conn`'s next snapshot."""
    with psycopg.connect(database_url, row_factory=dict_row) as racer:
        racer.execute(
            "update generation_jobs set status = 'processing', locked_by = 'racer'"
            " where id = %s", (chapter_2["id"],),
        )  # fmt: skip
        conn.execute("set session_replication_role = replica")
        conn.execute(
            "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences,"
            " created_at) select sequence_id, id, %s, '{}', now() - interval '1 hour'"
            " from chapters where sequence_id = %s and chapter_number = 1",
            (chapter_2["user_id"], chapter_2["sequence_id"]),
        )
        conn.execute("set session_replication_role = default")
        yield racer


def test_a_claim_that_loses_the_story_race_claims_something_else(conn, database_url, story):
    """An earlier chapter queued while a later one was being claimed: two snapshots
    each see a runnable chapter; the unique index refuses the second, which claims
    again and takes another story's job."""
    jobs = story(2, order=[2])
    other = story(1)
    with story_race(conn, database_url, jobs[2]) as racer:
        result: list[Any] = []
        claimer = threading.Thread(target=lambda: result.append(queue.claim(conn, "w1")))
        claimer.start()
        claimer.join(0.5)
        assert claimer.is_alive()  # waiting on the racer's uncommitted claim of the story
        racer.commit()
        claimer.join(10)
    assert result[0] is not None and result[0].job_id == other[1]["id"]


def test_a_finish_whose_next_claim_loses_the_story_race_still_finishes(
    conn, database_url, story
):
    """`finish` claims the next job in its own transaction: when that claim meets the
    unique index (the race above), the finish is done again alone, with the same
    summary, and nothing is claimed."""
    mine = story(1)
    jobs = story(2, order=[2])
    claim = queue.claim(conn, "w1")
    assert claim.job_id == mine[1]["id"]
    with story_race(conn, database_url, jobs[2]) as racer:
        result: list[Any] = []

        def finish() -> None:
            done = queue.finish(
                conn, claim, summary="the end", embedding=[], embedding_model="",
                word_count=2, checkpoint={"sections": 1}, next_owner="w1",
            )  # fmt: skip
            result.append(done)

        finisher = threading.Thread(target=finish)
        finisher.start()
        finisher.join(0.5)
        assert finisher.is_alive()  # its claim waits on the racer's claim of the story
        racer.commit()
        finisher.join(10)
    assert result == [None]
    row = job(conn, claim.job_id)
    assert (row["status"], row["checkpoint"]) == ("completed", {"sections": 1})
    chapter = conn.execute(
        "select summary, word_count from chapters where id = %s", (mine[1]["chapter_id"],)
    ).fetchone()
    assert chapter == {"summary": "the end", "word_count": 2}


def test_constraint_name_is_the_one_claim_retries_on(conn, story):
    jobs = story(2)
    queue.claim(conn, "w1")
    try:
        with translated("probe", conn):
            conn.execute(
                "update generation_jobs set status = 'processing' where id = %s",
                (jobs[2]["id"],),
            )
    except ConstraintViolation as exc:
        assert exc.constraint == queue.ONE_WRITER_PER_STORY
    else:
        raise AssertionError("a second writer for one story was not refused")
