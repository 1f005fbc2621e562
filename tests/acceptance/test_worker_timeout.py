"""WORKER_TIMEOUT_SECONDS is independent of the provider's per-request timeout (issue 13,
item 8): a worker waiting inside a long request is not killed as stuck, and a frozen
worker is still replaced within the short timeout."""

from __future__ import annotations

import os
import signal

import psycopg
import pytest

from tests.acceptance.test_gemini_service import gemini_env
from tests.fakegemini import FakeGemini
from tests.service import wait_for

pytestmark = pytest.mark.slow


def status(conn: psycopg.Connection, job: dict) -> dict:
    return conn.execute(
        "select status, attempts from generation_jobs where id = %s", (job["id"],)
    ).fetchone()


def test_a_request_longer_than_the_worker_timeout_is_not_taken_for_stuck(service, jobs, conn):
    (job,) = jobs(1, {"bullet_count": 1, "words_per_bullet": 50})
    # Each offline call (the outline, each chunk) takes 2.5 s; the timeout is 1.5 s.
    svc = service(WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS="2500", WORKER_TIMEOUT_SECONDS="1.5")
    svc.start()
    wait_for(lambda: status(conn, job)["status"] == "completed", 90, "the slow job")
    assert status(conn, job)["attempts"] == 1
    assert "worker is stuck" not in svc.logs()
    assert svc.stop() == 0


def test_a_frozen_worker_is_replaced_within_a_short_timeout_beside_geminis_long_one(
    service, gemini_server
):
    env = {**gemini_env(gemini_server), "WORKER_TIMEOUT_SECONDS": "5"}
    env.pop("GEMINI_TIMEOUT_SECONDS")  # Gemini's own default: 120 s
    svc = service(WORKER_CONCURRENCY="1", **env).start()
    (victim,) = svc.workers()
    os.kill(victim["pid"], signal.SIGSTOP)
    wait_for(
        lambda: any(w["pid"] not in (victim["pid"], 0) for w in svc.workers()) and svc.healthy(),
        30,
        "the frozen worker replaced",
    )
    assert "worker is stuck" in svc.logs()
    assert svc.stop() == 0


@pytest.fixture
def gemini_server():
    server = FakeGemini().start()
    yield server
    server.stop()
