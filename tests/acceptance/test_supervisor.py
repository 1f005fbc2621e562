"""`storyworker run` as a real process tree, against a real PostgreSQL, with the
offline provider: end to end, crashes, signals, scaling, outages."""

from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from generation.providers.offline import OfflineProvider
from generation.story.preferences import parse_preferences
from generation.story.writer import SectionStats, write_chapter
from generation.types import ChapterRequest, Checkpoint, Outline
from tests.acceptance.conftest import PREFS
from tests.service import Service, children_of, wait_for

pytestmark = pytest.mark.slow


class Discard:
    def on_context(self, step: str, manifest: object) -> None: ...
    def on_outline(self, outline: Outline) -> None: ...
    def on_section_restart(self, index: int, why: str) -> None: ...
    def on_chunk(self, text: str) -> None: ...
    def on_section_done(self, index: int, stats: SectionStats) -> None: ...


def expected_text(conn: psycopg.Connection, chapter_id: uuid.UUID, prefs: dict[str, Any]) -> str:
    """What the offline provider writes for this chapter: the exact text, written once."""
    row = conn.execute(
        "select c.chapter_number, s.title, s.premise from chapters c"
        " join sequences s on s.id = c.sequence_id where c.id = %s",
        (chapter_id,),
    ).fetchone()
    request = ChapterRequest(
        chapter_number=row["chapter_number"],
        preferences=parse_preferences(prefs),
        sequence_title=row["title"],
        premise=row["premise"],
    )
    return write_chapter(request, OfflineProvider(), Checkpoint(), Discard()).text


def statuses(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("select status, count(*) as n from generation_jobs group by status")
    return {r["status"]: r["n"] for r in rows}


def all_settled(conn: psycopg.Connection, total: int, status: str = "completed") -> bool:
    return statuses(conn).get(status, 0) == total


def assert_chapters_correct(conn: psycopg.Connection, jobs: list[dict[str, Any]]) -> None:
    for job in jobs:
        row = conn.execute(
            "select j.status, j.progress, c.content, c.summary, c.embedding, c.word_count"
            " from generation_jobs j join chapters c on c.id = j.chapter_id where j.id = %s",
            (job["id"],),
        ).fetchone()
        assert row["status"] == "completed" and row["progress"] == 100
        assert row["content"] == expected_text(conn, job["chapter_id"], job["user_preferences"])
        assert row["summary"] and len(row["embedding"]) == 768 and row["word_count"] > 100


def busy_worker(svc: Service, min_progress: int = 0) -> dict[str, Any] | None:
    return next(
        (w for w in svc.workers() if w["state"] == "busy" and (w["progress"] or 0) >= min_progress),
        None,
    )


def test_end_to_end_text_grows_live_and_every_chapter_is_exact(service, jobs, conn):
    created = jobs(9)
    svc = service(WORKER_CONCURRENCY="3", OFFLINE_LATENCY_MS="30").start()
    watched = created[-1]["chapter_id"]
    samples: list[str] = []
    while not all_settled(conn, 9):
        content = conn.execute("select content from chapters where id = %s", (watched,)).fetchone()
        samples.append(content["content"])
        time.sleep(0.02)
        assert svc.proc.poll() is None, svc.logs()
    assert_chapters_correct(conn, created)
    final = conn.execute("select content from chapters where id = %s", (watched,)).fetchone()[
        "content"
    ]
    partial = {s for s in samples if s and s != final}
    assert len(partial) >= 3, "text did not grow visibly"
    assert all(final.startswith(s) for s in samples)
    assert svc.stop() == 0


def test_kill_9_of_a_busy_worker_resumes_from_the_checkpoint(service, jobs, conn):
    (job,) = jobs(1, {**PREFS, "words_per_bullet": 200})
    svc = service(WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS="40").start()
    victim = wait_for(lambda: busy_worker(svc, min_progress=50), 30, "a worker past section 2")
    import os

    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: all_settled(conn, 1), 60, "the job to complete")
    assert_chapters_correct(conn, [job])
    state = conn.execute(
        "select attempts from generation_jobs where id = %s", (job["id"],)
    ).fetchone()
    assert state["attempts"] == 2
    replacement = wait_for(
        lambda: [w for w in svc.workers() if w["pid"] != victim["pid"]], 10, "a new worker"
    )
    assert replacement[0]["restarts"] == 1
    _, metrics = svc.get("/metrics")
    outline_calls = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("storyworker_llm_calls_total{") and 'kind="outline"' in line
    )
    assert outline_calls == 1, "the outline was asked for again"
    assert "worker exited" in svc.logs() and "SIGKILL" in svc.logs()


