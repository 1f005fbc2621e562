"""Builds the health app with storyworker's readiness checks and queue statistics.

This runs inside the health server's process (a gunicorn worker), never in the
supervisor: the probes open short-lived connections of their own. Operators who run
the health server apart from the supervisor point gunicorn at `app_from_env()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import psycopg
from flask import Flask

from generation import providers
from health.app import HealthConfig, create_app, table_check
from health.breaker import Breaker
from health.checks import CachedCheck, CheckResult
from health.heartbeat import HeartbeatTable
from health.stats import QueueStats
from supervisor.config import Settings, load_settings
from supervisor.db import queue, sql
from supervisor.db.connection import PROBE_CONNECT_TIMEOUT_SECONDS, connect_for
from supervisor.db.migrate import require_migrated
from supervisor.errors import ConfigError
from supervisor.redact import redact

API_KEY_RECHECK_SECONDS = 300.0
#: A failed key or model check is asked again this soon: the fault may be mended.
API_KEY_FAILURE_RECHECK_SECONDS = 10.0
#: Milliseconds any one statement of a probe may take.
PROBE_STATEMENT_TIMEOUT_MS = 2000


def _probe_connection(settings: Settings) -> psycopg.Connection:
    return connect_for(
        settings, "health", connect_timeout=PROBE_CONNECT_TIMEOUT_SECONDS, short_lived=True
    )


def redacted(check: Callable[[], CheckResult]) -> Callable[[], CheckResult]:
    """`check` whose detail, or whose exception's message, has every secret masked
    (supervisor.redact: the DSNs and keys of this process included) before /ready
    shows it."""

    def run() -> CheckResult:
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
            return CheckResult(ok=False, detail=redact(f"{type(exc).__name__}: {exc}"))
        return CheckResult(result.ok, redact(result.detail), result.latency_seconds)

    return run


def database_check(settings: Settings) -> Callable[[], CheckResult]:
    def check() -> CheckResult:
        with _probe_connection(settings) as conn:
            sql.one(conn, "probe_timeout", {"timeout": str(PROBE_STATEMENT_TIMEOUT_MS)})
            require_migrated(conn)
        return CheckResult(ok=True, detail="reachable, migrations applied")

    return check


def api_key_check(settings: Settings) -> Callable[[], CheckResult]:
    if not providers.entry(settings.provider).needs_api_key:
        detail = f"{settings.provider} provider needs no key"
        return lambda: CheckResult(ok=True, detail=detail)
    from supervisor.worker.providers import build_provider

    provider = build_provider(settings)

    def check() -> CheckResult:
        provider.check()
        return CheckResult(ok=True, detail=f"{describe_models(settings)} available")

    return CachedCheck(
        redacted(check),
        ttl_seconds=API_KEY_RECHECK_SECONDS,
        failure_ttl_seconds=API_KEY_FAILURE_RECHECK_SECONDS,
    )


def describe_models(settings: Settings) -> str:
    """The models of every provider in use, for /ready ("gemini: a, b; openai: c")."""
    return "; ".join(
        f"{name}: {', '.join(models(settings, name)) or 'no model to check'}"
        for name in settings.providers_in_use
    )


def models(settings: Settings, provider: str) -> tuple[str, ...]:
    """The models `provider` is configured with, as its registry entry names them."""
    return providers.entry(provider).models(settings.options(provider))


def listener_check(table: HeartbeatTable) -> Callable[[], CheckResult]:
    def check() -> CheckResult:
        modes = sorted({w.pickup for w in table.workers() if w.pickup})
        if not modes:
            return CheckResult(ok=True, detail="no worker connected yet")
        return CheckResult(ok=True, detail=" and ".join(modes))

    return check


def queue_stats(settings: Settings) -> Callable[[], QueueStats]:
    def stats() -> QueueStats:
        with _probe_connection(settings) as conn:
            return queue.stats(conn)

    return stats


def build_health_app(
    settings: Settings,
    table_path: str,
    metrics_dir: str | None,
    breaker_path: str | None = None,
) -> Flask:
    """The health app over the heartbeat table at `table_path` (and the provider
    breaker at `breaker_path`, when given)."""
    table = HeartbeatTable.open(table_path)
    return create_app(
        HealthConfig(
            table=table,
            worker_timeout_seconds=settings.worker_timeout_seconds,
            readiness_checks={
                "database": redacted(database_check(settings)),
                "api_key": api_key_check(settings),
                "listener": listener_check(table),
            },
            queue_stats=queue_stats(settings),
            multiprocess_dir=metrics_dir,
            breaker=Breaker(breaker_path) if breaker_path else None,
        )
    )


def _heartbeat_path() -> str:
    path = os.environ.get("STORYWORKER_HEARTBEAT_PATH")
    if not path:
        raise SystemExit("STORYWORKER_HEARTBEAT_PATH is not set (the supervisor logs it at start)")
    return path


def app_from_env() -> Flask:
    """For `gunicorn 'supervisor.health_wiring:app_from_env()'` run apart from the
    supervisor: the table's path comes from STORYWORKER_HEARTBEAT_PATH."""
    return build_health_app(
        load_settings(),
        _heartbeat_path(),
        os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
        os.environ.get("STORYWORKER_BREAKER_PATH"),
    )


def table_app_from_env() -> Flask:
    """For `gunicorn 'supervisor.health_wiring:table_app_from_env()'`: the health app
    over the heartbeat table alone (opened read-only), with no database, key or queue
    checks; its only readiness check is that the table is still there and readable.
    WORKER_TIMEOUT_SECONDS is read as `storyworker run` reads it (`load_settings`)."""
    path = _heartbeat_path()
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    table = HeartbeatTable.open(path, readonly=True)
    return create_app(
        HealthConfig(
            table=table,
            worker_timeout_seconds=settings.worker_timeout_seconds,
            readiness_checks={"heartbeat_table": table_check(table)},
            multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
        )
    )
