"""`storyworker run`: validate, check the database, then supervise workers and the
health server until told to stop."""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from setproctitle import setproctitle

from generation import providers
from supervisor import exitcodes, logs
from supervisor.arbiter.procs import SignalQueue
from supervisor.config import MAX_CONCURRENCY, Settings, load_settings, require_api_key
from supervisor.db.startup import wait_until_ready
from supervisor.errors import ConfigError
from supervisor.logs import fields
from supervisor.signals import release_early_signals, unblock_signals
from supervisor.worker import live

log = logging.getLogger(__name__)

#: Runtime directories are named PREFIX + the supervisor's pid + "-" + a random part.
RUNTIME_PREFIX = "storyworker-"
#: The file a live supervisor keeps locked in its runtime directory.
RUNTIME_LOCK = ".lock"
_held_locks: list[int] = []


def preflight(overrides: dict[str, Any], signals: SignalQueue) -> Settings | None:
    """Everything that must hold before the first fork; raises on the first problem.
    None when TERM or INT arrived while it waited for the database."""
    settings = load_settings(**overrides)
    settings.require_database()
    if providers.entry(settings.provider).needs_api_key:
        require_api_key(settings)
    logs.configure(settings.log_level, settings.log_format)
    if not wait_until_ready(settings, lambda seconds: stop_requested(signals, seconds)):
        return None
    return live.resolved(settings)


#: Signals that end a supervisor still waiting for its database (QUIT is not held).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_requested(signals: SignalQueue, seconds: float) -> bool:
    """Sleep up to `seconds`; True when TERM or INT arrived meanwhile. Any other
    signal stays queued for the loop (a HUP, a TTIN)."""
    signals.wait(seconds)
    received = signals.drain()
    signals.requeue([sig for sig in received if sig not in STOP_SIGNALS])
    return any(sig in STOP_SIGNALS for sig in received)


def require_free_port(settings: Settings) -> None:
    """A health port already taken is the operator's to fix: say so once (78) instead
    of respawning a health server that can never listen."""
    if settings.port == 0:
        return
    family = socket.AF_INET6 if ":" in settings.health_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.health_host, settings.port))
        except OSError as exc:
            raise ConfigError(
                f"PORT {settings.port} on {settings.health_host or '0.0.0.0'} is not free for "
                f"the health server ({exc.strerror}); stop what holds it or set PORT"
            ) from None


def runtime_directory() -> Path:
    """systemd's RuntimeDirectory when given, else a private temporary directory.

    This process holds an flock on the directory's lock file for as long as it lives,
    so the next supervisor can tell (and remove) what one that was killed (kill -9,
    OOM) left behind. A lock, not a pid: pids mean nothing across PID namespaces (a
    container sharing /tmp) and get reused."""
    from health.heartbeat import systemd_runtime_directory

    base = Path(systemd_runtime_directory() or tempfile.gettempdir())
    sweep_runtime_directories(base)
    # Made under a name no sweeper looks at, and renamed only once it is locked.
    making = Path(tempfile.mkdtemp(prefix=".storyworker-new-", dir=base))
    fd = os.open(making / RUNTIME_LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held_locks.append(fd)  # held until this process ends
    path = base / f"{RUNTIME_PREFIX}{os.getpid()}-{making.name.rsplit('-', 1)[1]}"
    making.rename(path)
    return path


def sweep_runtime_directories(base: Path) -> list[Path]:
    """Remove the runtime directories under `base` whose supervisor is gone: their
    lock file is no longer held by anyone."""
    removed = []
    for path in base.glob(f"{RUNTIME_PREFIX}*-*"):
        lock = path / RUNTIME_LOCK
        try:
            if path.stat().st_uid != os.geteuid():
                continue
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # not one of ours, or it is being made right now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its supervisor (or a child of it) is alive
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def run(overrides: dict[str, Any]) -> int:
    """Run the supervisor in the foreground; return its exit code."""
    # Signals are queued from the very start: a HUP or TERM during the checks below
    # is handled by the loop, not by the default action (death) or lost.
    signals = SignalQueue()
    signals.install()
    release_early_signals()
    settings = preflight(overrides, signals)
    if settings is None:
        log.info("stopped while waiting for the database")
        return exitcodes.OK
    require_free_port(settings)
    runtime = runtime_directory()
    metrics_dir = runtime / "metrics"
    metrics_dir.mkdir()
    # prometheus_client picks multiprocess mode when first imported: set this before
    # anything imports supervisor.metrics.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from health.breaker import PROBE_MAX_SECONDS, Breaker
    from health.heartbeat import HeartbeatTable
    from supervisor.arbiter.leases import Maintenance
    from supervisor.arbiter.listener import for_host
    from supervisor.arbiter.loop import Arbiter
    from supervisor.arbiter.registration import Registration
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
    wake, listener = for_host(lambda: current["settings"])

    def reload_settings() -> Settings:
        current["settings"] = live.resolved(load_settings(**overrides))
        return current["settings"]

    address_file = str(runtime / "health.address")

    def health_main() -> NoReturn:
        shared = SharedFiles(table.path, breaker.path, str(metrics_dir), address_file)
        _health_main(current["settings"], shared, supervisor_pid)

    maintenance = Maintenance(
        lambda: current["settings"], Registration(table, breaker, lambda: current["settings"])
    )
    arbiter = Arbiter(
        settings=settings,
        table=table,
        maintenance=maintenance,
        reload_settings=reload_settings,
        worker_main=functools.partial(worker_main, breaker=breaker, wake=wake),
        health_main=health_main,
        health_address_file=address_file,
        notifier=notifier,
        signals=signals,
        listener=listener,
    )
    log.info("shared files", extra=fields(path=table.path, breaker=breaker.path))
    try:
        return arbiter.run()
    finally:
        maintenance.leave_registry()
        if wake is not None:
            wake.close()
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
    #: Where the health server writes the address it bound.
    health_address: str


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
        address_file=shared.health_address,
    )
