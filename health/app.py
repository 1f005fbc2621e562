"""The health app: /health, /ready and /metrics, built by `create_app(config)`.

/health answers from shared memory alone, so it stays fast and truthful when the
database is down. No response carries secrets, prompts or story text.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from health.checks import CheckResult, run_check
from health.heartbeat import HeartbeatTable, SupervisorState, WorkerSnapshot, WorkerState
from health.metrics import HeartbeatCollector, QueueStats, build_registry


@dataclass(frozen=True)
class HealthConfig:
    table: HeartbeatTable
    worker_timeout_seconds: float
    supervisor_timeout_seconds: float = 10.0
    readiness_checks: Mapping[str, Callable[[], CheckResult]] = field(default_factory=dict)
    queue_stats: Callable[[], QueueStats] | None = None
    multiprocess_dir: str | None = None
    clock: Callable[[], float] = time.monotonic


def worker_problem(w: WorkerSnapshot, now: float, timeout: float) -> str | None:
    """What is wrong with one worker slot, or None when it is fine."""
    if w.state == WorkerState.DEAD:
        return f"worker {w.index} is dead (waiting to be replaced)"
    if w.state == WorkerState.EMPTY:
        return f"worker {w.index} is not running"
    age = w.age(now)
    if age > timeout:
        return f"worker {w.index} (pid {w.pid}) heartbeat is {age:.1f}s old"
    return None


def health_report(config: HealthConfig) -> tuple[int, dict[str, Any]]:
    """The /health status code and body, from the heartbeat table only."""
    now = config.clock()
    sup = config.table.supervisor()
    workers = config.table.workers()
    problems = []
    if sup.age(now) > config.supervisor_timeout_seconds:
        problems.append(f"supervisor heartbeat is {sup.age(now):.1f}s old")
    problems += [p for w in workers if (p := worker_problem(w, now, config.worker_timeout_seconds))]
    if sup.state in (SupervisorState.DRAINING, SupervisorState.STOPPED):
        status = "draining"
    else:
        status = "unhealthy" if problems else "healthy"
    body = {
        "status": status,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "uptime": round(max(0.0, time.time() - sup.started_at), 3),
        "supervisor": {
            "pid": sup.pid,
            "state": sup.state.label,
            "heartbeat_age_seconds": round(sup.age(now), 3),
        },
        "workers": [_worker_json(w, now) for w in workers],
        "problems": problems,
    }
    return (200 if status == "healthy" else 503), body


def _worker_json(w: WorkerSnapshot, now: float) -> dict[str, Any]:
    return {
        "index": w.index,
        "pid": w.pid,
        "state": w.state.label,
        "job_id": w.job_id,
        "progress": w.progress,
        "heartbeat_age_seconds": round(w.age(now), 3),
        "jobs_completed": w.jobs_completed,
        "jobs_failed": w.jobs_failed,
        "restarts": w.restarts,
        "rss_bytes": w.rss_bytes,
    }


def readiness_report(config: HealthConfig) -> tuple[int, dict[str, Any]]:
    results = {name: run_check(check) for name, check in config.readiness_checks.items()}
    ok = all(r.ok for r in results.values())
    checks = {
        n: {"ok": r.ok, "detail": r.detail, "latency_seconds": r.latency_seconds}
        for n, r in results.items()
    }
    return (200 if ok else 503), {"status": "ready" if ok else "not_ready", "checks": checks}


def create_app(config: HealthConfig) -> Flask:
    """A Flask app serving the health endpoints for `config`."""
    app = Flask("storyworker.health")
    registry = build_registry(
        HeartbeatCollector(config.table, config.queue_stats), config.multiprocess_dir
    )

    @app.get("/health")
    def health() -> tuple[Response, int]:
        status, body = health_report(config)
        return jsonify(body), status

    @app.get("/ready")
    def ready() -> tuple[Response, int]:
        status, body = readiness_report(config)
        return jsonify(body), status

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        # Generic text only: nothing from the request is echoed back.
        response = jsonify({"error": (error.name or "error").lower()})
        if error.code == 405:
            response.headers["Allow"] = "GET, HEAD"
        return response, error.code or 500

    return app


def create_app_from_env() -> Flask:
    """For `gunicorn 'health.app:create_app_from_env()'` with no supervisor code: the
    heartbeat table from STORYWORKER_HEARTBEAT_PATH, no readiness checks beyond it.
    `supervisor.health_wiring:app_from_env()` adds the database and API checks."""
    path = os.environ.get("STORYWORKER_HEARTBEAT_PATH", "")
    table = HeartbeatTable.open(path)
    timeout = float(os.environ.get("WORKER_TIMEOUT_SECONDS", "300"))
    readable = {"heartbeat_table": lambda: CheckResult(ok=True, detail=f"reading {path}")}
    return create_app(
        HealthConfig(
            table=table,
            worker_timeout_seconds=timeout,
            readiness_checks=readable,
            multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
        )
    )
