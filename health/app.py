"""The health app: /health, /ready and /metrics, built by `create_app(config)`.

/health answers from shared memory alone, so it stays fast and truthful when the
database is down. It is 200 only while the service is serving: while the supervisor
drains or has stopped it says "draining" with 503, so a load balancer or orchestrator
stops counting on this host before its workers are gone. No response carries secrets,
prompts or story text; error responses never echo the request.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from health.breaker import Breaker, BreakerState
from health.checks import CheckResult, run_check, safe_detail
from health.heartbeat import HeartbeatTable, SupervisorState, WorkerSnapshot, WorkerState
from health.metrics import HeartbeatCollector, QueueStats, build_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthConfig:
    """Everything the app depends on; nothing reaches it any other way."""

    table: HeartbeatTable
    worker_timeout_seconds: float
    supervisor_timeout_seconds: float = 10.0
    readiness_checks: Mapping[str, Callable[[], CheckResult]] = field(default_factory=dict)
    queue_stats: Callable[[], QueueStats] | None = None
    multiprocess_dir: str | None = None
    #: The provider circuit breaker the workers share; None: no provider section.
    breaker: Breaker | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.worker_timeout_seconds <= 0 or self.supervisor_timeout_seconds <= 0:
            raise ValueError("health timeouts must be positive")


def _iso(wall: float) -> str | None:
    if not wall:
        return None
    return (
        datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def worker_problem(w: WorkerSnapshot, now: float, timeout: float) -> str | None:
    """What is wrong with one expected worker slot, or None when it is fine.

    A slot is fine when a process is in it (STARTING, IDLE, BUSY or STOPPING) and its
    heartbeat is younger than `timeout`. A STARTING worker's heartbeat is the one the
    supervisor stamped at spawn, so booting gets the same allowance the supervisor
    gives before it kills a worker as stuck: /health and the supervisor agree.
    """
    if w.state == WorkerState.DEAD:
        return f"worker {w.index} is dead"
    if w.state == WorkerState.EMPTY:
        return f"worker {w.index} is not running"
    age = w.age(now)
    if age >= timeout:
        return f"worker {w.index} (pid {w.pid}) heartbeat is {age:.1f}s old"
    return None


def health_report(config: HealthConfig) -> tuple[int, dict[str, Any]]:
    """The /health status code and body, from the heartbeat table only.

    200 "healthy" when the supervisor's heartbeat is younger than
    supervisor_timeout_seconds and every expected worker is fine (worker_problem);
    503 "unhealthy" otherwise; 503 "draining" whenever the supervisor is draining or
    stopped. `problems` names each thing that is wrong.
    """
    now = config.clock()
    sup = config.table.supervisor()
    workers = config.table.workers()
    problems = []
    if sup.age(now) >= config.supervisor_timeout_seconds:
        problems.append(f"supervisor heartbeat is stale ({sup.age(now):.1f}s old)")
    problems += [p for w in workers if (p := worker_problem(w, now, config.worker_timeout_seconds))]
    if sup.state in (SupervisorState.DRAINING, SupervisorState.STOPPED):
        status = "draining"
    else:
        status = "unhealthy" if problems else "healthy"
    body = {
        "status": status,
        "timestamp": _iso(time.time()),
        "uptime": round(max(0.0, time.time() - sup.started_at), 3),
        "supervisor": {
            "pid": sup.pid,
            "state": sup.state.label,
            "heartbeat_age_seconds": round(sup.age(now), 3),
            "expected_workers": sup.expected_workers,
        },
        "workers": [_worker_json(w, now) for w in workers],
        "problems": problems,
    }
    if config.breaker is not None:
        provider = body["provider"] = provider_json(config.breaker.state(), now)
        for worker in body["workers"]:
            if worker["state"] == WorkerState.PAUSED.label and "reason" in provider:
                worker["paused_reason"] = provider["reason"]
    return (200 if status == "healthy" else 503), body


def provider_json(state: BreakerState, now: float) -> dict[str, Any]:
    """The provider's part of /health: paused or not, why, since when, next probe."""
    if not state.open:
        return {"state": "available"}
    return {
        "state": "paused",
        "reason": safe_detail(state.reason),
        "since": _iso(state.opened_at),
        "next_probe_in_seconds": round(max(0.0, state.next_probe - now), 1),
        "failed_probes": state.probes,
    }


