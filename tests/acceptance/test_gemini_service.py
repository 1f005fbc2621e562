"""`storyworker run` with the Gemini provider, against the fake Gemini server."""

from __future__ import annotations

import psycopg
import pytest

from tests.acceptance.conftest import PREFS
from tests.fakegemini import VALID_KEY, FakeGemini, Reply, refused_candidate
from tests.service import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def gemini():
    server = FakeGemini().start()
    yield server
    server.stop()


def gemini_env(server: FakeGemini, key: str = VALID_KEY) -> dict[str, str]:
    return {
        "GENERATION_PROVIDER": "gemini",
        "GEMINI_API_KEY": key,
        "GEMINI_BASE_URL": server.base_url,
        "GEMINI_TIMEOUT_SECONDS": "5",
    }


def job_status(conn: psycopg.Connection, job_id: object) -> str:
    return conn.execute("select status from generation_jobs where id = %s", (job_id,)).fetchone()[
        "status"
    ]


def test_jobs_complete_through_gemini_and_a_refusal_fails_clearly(
    service, job_factory, conn, gemini
):
    good = job_factory(user_preferences={**PREFS, "bullet_count": 2})
    svc = service(WORKER_CONCURRENCY="1", **gemini_env(gemini)).start()
    wait_for(lambda: job_status(conn, good["id"]) == "completed", 30, "the Gemini job")
    chapter = conn.execute("select * from chapters where id = %s", (good["chapter_id"],)).fetchone()
    assert chapter["content"].count("The tide came in") == 2  # one streamed section per bullet
    assert chapter["embedding_model"] == "gemini-embedding-001" and len(chapter["embedding"]) == 768
    assert chapter["outline"]["title"] == "The Door at Low Tide"

    gemini.queue("generateContent", Reply(body=refused_candidate("PROHIBITED_CONTENT")))
    refused = job_factory(user_preferences=PREFS)
    wait_for(lambda: job_status(conn, refused["id"]) == "failed", 30, "the refused job")
    row = conn.execute("select * from generation_jobs where id = %s", (refused["id"],)).fetchone()
    assert "refused" in row["error_message"] and row["attempts"] == 1
    status, ready = svc.get("/ready")
    assert status == 200 and ready["checks"]["api_key"]["ok"] is True
    assert svc.stop() == 0


def test_a_rejected_api_key_stops_the_service_with_the_cannot_boot_code(service, gemini):
    svc = service(WORKER_CONCURRENCY="2", **gemini_env(gemini, key="rejected-key"))
    svc.start(ready=False)
    assert svc.proc.wait(60) == 3
    logs = svc.logs()
    assert "worker cannot boot" in logs and "workers cannot boot; giving up" in logs
    assert "rejected-key" not in logs
