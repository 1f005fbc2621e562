"""The health app through Flask's test client, over a real heartbeat table and an
injected clock: /health, /ready, /metrics, and what it answers to anything else."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from health.app import HealthConfig, create_app
from health.checks import CachedCheck, CheckResult
from health.heartbeat import HeartbeatTable, SupervisorState, WorkerState
from health.metrics import QueueStats
from tests.fakes import Clock

WORKER_TIMEOUT = 30.0
SUPERVISOR_TIMEOUT = 10.0
JOB = "6a1f0c2e-4b3d-4e5f-8a9b-0c1d2e3f4a5b"
WORKER_KEYS = {
    "index",
    "pid",
    "state",
    "job_id",
    "progress",
    "heartbeat_age_seconds",
    "jobs_completed",
    "jobs_failed",
    "restarts",
    "rss_bytes",
}


@pytest.fixture
def clock() -> Clock:
    return Clock(10_000.0)


@pytest.fixture
def table(tmp_path: Path) -> Iterator[HeartbeatTable]:
    t = HeartbeatTable.create(4, directory=str(tmp_path))
    yield t
    t.close()
    t.unlink()


@pytest.fixture
def client(table: HeartbeatTable, clock: Clock) -> Callable[..., FlaskClient]:
    def make(**overrides: Any) -> FlaskClient:
        config = {
            "table": table,
            "worker_timeout_seconds": WORKER_TIMEOUT,
            "supervisor_timeout_seconds": SUPERVISOR_TIMEOUT,
            "clock": clock,
            **overrides,
        }
        return create_app(HealthConfig(**config)).test_client()

    return make


def run_healthy(table: HeartbeatTable, clock: Clock, workers: int = 2) -> None:
    """A running supervisor and `workers` fresh workers; worker 0 busy on JOB."""
    table.set_supervisor(state=SupervisorState.RUNNING, expected_workers=workers, now=clock.now)
    for i in range(workers):
        table.reset_slot(i, pid=5000 + i, state=WorkerState.STARTING, restarts=i, now=clock.now)
        table.update_slot(
            i,
            state=WorkerState.BUSY if i == 0 else WorkerState.IDLE,
            job_id=JOB if i == 0 else None,
            progress=40 if i == 0 else 0,
            rss_bytes=(i + 1) * 10_000_000,
            completed_delta=3 + i,
            failed_delta=i,
            now=clock.now,
        )


# --- /health -------------------------------------------------------------------------


def test_healthy(client, table, clock):
    run_healthy(table, clock)
    clock.now += 2.5
    response = client().get("/health")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert {"status", "timestamp", "uptime", "workers"} <= set(body)
    assert body["status"] == "healthy"
    assert body["problems"] == []

    stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert body["timestamp"].endswith("Z")
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    uptime = time.time() - table.supervisor().started_at
    assert 0 <= body["uptime"] <= uptime + 1

    assert [set(w) for w in body["workers"]] == [WORKER_KEYS, WORKER_KEYS]
    busy, idle = body["workers"]
    assert busy == {
        "index": 0,
        "pid": os.getpid(),
        "state": "busy",
        "job_id": JOB,
        "progress": 40,
        "heartbeat_age_seconds": 2.5,
        "jobs_completed": 3,
        "jobs_failed": 0,
        "restarts": 0,
        "rss_bytes": 10_000_000,
    }
    assert idle["index"] == 1 and idle["state"] == "idle" and idle["job_id"] is None
    assert (idle["jobs_completed"], idle["jobs_failed"], idle["restarts"]) == (4, 1, 1)


def test_workers_list_follows_the_expected_count(client, table, clock):
    run_healthy(table, clock, workers=3)
    table.set_supervisor(expected_workers=2, now=clock.now)  # TTOU: slot 2 retires
    body = client().get("/health").get_json()
    assert [w["index"] for w in body["workers"]] == [0, 1]


def test_a_stale_worker_makes_it_unhealthy_and_is_named(client, table, clock):
    run_healthy(table, clock, workers=3)
    clock.now += WORKER_TIMEOUT - 1
    for i in (0, 2):  # these two keep beating; worker 1 froze
        table.update_slot(i, now=clock.now)
    table.set_supervisor(now=clock.now)
    app = client()
    assert app.get("/health").status_code == 200  # not stale yet
    clock.now += 1.5
    response = app.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unhealthy"
    assert len(body["problems"]) == 1
    problem = body["problems"][0]
    assert problem.startswith("worker 1 ") and f"pid {os.getpid()}" in problem
    assert "30.5s" in problem
    assert body["workers"][1]["heartbeat_age_seconds"] == 30.5


def test_a_dead_slot_is_unhealthy(client, table, clock):
    run_healthy(table, clock)
    table.reset_slot(1, pid=0, state=WorkerState.DEAD, restarts=2, now=clock.now)
    response = client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unhealthy"
    assert [p for p in body["problems"] if "worker 1" in p and "dead" in p]
    assert body["workers"][1]["state"] == "dead" and body["workers"][1]["restarts"] == 2


def test_an_empty_slot_is_unhealthy(client, table, clock):
    run_healthy(table, clock, workers=2)
    table.set_supervisor(expected_workers=3, now=clock.now)  # slot 2 never filled
    response = client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert [p for p in body["problems"] if "worker 2" in p and "not running" in p]
    assert body["workers"][2]["state"] == "empty"


def test_a_stale_supervisor_is_unhealthy(client, table, clock):
    run_healthy(table, clock)
    clock.now += SUPERVISOR_TIMEOUT + 1
    for i in range(2):
        table.update_slot(i, now=clock.now)
    response = client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unhealthy"
    assert [p for p in body["problems"] if p.startswith("supervisor")]


@pytest.mark.parametrize("state", [SupervisorState.DRAINING, SupervisorState.STOPPED])
def test_draining(client, table, clock, state):
    run_healthy(table, clock)
    table.set_supervisor(state=state, now=clock.now)
    response = client().get("/health")
    assert response.status_code == 503
    assert response.get_json()["status"] == "draining"


def test_head_health(client, table, clock):
    run_healthy(table, clock)
    app = client()
    response = app.head("/health")
    assert response.status_code == 200 and response.data == b""
    table.reset_slot(0, pid=0, state=WorkerState.DEAD, restarts=1, now=clock.now)
    assert app.head("/health").status_code == 503


# --- /ready --------------------------------------------------------------------------


def ok_check(detail: str = "fine") -> Callable[[], CheckResult]:
    return lambda: CheckResult(ok=True, detail=detail)


def test_ready_when_every_check_passes(client):
    response = client(readiness_checks={"database": ok_check(), "migrations": ok_check("v3")})
    response = response.get("/ready")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "migrations"}
    assert body["checks"]["migrations"]["ok"] is True
    assert body["checks"]["migrations"]["detail"] == "v3"
    assert body["checks"]["migrations"]["latency_seconds"] >= 0


def test_a_failing_check_is_named(client):
    checks = {
        "database": ok_check(),
        "api_key": lambda: CheckResult(ok=False, detail="key rejected"),
    }
    response = client(readiness_checks=checks).get("/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not_ready"
    assert body["checks"]["api_key"] == {
        "ok": False,
        "detail": "key rejected",
        "latency_seconds": pytest.approx(0, abs=1),
    }
    assert body["checks"]["database"]["ok"] is True


def test_an_exception_in_a_check_is_a_failure_naming_its_class(client):
    def boom() -> CheckResult:
        raise ConnectionRefusedError("connection\nrefused on port 5432")

    response = client(readiness_checks={"database": boom, "other": ok_check()}).get("/ready")
    assert response.status_code == 503
    check = response.get_json()["checks"]["database"]
    assert check["ok"] is False
    assert check["detail"].startswith("ConnectionRefusedError")
    assert "\n" not in check["detail"]


def test_a_cached_check_runs_once_per_ttl(client):
    calls: list[int] = []
    now = Clock(0.0)

    def expensive() -> CheckResult:
        calls.append(1)
        return CheckResult(ok=len(calls) > 1, detail=f"call {len(calls)}")

    app = client(readiness_checks={"api_key": CachedCheck(expensive, 60.0, clock=now)})
    first = app.get("/ready")
    assert first.status_code == 503 and len(calls) == 1
    for t in (1.0, 30.0, 59.9):
        now.now = t
        response = app.get("/ready")
        assert response.status_code == 503  # the failure is cached too
        assert response.get_json()["checks"]["api_key"]["detail"].startswith("call 1")
    assert len(calls) == 1
    now.now = 60.0
    response = app.get("/ready")
    assert len(calls) == 2
    assert response.status_code == 200
    assert response.get_json()["checks"]["api_key"]["detail"].startswith("call 2")
    now.now = 61.0
    app.get("/ready")
    assert len(calls) == 2


def test_cached_check_turns_exceptions_into_failures():
    def boom() -> CheckResult:
        raise TimeoutError("slow")

    result = CachedCheck(boom, 10.0, clock=Clock(0.0))()
    assert result.ok is False and result.detail.startswith("TimeoutError: slow")


# --- /metrics ------------------------------------------------------------------------


def scrape(app: FlaskClient) -> dict[str, Any]:
    response = app.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    matches = [
        s.value
        for s in families[name].samples
        if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith("_created")
    ]
    assert len(matches) == 1, (name, labels, families[name].samples)
    return matches[0]


def fake_queue_stats(calls: list[int] | None = None) -> Callable[[], QueueStats]:
    def stats() -> QueueStats:
        if calls is not None:
            calls.append(1)
        return QueueStats({"pending": 7, "processing": 2, "failed": 1}, 42.5)

    return stats


def test_metrics_from_the_table_and_the_queue(client, table, clock):
    run_healthy(table, clock)
    table.set_supervisor(now=clock.now - 1.0)
    clock.now += 3.0
    families = scrape(client(queue_stats=fake_queue_stats()))

    assert families["storyworker_worker_heartbeat_age_seconds"].type == "gauge"
    assert sample(families, "storyworker_worker_heartbeat_age_seconds", worker="0") == 3.0
    assert sample(families, "storyworker_worker_heartbeat_age_seconds", worker="1") == 3.0
    assert sample(families, "storyworker_worker_state", worker="0", state="busy") == 1
    assert sample(families, "storyworker_worker_state", worker="0", state="idle") == 0
    assert sample(families, "storyworker_worker_state", worker="1", state="idle") == 1
    assert sum(s.value for s in families["storyworker_worker_state"].samples) == 2
    mem = "storyworker_worker_resident_memory_bytes"
    assert sample(families, mem, worker="1") == 20_000_000
    assert families["storyworker_worker_restarts"].type == "counter"
    assert sample(families, "storyworker_worker_restarts", worker="1") == 1
    assert families["storyworker_worker_jobs"].type == "counter"
    assert sample(families, "storyworker_worker_jobs", worker="1", outcome="completed") == 4
    assert sample(families, "storyworker_worker_jobs", worker="1", outcome="failed") == 1
    assert sample(families, "storyworker_supervisor_heartbeat_age_seconds") == 4.0
    assert sample(families, "storyworker_workers_expected") == 2

    assert sample(families, "storyworker_queue_stats_up") == 1
    assert sample(families, "storyworker_queue_jobs", status="pending") == 7
    assert sample(families, "storyworker_queue_jobs", status="processing") == 2
    assert sample(families, "storyworker_queue_jobs", status="failed") == 1
    assert sample(families, "storyworker_queue_oldest_runnable_age_seconds") == 42.5


def test_failing_queue_stats_are_reported_not_raised(client, table, clock):
    run_healthy(table, clock)

    def broken() -> QueueStats:
        raise OSError("database unreachable")

    families = scrape(client(queue_stats=broken))
    assert sample(families, "storyworker_queue_stats_up") == 0
    assert "storyworker_queue_jobs" not in families
    assert "storyworker_worker_heartbeat_age_seconds" in families


def test_queue_stats_are_cached_between_scrapes(client, table, clock):
    run_healthy(table, clock)
    calls: list[int] = []
    app = client(queue_stats=fake_queue_stats(calls))
    for _ in range(5):
        assert sample(scrape(app), "storyworker_queue_jobs", status="pending") == 7
    assert len(calls) == 1
    clock.now += 60.0
    scrape(app)
    assert len(calls) == 2


def test_no_queue_metrics_without_queue_stats(client, table, clock):
    run_healthy(table, clock)
    families = scrape(client())
    assert "storyworker_queue_stats_up" not in families
    assert "storyworker_workers_expected" in families


def test_samples_from_multiprocess_workers_are_exported(client, table, clock, tmp_path):
    run_healthy(table, clock)
    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    code = textwrap.dedent(
        """
        from prometheus_client import Counter, Histogram
        jobs = Counter("storyworker_jobs", "Jobs settled.", ["outcome"])
        jobs.labels(outcome="completed").inc(3)
        jobs.labels(outcome="failed").inc()
        Histogram("storyworker_job_seconds", "Job time.").observe(2.0)
        """
    )
    for _ in range(2):  # two worker processes: their samples add up
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)},
            check=True,
            timeout=60,
        )
    assert list(mp_dir.glob("*.db"))
    families = scrape(client(multiprocess_dir=str(mp_dir)))
    assert families["storyworker_jobs"].type == "counter"
    assert sample(families, "storyworker_jobs", outcome="completed") == 6
    assert sample(families, "storyworker_jobs", outcome="failed") == 2
    hist = {s.name: s.value for s in families["storyworker_job_seconds"].samples}
    assert hist["storyworker_job_seconds_count"] == 2
    assert hist["storyworker_job_seconds_sum"] == 4.0
    # The table's own metrics are still there.
    assert sample(families, "storyworker_workers_expected") == 2


# --- anything else -------------------------------------------------------------------


def test_unknown_path_is_a_json_404(client):
    response = client().get("/nope")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not found"}


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_other_methods_are_a_json_405_with_allow(client, path):
    response = client().post(path, data=b"x")
    assert response.status_code == 405
    assert response.get_json() == {"error": "method not allowed"}
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "HEAD"} <= allowed
    assert "POST" not in allowed


SECRET = "s3cr3t-" + uuid.uuid4().hex


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/health?token={SECRET}"),
        ("GET", f"/ready?token={SECRET}"),
        ("GET", f"/metrics?token={SECRET}"),
        ("GET", f"/{SECRET}"),
        ("POST", f"/health?token={SECRET}"),
        ("PUT", f"/{SECRET}?token={SECRET}"),
        ("DELETE", "/metrics"),
    ],
)
def test_requests_are_never_echoed(client, table, clock, method, path):
    run_healthy(table, clock)
    app = client(readiness_checks={"database": ok_check()}, queue_stats=fake_queue_stats())
    response = app.open(
        path,
        method=method,
        data=f"password={SECRET}",
        headers={"X-Api-Key": SECRET, "Cookie": f"session={SECRET}"},
    )
    assert response.status_code in (200, 404, 405)
    assert SECRET not in response.get_data(as_text=True)
    assert all(SECRET not in value for _, value in response.headers.items())


# --- checks, the standalone factory, and what else a probe may send ---------------------


def test_run_check_masks_credentials_and_rejects_non_results():
    from health.checks import run_check, safe_detail

    def leaky() -> CheckResult:
        raise ValueError(
            "bad dsn postgresql://app:hunter2@db:5432/x password=hunter3 "
            "url https://x.test/v1?key=AIzaSyABCDEFGHIJKL&alt=json"
        )

    detail = run_check(leaky).detail
    assert detail.startswith("ValueError: bad dsn")
    assert "postgresql://app:***@db" in detail
    assert not any(s in detail for s in ("hunter2", "hunter3", "AIzaSyABCDEFGHIJKL"))
    assert len(safe_detail("x" * 5000)) <= 300
    wrong = run_check(lambda: "fine")  # type: ignore[arg-type, return-value]
    assert (wrong.ok, wrong.detail) == (False, "check returned str")


def test_cached_check_is_thread_safe():
    import threading

    calls: list[int] = []
    gate = threading.Event()

    def slow() -> CheckResult:
        calls.append(1)
        gate.wait(5)
        return CheckResult(ok=True, detail="ok")

    check = CachedCheck(slow, 60.0, clock=Clock(0.0))
    threads = [threading.Thread(target=check) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1


def test_options_requests_are_a_405_too(client):
    response = client().options("/health")
    assert response.status_code == 405
    assert response.get_json() == {"error": "method not allowed"}


def test_responses_are_not_cached(client, table, clock):
    run_healthy(table, clock)
    assert client().get("/health").headers["Cache-Control"] == "no-store"


def test_a_slot_that_never_beat_has_no_age(client, table, clock):
    run_healthy(table, clock, workers=2)
    table.set_supervisor(expected_workers=3, now=clock.now)
    app = client()
    assert app.get("/health").get_json()["workers"][2]["heartbeat_age_seconds"] is None
    ages = scrape(app)["storyworker_worker_heartbeat_age_seconds"].samples
    assert sorted(s.labels["worker"] for s in ages) == ["0", "1"]


def test_create_app_from_env(table, clock, monkeypatch):
    from supervisor.health_wiring import table_app_from_env as create_app_from_env

    run_healthy(table, clock, workers=1)
    table.set_supervisor(now=time.monotonic())
    table.update_slot(0, now=time.monotonic())
    monkeypatch.setenv("STORYWORKER_HEARTBEAT_PATH", table.path)
    monkeypatch.setenv("WORKER_TIMEOUT_SECONDS", "45")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    app = create_app_from_env().test_client()
    assert app.get("/health").status_code == 200
    ready = app.get("/ready")
    assert ready.status_code == 200
    assert ready.get_json()["checks"]["heartbeat_table"]["detail"].endswith("is running")
    os.unlink(table.path)  # the supervisor exited and removed it
    ready = app.get("/ready").get_json()
    assert (
        ready["status"] == "not_ready" and "is gone" in ready["checks"]["heartbeat_table"]["detail"]
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "STORYWORKER_HEARTBEAT_PATH is not set"),
        ({"STORYWORKER_HEARTBEAT_PATH": "/nonexistent/x.heartbeat"}, "cannot open"),
        ({"WORKER_TIMEOUT_SECONDS": "soon"}, "WORKER_TIMEOUT_SECONDS"),
    ],
)
def test_create_app_from_env_says_what_is_wrong(table, monkeypatch, env, message):
    from health.heartbeat import HeartbeatTableError
    from supervisor.health_wiring import table_app_from_env as create_app_from_env

    monkeypatch.setenv("STORYWORKER_HEARTBEAT_PATH", table.path)
    monkeypatch.delenv("WORKER_TIMEOUT_SECONDS", raising=False)
    if not env:
        monkeypatch.delenv("STORYWORKER_HEARTBEAT_PATH")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises((SystemExit, HeartbeatTableError)) as info:
        create_app_from_env()
    assert message in str(info.value)


# --- the provider's pause ------------------------------------------------------------


def test_a_paused_provider_shows_in_health_ready_and_metrics(client, table, clock, tmp_path):
    from health.breaker import Breaker

    breaker = Breaker.create(str(tmp_path), clock=clock)
    run_healthy(table, clock)
    app = client(breaker=breaker)
    assert app.get("/health").get_json()["provider"] == {"state": "available"}
    assert app.get("/ready").get_json()["checks"]["provider"]["ok"] is True
    assert "storyworker_provider_paused 0.0" in app.get("/metrics").get_data(as_text=True)

    breaker.trip("Gemini rejected the API key (HTTP 400): key=AIzaSyD-secret-value-123")
    for i in range(2):
        table.update_slot(i, state=WorkerState.PAUSED, job_id=None, now=clock.now)
    health = app.get("/health")
    body = health.get_json()
    assert health.status_code == 200  # the processes are fine; readiness says the rest
    provider = body["provider"]
    assert provider["state"] == "paused" and provider["next_probe_in_seconds"] == 15.0
    assert provider["reason"].startswith("Gemini rejected the API key")
    assert [w["state"] for w in body["workers"]] == ["paused", "paused"]
    assert all(w["paused_reason"] == provider["reason"] for w in body["workers"])
    ready = app.get("/ready")
    check = ready.get_json()["checks"]["provider"]
    assert ready.status_code == 503 and check["ok"] is False
    assert "paused since" in check["detail"] and "rejected the API key" in check["detail"]
    for response in (health, ready):
        assert "AIzaSyD-secret-value-123" not in response.get_data(as_text=True)
    assert "storyworker_provider_paused 1.0" in app.get("/metrics").get_data(as_text=True)


def test_a_cached_failure_is_asked_again_sooner_than_a_success():
    clock = Clock(0.0)
    answers = iter([False, True, False])
    calls: list[float] = []

    def key_check() -> CheckResult:
        calls.append(clock.now)
        return CheckResult(ok=next(answers), detail="key")

    check = CachedCheck(key_check, 300.0, clock=clock, failure_ttl_seconds=10.0)
    assert check().ok is False
    clock.now = 9.0
    assert check().ok is False and calls == [0.0]  # still cached
    clock.now = 10.0
    assert check().ok is True and calls == [0.0, 10.0]  # the fault was mended
    clock.now = 300.0
    assert check().ok is True and len(calls) == 2  # a success keeps its long TTL
