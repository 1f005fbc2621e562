"""Runs the health app under gunicorn, in a child of the supervisor.

One sync worker is plenty for probes and scrapes; the worker heartbeat file lives on
tmpfs so a slow disk cannot make gunicorn think its worker hung. No pidfile and no
control socket: the supervisor starts and stops it, and it dies with the supervisor.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any, NoReturn

from flask import Flask
from gunicorn.app.base import BaseApplication

PR_SET_PDEATHSIG = 1


class HealthServer(BaseApplication):
    def __init__(self, app_factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = app_factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            # Settings that an older gunicorn lacks are skipped, not fatal.
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        # Called in gunicorn's worker after it forks (no preload): the app's
        # connections and table mapping are the worker's own.
        return self._factory()


def log_config(formatter: str, level: str) -> dict[str, Any]:
    """gunicorn's own lines through the caller's formatter (e.g. JSON lines)."""
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    logger = {"level": level.upper(), "handlers": ["stderr"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": {"()": formatter}},
        "handlers": {"stderr": handler, "console": handler, "error_console": handler},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {"gunicorn.error": logger, "gunicorn.access": logger},
    }


def server_options(
    host: str, port: int, log_level: str = "info", formatter: str | None = None
) -> dict[str, Any]:
    level = "warning" if log_level == "info" else log_level
    return {
        "logconfig_dict": log_config(formatter, level) if formatter else None,
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": 1,
        "worker_class": "sync",
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
        "pidfile": None,
        "control_socket_disable": True,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": level,
        "timeout": 30,
        "graceful_timeout": 5,
        "keepalive": 2,
        "proc_name": "storyworker: health",
    }


def run_health_server(
    app_factory: Callable[[], Flask],
    host: str,
    port: int,
    *,
    log_level: str = "info",
    formatter: str | None = None,
) -> NoReturn:
    """Serve until SIGTERM (or the parent's death); meant for a forked child."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = os.getppid()
    if parent == 1:  # orphaned before prctl took effect
        os._exit(0)
    sys.argv = [sys.argv[0]]  # gunicorn parses argv; ours are not its flags
    HealthServer(app_factory, server_options(host, port, log_level, formatter)).run()
    os._exit(0)
