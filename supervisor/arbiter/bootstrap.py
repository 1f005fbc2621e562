"""`storyworker run`: validate, check the database, then supervise workers and the
health server until told to stop."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from setproctitle import setproctitle

from generation import providers
from supervisor import logs
from supervisor.arbiter.procs import unblock_signals
from supervisor.config import MAX_CONCURRENCY, Settings, load_settings, require_api_key
from supervisor.db.connection import connect_for
from supervisor.db.migrate import require_migrated
from supervisor.logs import fields

log = logging.getLogger("supervisor.arbiter.loop")



def preflight(overrides: dict[str, Any]) -> Settings:
    """Everything that must hold before the first fork; raises on the first problem."""
    settings = load_settings(**overrides)
    settings.require_database()
    if providers.entry(settings.provider).needs_api_key:
        require_api_key(settings)
    logs.configure(settings.log_level, settings.log_format)
    with connect_for(settings, "run") as conn:
        require_migrated(conn)
    return settings


def runtime_directory() -> Path:
    """systemd's RuntimeDirectory when given, else a private temporary directory."""
    from health.heartbeat import systemd_runtime_directory

    if base := systemd_runtime_directory():
        return Path(tempfile.mkdtemp(prefix="run-", dir=base))
    return Path(tempfile.mkdtemp(prefix="storyworker-"))


def run(overrides: dict[str, Any]) -> int:
    """Run the supervisor in the foreground; return its exit code."""
    settings = preflight(overrides)
    runtime = runtime_directory()
    metrics_dir = runtime / "metrics"
    metrics_dir.mkdir()
    # prometheus_client picks multiprocess mode when first imported: set this before
    # anything imports supervisor.metrics.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from health.breaker import PROBE_MAX_SECONDS, Breaker
    from health.heartbeat import HeartbeatTable
    from supervisor.arbiter.leases import Maintenance
    from supervisor.arbiter.loop import Arbiter
    from supervisor.arbiter.systemd import Notifier
    from supervisor.worker.process import worker_main

    notifier = Notifier.from_environment()
    table = HeartbeatTable.create(MAX_CONCURRENCY, directory=str(runtime))
    breaker = Breaker.create(
        str(runtime),
        probe_base_seconds=settings.provider_probe_seconds,
        probe_max_seconds=max(PROBE_MAX_SECONDS, settings.provider_probe_seconds),
    )
    setproctitle("storyworker: supervisor")
    current = {"settings": settings}
    supervisor_pid = os.getpid()  # recorded before any fork: PID 1 in a container

    def reload_settings() -> Settings:
        current["settings"] = load_settings(**overrides)
        return current["settings"]

    def health_main() -> NoReturn:
        shared = SharedFiles(table.path, breaker.path, str(metrics_dir))
        _health_main(current["settings"], shared, supervisor_pid)

    arbiter = Arbiter(
        settings=settings,
        table=table,
        maintenance=Maintenance(lambda: current["settings"]),
        reload_settings=reload_settings,
        worker_main=functools.partial(worker_main, breaker=breaker),
        health_main=health_main,
        notifier=notifier,
    )
    log.info("shared files", extra=fields(path=table.path, breaker=breaker.path))
    try:
        return arbiter.run()
    finally:
        for shared_file in (table, breaker):
            shared_file.close()
            shared_file.unlink()
        shutil.rmtree(runtime, ignore_errors=True)


@dataclass(frozen=True)
class SharedFiles:
    """What the supervisor makes before it forks, by path, for the health server."""

    heartbeat_table: str
    breaker: str
    metrics_dir: str


def _health_main(settings: Settings, shared: SharedFiles, supervisor_pid: int) -> NoReturn:
    # Its own process group: a terminal's Ctrl-C reaches the supervisor, which stops
    # the health server last, on purpose.
    os.setpgid(0, 0)
    setproctitle("storyworker: health")
    # Until gunicorn installs its handlers, TERM keeps its default: end the process.
    unblock_signals()
    from health.server import run_health_server
    from supervisor.arbiter.health_wiring import build_health_app

    run_health_server(
        lambda: build_health_app(
            settings, shared.heartbeat_table, shared.metrics_dir, shared.breaker
        ),
        settings.health_host,
        settings.port,
        log_level=settings.log_level.lower(),
        formatter=logs.formatter_path(settings.log_format),
        parent_pid=supervisor_pid,
    )