def test_kill_9_of_everything_then_a_new_supervisor_rescues_the_job(service, jobs, conn):
    (job,) = jobs(1, {**PREFS, "words_per_bullet": 300})
    first = service(WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS="40", LEASE_SECONDS="3").start()
    wait_for(lambda: busy_worker(first, min_progress=30), 30, "a busy worker")
    first.kill_everything()
    time.sleep(0.5)
    assert statuses(conn) == {"processing": 1}
    orphaned_at = time.monotonic()
    second = service(WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS="5", LEASE_SECONDS="3").start()
    wait_for(
        lambda: (
            conn.execute(
                "select attempts from generation_jobs where id = %s", (job["id"],)
            ).fetchone()["attempts"]
            == 2
        ),
        15,
        "the rescue and re-claim",
    )
    assert time.monotonic() - orphaned_at < 3 + 5 + 2  # lease + rescue tick + start-up
    wait_for(lambda: all_settled(conn, 1), 60, "the job to complete")
    assert_chapters_correct(conn, [job])
    assert second.stop() == 0


def test_sigterm_releases_unfinished_jobs_and_they_complete_after_restart(service, jobs, conn):
    created = jobs(4, {**PREFS, "words_per_bullet": 400})
    svc = service(
        WORKER_CONCURRENCY="2", OFFLINE_LATENCY_MS="50", SHUTDOWN_GRACE_SECONDS="2"
    ).start()
    wait_for(lambda: len([w for w in svc.workers() if w["state"] == "busy"]) == 2, 20, "two busy")
    sent = time.monotonic()
    draining = []
    svc.send(signal.SIGTERM)
    while svc.proc.poll() is None:
        body = svc.health()
        if body:
            draining.append(body["status"])
        time.sleep(0.05)
    assert svc.proc.returncode == 0
    assert time.monotonic() - sent < 2 + 4
    assert "draining" in draining
    assert "processing" not in statuses(conn)
    released = conn.execute(
        "select attempts, checkpoint from generation_jobs"
        " where status = 'pending' and checkpoint is not null"
    ).fetchall()
    assert released and all(r["attempts"] == 0 for r in released)
    assert children_of(svc.pid) == []
    again = service(WORKER_CONCURRENCY="2", OFFLINE_LATENCY_MS="5").start()
    wait_for(lambda: all_settled(conn, 4), 60, "every job to complete")
    assert_chapters_correct(conn, created)
    assert again.stop() == 0


def test_two_supervisors_share_one_database(service, jobs, conn):
    created = jobs(30, {**PREFS, "bullet_count": 2})
    a = service(WORKER_CONCURRENCY="3", OFFLINE_LATENCY_MS="10").start()
    b = service(WORKER_CONCURRENCY="3", OFFLINE_LATENCY_MS="10").start()
    wait_for(lambda: all_settled(conn, 30), 90, "all 30 jobs")
    assert_chapters_correct(conn, created)
    rows = conn.execute("select attempts, locked_by from generation_jobs").fetchall()
    assert {r["attempts"] for r in rows} == {1}, "a job ran twice"
    hosts = {r["locked_by"].rsplit("/", 1)[1] for r in rows}
    assert len(hosts) > 3  # workers of both supervisors took part
    assert a.stop() == 0 and b.stop() == 0


def test_notify_wakes_an_idle_worker_at_once(service, job_factory, conn):
    svc = service(WORKER_CONCURRENCY="1", POLL_INTERVAL_MS="60000").start()
    time.sleep(1.5)  # the worker is idle, waiting on LISTEN
    job = job_factory(user_preferences=PREFS)
    wait_for(
        lambda: conn.execute(
            "select started_at from generation_jobs where id = %s", (job["id"],)
        ).fetchone()["started_at"],
        5,
        "the claim",
    )
    delay = conn.execute(
        "select extract(epoch from started_at - created_at) as s"
        " from generation_jobs where id = %s",
        (job["id"],),
    ).fetchone()["s"]
    assert float(delay) < 0.5
    assert "pickup=listen" in svc.logs()
    svc.stop()


def test_a_frozen_worker_is_killed_and_replaced_and_its_job_completes(service, jobs, conn):
    (job,) = jobs(1, {**PREFS, "words_per_bullet": 200})
    svc = service(
        WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS="40", WORKER_TIMEOUT_SECONDS="3"
    ).start()
    victim = wait_for(lambda: busy_worker(svc, min_progress=30), 30, "a busy worker")
    import os

    os.kill(victim["pid"], signal.SIGSTOP)
    unhealthy = wait_for(
        lambda: (svc.health() or {}).get("status") == "unhealthy" and svc.health(), 10, "503"
    )
    assert any(str(victim["pid"]) in p or "worker 0" in p for p in unhealthy.get("problems", []))
    wait_for(lambda: all_settled(conn, 1), 60, "the job to complete")
    assert_chapters_correct(conn, [job])
    wait_for(svc.healthy, 15, "healthy again")
    assert "worker is stuck" in svc.logs()


