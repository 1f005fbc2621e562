"""Runs the health app under gunicorn, in a child of the supervisor.

One sync worker is plenty for probes and scrapes; the worker heartbeat file lives on
tmpfs so a slow disk cannot make gunicorn think its worker hung. No pidfile and no
control socket: the supervisor starts and stops it, and it dies with the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from flask import Flask
from gunicorn.app.base import BaseApplication

from health.lifecycle import die_with_parent


def _worker_post_fork(arbiter: Any, worker: Any) -> None:
    # gunicorn's worker notices a dead master only on its next loop pass (up to
    # timeout/2); with this it goes at once, even if the master was SIGKILLed.
    die_with_parent()
    if os.getppid() != arbiter.pid:
        os._exit(0)


class HealthServer(BaseApplication):
    """gunicorn serving the app that `app_factory` builds, with `options` (gunicorn
    settings by name; see server_options)."""

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


def announce_address(path: str) -> Callable[[Any], None]:
    """A gunicorn `when_ready` hook that writes the address actually bound ("HOST
    PORT") to `path`, atomically: with PORT=0 only the kernel knows the port, and the
    supervisor probes what was bound, not what was asked for."""

    def when_ready(server: Any) -> None:
        host, port = server.LISTENERS[0].getsockname()[:2]
        partial = f"{path}.partial"
        with open(partial, "w", encoding="ascii") as out:
            out.write(f"{host} {port}\n")
        os.replace(partial, path)

    return when_ready


def server_options(
    host: str,
    port: int,
    log_level: str = "info",
    formatter: str | None = None,
    address_file: str | None = None,
) -> dict[str, Any]:
    """gunicorn settings for the health server: one sync worker on `host`:`port`, its
    heartbeat file on tmpfs, no pidfile, no control socket, no access log, errors on
    stderr (through `formatter`, a logging.Formatter's dotted path, when given). At
    "info" gunicorn itself logs at "warning": its info lines are start-up chatter.
    With `address_file`, the bound address is written there once it listens."""
    level = "warning" if log_level == "info" else log_level
    return {
        "when_ready": announce_address(address_file) if address_file else None,
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
        "post_fork": _worker_post_fork,
    }


def orphaned(parent_pid: int) -> bool:
    """Whether the process that forked us is gone: our parent is no longer `parent_pid`
    (we were re-parented to init or a subreaper). Parent pid 1 alone proves nothing: a
    supervisor that is PID 1 (a container's command) is a live parent."""
    return os.getppid() != parent_pid


def run_health_server(
    app_factory: Callable[[], Flask],
    host: str,
    port: int,
    *,
    log_level: str = "info",
    formatter: str | None = None,
    parent_pid: int | None = None,
    address_file: str | None = None,
) -> NoReturn:
    """Serve until SIGTERM (or the parent's death); meant for a forked child. It never
    returns: the process exits with gunicorn's exit code.

    `parent_pid` is the pid of the process that forked this one, recorded by that
    process before the fork; it exits at once if that process is already gone. Without
    it, the parent is taken to be this process's parent when called, so call it right
    after the fork (a parent that died even earlier is then not noticed)."""
    parent = os.getppid() if parent_pid is None else parent_pid
    die_with_parent()
    if orphaned(parent):  # the parent died before prctl took effect
        os._exit(0)
    sys.argv = [sys.argv[0]]  # gunicorn parses argv; ours are not its flags
    code = 1
    try:
        options = server_options(host, port, log_level, formatter, address_file)
        HealthServer(app_factory, options).run()
        code = 0
    except SystemExit as exc:
        # gunicorn leaves by sys.exit, in its master and in the worker it forks alike;
        # neither may unwind into the caller's stack (a forked copy of the supervisor's).
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:  # noqa: BLE001 - reported here: nothing may return to the caller
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
