"""Issue 21 with real `storyworker run` processes: a story's chapters are written one
at a time and in order whatever the workers and hosts; each chapter's prompt carries
every earlier chapter's summary, or names the chapters that are missing; one user's
backlog does not hold up another user; MAX_JOBS_PER_USER holds on every worker."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from generation.story.prompts import DATA_CLOSE, DATA_OPEN
from tests.acceptance.conftest import PREFS
from tests.fakegemini import VALID_KEY, FakeGemini
from tests.fakememory import is_memory
from tests.service import wait_for

pytestmark = pytest.mark.slow

SMALL = {**PREFS, "bullet_count": 2, "words_per_bullet": 50}


@pytest.fixture
def gemini():
    server = FakeGemini().start()
    yield server
    server.stop()


def gemini_env(server: FakeGemini) -> dict[str, str]:
    return {
        "GENERATION_PROVIDER": "gemini",
        "GEMINI_API_KEY": VALID_KEY,
        "GEMINI_BASE_URL": server.base_url,
        "GEMINI_TIMEOUT_SECONDS": "5",
    }


def new_story(conn, user_factory, chapters: int, user=None, title="Tides") -> dict[str, Any]:
    """A story of `chapters` empty chapters (a new user's unless `user`)."""
    user = user or user_factory()["id"]
    story = conn.execute(
        "insert into sequences (user_id, title, premise) values (%s, %s, 'A door')"
        " returning id, user_id",
        (user, title),
    ).fetchone()
    story["chapters"] = [
        conn.execute(
            "insert into chapters (sequence_id, chapter_number) values (%s, %s) returning id",
            (story["id"], n),
        ).fetchone()["id"]
        for n in range(1, chapters + 1)
    ]
    return story


def queue_chapters(conn, story, numbers, prefs=SMALL) -> None:
    """One job per chapter number, all in one transaction (queued at once)."""
    with conn.transaction():
        for n in numbers:
            conn.execute(
                "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences)"
                " values (%s, %s, %s, %s)",
                (story["id"], story["chapters"][n - 1], story["user_id"], json.dumps(prefs)),
            )


def jobs_of(conn, sequence_id) -> list[dict[str, Any]]:
    return conn.execute(
        "select j.*, c.chapter_number from generation_jobs j join chapters c"
        " on c.id = j.chapter_id where j.sequence_id = %s order by j.started_at",
        (sequence_id,),
    ).fetchall()


def settled(conn, sequence_ids) -> bool:
    return not conn.execute(
        "select 1 from generation_jobs where sequence_id = any(%s)"
        " and status in ('pending', 'processing')",
        (list(sequence_ids),),
    ).fetchone()


def assert_one_at_a_time(jobs: list[dict[str, Any]]) -> None:
    """No two of `jobs` (ordered by start) ran at the same time."""
    for before, after in itertools.pairwise(jobs):
        assert after["started_at"] >= before["completed_at"], (before["id"], after["id"])


def outline_prompts(gemini: FakeGemini) -> list[dict[str, Any]]:
    """The story data of every outline request the fake received, in order."""
    found = []
    for request in gemini.requests:
        body = request.body or {}
        config = body.get("generationConfig", {}) if isinstance(body, dict) else {}
        if config.get("responseMimeType") != "application/json":
            continue
        text = json.dumps(body.get("contents"))
        text = json.loads(text)[0]["parts"][0]["text"]
        if is_memory(text):  # the chapter memory's request, in JSON too
            continue
        data = text.split(DATA_OPEN, 1)[1].split(DATA_CLOSE, 1)[0]
        found.append({"text": text, "data": json.loads(data)})
    return found


def test_six_chapters_queued_at_once_complete_in_order_with_every_summary(
    service, conn, user_factory, gemini
):
    forward = new_story(conn, user_factory, 6, title="Forward")
    backward = new_story(conn, user_factory, 6, title="Backward")
    queue_chapters(conn, forward, range(1, 7))
    queue_chapters(conn, backward, range(6, 0, -1))
    svc = service(WORKER_CONCURRENCY="4", **gemini_env(gemini)).start()
    stories = (forward["id"], backward["id"])
    wait_for(lambda: settled(conn, stories), 120, "both stories written")
    for story in stories:
        jobs = jobs_of(conn, story)
        assert [j["status"] for j in jobs] == ["completed"] * 6
        assert [j["chapter_number"] for j in jobs] == [1, 2, 3, 4, 5, 6]
        assert_one_at_a_time(jobs)
    summaries = {
        (r["sequence_id"], r["chapter_number"]): r["summary"]
        for r in conn.execute("select sequence_id, chapter_number, summary from chapters")
    }
    prompts = outline_prompts(gemini)
    assert len(prompts) == 12
    for prompt in prompts:
        data = prompt["data"]
        number = data["chapter_number"]
        story = {"Forward": forward, "Backward": backward}[data["sequence_title"]]["id"]
        so_far = data.get("story_so_far") or {}
        assert so_far.get("recent_chapter_summaries", []) == [
            {"chapter": k, "summary": summaries[(story, k)]} for k in range(1, number)
        ]
        assert "missing_chapters" not in so_far
    assert svc.stop() == 0


def test_a_chapter_that_fails_for_good_is_named_missing_and_one_awaiting_retry_holds(
    service, conn, user_factory, gemini
):
    story = new_story(conn, user_factory, 2)
    queue_chapters(conn, story, [1], prefs={**SMALL, "bullet_count": 99})  # refused for good
    queue_chapters(conn, story, [2])
    svc = service(WORKER_CONCURRENCY="4", **gemini_env(gemini)).start()
    wait_for(lambda: settled(conn, [story["id"]]), 60, "the story settled")
    jobs = {j["chapter_number"]: j for j in jobs_of(conn, story["id"])}
    assert jobs[1]["status"] == "failed" and jobs[2]["status"] == "completed"
    (prompt,) = outline_prompts(gemini)
    assert prompt["data"]["chapter_number"] == 2
    missing = prompt["data"]["story_so_far"]["missing_chapters"]
    assert missing.startswith("Chapter 1 of this story has not been written"), missing

    # Chapter 1 queued again but waiting for its retry: chapter 2's rewrite waits too.
    queue_chapters(conn, story, [1, 2])
    conn.execute(
        "update generation_jobs set run_after = now() + interval '3 seconds'"
        " where sequence_id = %s and status = 'pending' and chapter_id = %s",
        (story["id"], story["chapters"][0]),
    )
    wait_for(lambda: settled(conn, [story["id"]]), 60, "the rewrites")
    first_round = {jobs[1]["id"], jobs[2]["id"]}
    rewrites = [j for j in jobs_of(conn, story["id"]) if j["id"] not in first_round]
    assert [j["chapter_number"] for j in rewrites] == [1, 2]
    assert_one_at_a_time(rewrites)
    assert svc.stop() == 0


def test_two_supervisors_never_write_two_chapters_of_one_story_at_once(service, conn, user_factory):
    story = new_story(conn, user_factory, 8)
    env = {"WORKER_CONCURRENCY": "4", "OFFLINE_LATENCY_MS": "2"}
    hosts = [service(**env).start(), service(**env).start()]
    rng = random.Random(21)
    for _ in range(5):  # rounds: the whole story queued again, in a random order
        numbers = list(range(1, 9))
        rng.shuffle(numbers)
        queue_chapters(conn, story, numbers, prefs={**SMALL, "bullet_count": 1})
        wait_for(lambda: settled(conn, [story["id"]]), 60, "the round")
    jobs = [j for j in jobs_of(conn, story["id"]) if j["status"] == "completed"]
    assert len(jobs) == 40
    assert_one_at_a_time(jobs)
    for start in range(0, 40, 8):
        assert [j["chapter_number"] for j in jobs[start : start + 8]] == list(range(1, 9))
    # Which worker takes each chapter is not fixed: one that finishes a chapter claims
    # the next in the same transaction, so one worker may write a whole round.
    assert all(host.stop() == 0 for host in hosts)


def test_one_users_backlog_does_not_hold_up_another_user(service, conn, user_factory):
    a, b = user_factory()["id"], user_factory()["id"]
    backlog = [new_story(conn, user_factory, 1, user=a) for _ in range(40)]
    for story in backlog:
        queue_chapters(conn, story, [1], prefs={**SMALL, "bullet_count": 1})
    svc = service(WORKER_CONCURRENCY="2", OFFLINE_LATENCY_MS="40").start()
    wait_for(
        lambda: (
            conn.execute(
                "select count(*) as n from generation_jobs where status = 'completed'"
            ).fetchone()["n"]
            >= 4
        ),
        60,
        "a's first jobs",
    )
    late = new_story(conn, user_factory, 1, user=b)
    queue_chapters(conn, late, [1], prefs={**SMALL, "bullet_count": 1})
    wait_for(lambda: settled(conn, [s["id"] for s in [*backlog, late]]), 120, "all jobs")
    rows = conn.execute(
        "select user_id, created_at, started_at, completed_at from generation_jobs"
    ).fetchall()
    b_job = next(r for r in rows if r["user_id"] == b)
    durations = sorted(r["completed_at"] - r["started_at"] for r in rows if r["user_id"] == a)
    waited = b_job["started_at"] - b_job["created_at"]
    assert waited <= durations[-1], (waited, durations[len(durations) // 2])
    assert sum(r["started_at"] > b_job["started_at"] for r in rows if r["user_id"] == a) > 20
    assert svc.stop() == 0


def test_max_jobs_per_user_one_with_four_workers_never_runs_two(service, conn, user_factory):
    user = user_factory()["id"]
    stories = [new_story(conn, user_factory, 1, user=user) for _ in range(12)]
    for story in stories:
        queue_chapters(conn, story, [1], prefs={**SMALL, "bullet_count": 1})
    svc = service(WORKER_CONCURRENCY="4", MAX_JOBS_PER_USER="1", OFFLINE_LATENCY_MS="5")
    svc.start()
    most = 0
    while not settled(conn, [s["id"] for s in stories]):
        running = conn.execute(
            "select count(*) as n from generation_jobs where status = 'processing'"
        ).fetchone()["n"]
        most = max(most, running)
    jobs = conn.execute(
        "select * from generation_jobs where user_id = %s order by started_at", (user,)
    ).fetchall()
    assert [j["status"] for j in jobs] == ["completed"] * 12
    assert most == 1
    assert_one_at_a_time(jobs)
    assert svc.stop() == 0