def test_ttin_ttou_and_hup(service, jobs, conn):
    svc = service()
    dotenv = svc.log_path.parent / ".env"  # the service's working directory
    del svc.env["WORKER_CONCURRENCY"]
    dotenv.write_text("WORKER_CONCURRENCY=2\n")
    svc.start()
    assert len(svc.workers()) == 2
    svc.send(signal.SIGTTIN)
    wait_for(lambda: len(svc.workers()) == 3 and svc.healthy(), 15, "three workers")
    # Signals of one kind sent back to back may merge into one (POSIX): one at a time.
    svc.send(signal.SIGTTOU)
    wait_for(lambda: len(svc.workers()) == 2 and svc.healthy(), 15, "two workers")
    svc.send(signal.SIGTTOU)
    wait_for(lambda: len(svc.workers()) == 1 and svc.healthy(), 15, "one worker")
    assert len(children_of(svc.pid)) >= 2  # one worker + the health server (and its worker)

    created = jobs(6, {**PREFS, "words_per_bullet": 150})
    before = {w["pid"] for w in svc.workers()}
    dotenv.write_text("WORKER_CONCURRENCY=3\n")
    svc.send(signal.SIGHUP)  # re-reads the configuration, replaces workers one at a time
    wait_for(lambda: all_settled(conn, 6), 90, "every job to complete across the reload")
    wait_for(
        lambda: (
            len(svc.workers()) == 3
            and svc.healthy()
            and not before & {w["pid"] for w in svc.workers()}
        ),
        20,
        "three workers, none from before the reload",
    )
    assert_chapters_correct(conn, created)
    assert svc.stop() == 0


def test_bad_jobs_fail_clearly_and_the_worker_goes_on(
    service, job_factory, chapter_factory, user_factory, conn
):
    stranger = user_factory()
    other = chapter_factory(content="someone else's chapter")
    foreign = job_factory(chapter=other, user_id=stranger["id"], user_preferences=PREFS)
    invalid = job_factory(user_preferences={"bullet_count": 40})
    good = job_factory(user_preferences=PREFS)
    svc = service(WORKER_CONCURRENCY="1").start()
    wait_for(
        lambda: statuses(conn).get("completed") == 1 and statuses(conn).get("failed") == 2,
        30,
        "settled",
    )
    rows = {r["id"]: r for r in conn.execute("select * from generation_jobs")}
    assert "does not belong to user" in rows[foreign["id"]]["error_message"]
    assert (
        rows[invalid["id"]]["error_message"]
        == "user_preferences.bullet_count must be an integer from 1 to 12"
    )
    assert rows[foreign["id"]]["attempts"] == 1 and rows[invalid["id"]]["attempts"] == 1
    assert conn.execute("select content from chapters where id = %s", (other["id"],)).fetchone()[
        "content"
    ] == ("someone else's chapter")
    assert_chapters_correct(conn, [good])
    svc.stop()


def test_postgres_restart_mid_run_loses_and_duplicates_nothing(service, jobs, conn, pg):
    if not pg.restartable:
        pytest.skip("DATABASE_URL points at a server this suite does not own")
    created = jobs(6, {**PREFS, "words_per_bullet": 150})
    svc = service(WORKER_CONCURRENCY="2", OFFLINE_LATENCY_MS="30").start()
    wait_for(lambda: busy_worker(svc, min_progress=30), 20, "work under way")
    conn.close()
    options = pg.stop()
    try:
        time.sleep(1.0)
        started = time.monotonic()
        _, body = svc.get("/health")
        assert time.monotonic() - started < 1.0  # shared memory only: no database call
        assert len(body["workers"]) == 2 and body["supervisor"]["state"] == "running"
        ready_status, ready = svc.get("/ready", timeout=5)
        assert ready_status == 503 and ready["checks"]["database"]["ok"] is False
        time.sleep(2.0)
    finally:
        pg.start(options)
    with psycopg.connect(svc.env["DATABASE_URL"], autocommit=True, row_factory=dict_row) as again:
        wait_for(lambda: all_settled(again, 6), 90, "every job to complete after the outage")
        assert_chapters_correct(again, created)
    wait_for(lambda: svc.get("/ready")[0] == 200, 20, "ready again")
    assert "database connection lost" in svc.logs() or "database unavailable" in svc.logs()
    assert svc.stop() == 0


def test_a_long_streaming_section_keeps_the_worker_alive(service, jobs, conn):
    # 600 words in 12-word chunks at 100 ms each: a section streams for ~5 s, longer
    # than WORKER_TIMEOUT_SECONDS; the heartbeat must come from the stream itself.
    (job,) = jobs(1, {**PREFS, "bullet_count": 1, "words_per_bullet": 600})
    svc = service(
        WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS="100", WORKER_TIMEOUT_SECONDS="2"
    ).start()
    wait_for(lambda: all_settled(conn, 1), 60, "the job to complete")
    assert_chapters_correct(conn, [job])
    assert conn.execute("select attempts from generation_jobs").fetchone()["attempts"] == 1
    assert "worker is stuck" not in svc.logs()
    assert svc.stop() == 0
