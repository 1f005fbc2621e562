"""The health server as operators and load balancers see it: real supervisor, real HTTP."""

from __future__ import annotations

import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import PREFS
from tests.service import children_of, wait_for

pytestmark = pytest.mark.slow


def families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list, **labels: str) -> float:
    return sum(s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items()))


def test_healthy_service_lists_its_workers(service):
    svc = service(WORKER_CONCURRENCY="3").start()
    status, body = svc.get("/health")
    assert status == 200 and body["status"] == "healthy"
    assert {"status", "timestamp", "uptime", "workers"} <= set(body)
    pids = [w["pid"] for w in body["workers"]]
    assert [w["index"] for w in body["workers"]] == [0, 1, 2]
    assert set(pids) <= set(children_of(svc.pid)) and len(set(pids)) == 3
    assert all(w["heartbeat_age_seconds"] < 2 and w["rss_bytes"] > 0 for w in body["workers"])
    head = svc.get("/nope")
    assert head[0] == 404 and head[1] == {"error": "not found"}
    assert svc.stop() == 0


def test_a_frozen_worker_turns_health_503_until_replaced(service):
    svc = service(WORKER_CONCURRENCY="2", WORKER_TIMEOUT_SECONDS="3").start()
    victim = svc.workers()[1]
    import os

    os.kill(victim["pid"], signal.SIGSTOP)
    _, body = wait_for(lambda: (r := svc.get("/health"))[0] == 503 and r, 8, "503")
    assert body["status"] == "unhealthy"
    assert any(f"worker 1 (pid {victim['pid']})" in p for p in body["problems"]), body["problems"]
    wait_for(lambda: svc.get("/health")[0] == 200, 20, "200 again")
    assert svc.workers()[1]["pid"] != victim["pid"] and svc.workers()[1]["restarts"] == 1
    assert svc.stop() == 0


def test_metrics_move_with_jobs_and_queue_depth_matches(service, jobs, conn):
    svc = service(WORKER_CONCURRENCY="2").start()
    before = families(svc.get("/metrics")[1])
    assert value(before["storyworker_queue_jobs"], status="pending") == 0
    jobs(4, {**PREFS, "bullet_count": 2})
    wait_for(
        lambda: (
            conn.execute(
                "select count(*) as n from generation_jobs where status = 'completed'"
            ).fetchone()["n"]
            == 4
        ),
        60,
        "four completed jobs",
    )
    import time

    time.sleep(5.5)  # queue statistics are cached for five seconds
    after = families(svc.get("/metrics")[1])
    assert value(after["storyworker_jobs"], outcome="completed") == 4
    assert value(after["storyworker_llm_calls"], kind="outline", outcome="ok") == 4
    assert value(after["storyworker_llm_tokens"]) > 0
    sections = after["storyworker_section_duration_seconds"]
    assert sum(s.value for s in sections if s.name.endswith("_count")) == 8
    depth = {s.labels["status"]: s.value for s in after["storyworker_queue_jobs"]}
    in_table = {
        r["status"]: r["n"]
        for r in conn.execute("select status, count(*) as n from generation_jobs group by status")
    }
    assert depth["completed"] == in_table["completed"] == 4 and depth["pending"] == 0
    assert value(after["storyworker_queue_stats_up"]) == 1
    assert value(after["storyworker_worker_jobs"], outcome="completed") == 4
    assert set(after) >= {
        "storyworker_worker_heartbeat_age_seconds",
        "storyworker_worker_state",
        "storyworker_worker_resident_memory_bytes",
        "storyworker_worker_restarts",
        "storyworker_job_duration_seconds",
        "storyworker_supervisor_heartbeat_age_seconds",
    }
    assert svc.stop() == 0


def test_no_response_carries_a_secret_or_story_text(service, jobs, conn, database_url):
    secret_dsn = f"{database_url} password=hunter2-db-secret"  # trust auth ignores it
    svc = service(
        WORKER_CONCURRENCY="1", DATABASE_URL=secret_dsn, GEMINI_API_KEY="AIzaSy-api-secret"
    ).start()
    jobs(1)
    wait_for(
        lambda: (
            conn.execute(
                "select count(*) as n from generation_jobs where status = 'completed'"
            ).fetchone()["n"]
            == 1
        ),
        30,
        "a completed job",
    )
    story = conn.execute("select content, summary from chapters where content <> ''").fetchone()
    snippets = [story["content"][:40], story["content"][-40:], story["summary"][:40]]
    for path in ("/health", "/ready", "/metrics", "/nope"):
        _, body = svc.get(path)
        text = str(body)
        assert "hunter2" not in text and "AIzaSy" not in text, path
        assert not any(s in text for s in snippets), path
    assert "hunter2" not in svc.logs() and "AIzaSy" not in svc.logs()
    assert not any(s in svc.logs() for s in snippets)
    assert svc.stop() == 0