def provider_check(breaker: Breaker) -> Callable[[], CheckResult]:
    """Ready while the provider is not paused; the detail says why it is."""

    def check() -> CheckResult:
        state = breaker.state()
        if state.open:
            return CheckResult(ok=False, detail=f"paused since {_iso(state.opened_at)}: "
                               f"{state.reason}")  # fmt: skip
        return CheckResult(ok=True, detail="available")

    return check


def _worker_json(w: WorkerSnapshot, now: float) -> dict[str, Any]:
    return {
        "index": w.index,
        "pid": w.pid,
        "state": w.state.label,
        "job_id": w.job_id,
        "progress": w.progress,
        # None: the slot has never had a heartbeat.
        "heartbeat_age_seconds": round(w.age(now), 3) if w.heartbeat else None,
        "jobs_completed": w.jobs_completed,
        "jobs_failed": w.jobs_failed,
        "restarts": w.restarts,
        "rss_bytes": w.rss_bytes,
    }


def readiness_report(config: HealthConfig) -> tuple[int, dict[str, Any]]:
    """Runs every readiness check (each through run_check, so none raises): 200
    "ready" when all pass, else 503 "not_ready"; each check's result by name."""
    checks_by_name = dict(config.readiness_checks)
    if config.breaker is not None:
        checks_by_name["provider"] = provider_check(config.breaker)
    results = {name: run_check(check) for name, check in checks_by_name.items()}
    ok = all(r.ok for r in results.values())
    checks = {
        name: {"ok": r.ok, "detail": r.detail, "latency_seconds": round(r.latency_seconds, 6)}
        for name, r in results.items()
    }
    return (200 if ok else 503), {"status": "ready" if ok else "not_ready", "checks": checks}


def create_app(config: HealthConfig) -> Flask:
    """A fresh Flask app serving /health, /ready and /metrics (GET and HEAD) for
    `config`; any other path is a JSON 404, any other method a JSON 405."""
    app = Flask("storyworker.health")
    registry = build_registry(
        HeartbeatCollector(
            config.table, config.queue_stats, clock=config.clock, breaker=config.breaker
        ),
        config.multiprocess_dir,
    )

    def get(rule: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        # No automatic OPTIONS: every method but GET and HEAD gets a 405.
        return app.route(rule, methods=["GET"], provide_automatic_options=False)

    @get("/health")
    def health() -> tuple[Response, int]:
        status, body = health_report(config)
        return jsonify(body), status

    @get("/ready")
    def ready() -> tuple[Response, int]:
        status, body = readiness_report(config)
        return jsonify(body), status

    @get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        # A fixed phrase only: nothing from the request is echoed back. Unhandled
        # exceptions arrive here as a 500, after Flask has logged the traceback.
        response = jsonify({"error": (error.name or "error").lower()})
        if error.code == 405:
            response.headers["Allow"] = "GET, HEAD"
        return response, error.code or 500

    @app.after_request
    def no_store(response: Response) -> Response:
        # Probes must see the present, never a proxy's copy.
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def table_check(table: HeartbeatTable) -> Callable[[], CheckResult]:
    """Ready while the table's file still exists (the supervisor removes it when it
    exits, and a new supervisor makes a new one) and its header reads."""

    def check() -> CheckResult:
        if not os.path.exists(table.path):
            return CheckResult(ok=False, detail=f"{table.path} is gone (supervisor exited?)")
        sup = table.supervisor()
        return CheckResult(ok=True, detail=f"supervisor pid {sup.pid} is {sup.state.label}")

    return check
