"""`storyworker dashboard`: the checks before it listens, and gunicorn serving it.

It refuses (ConfigError, exit 78) to listen anywhere but loopback without a token,
and a token too short to guard anything. Under gunicorn, each worker process builds
the app with its own connection pool, after the fork.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

from flask import Flask

from supervisor.config import Settings
from supervisor.dashboard.app import DashboardConfig, create_app
from supervisor.dashboard.auth import MIN_TOKEN_LENGTH
from supervisor.errors import ConfigError

#: Threads of the one gunicorn worker: pages refresh themselves, so a few browsers
#: poll at once; each request holds a pooled connection only while it runs.
THREADS = 8
STATEMENT_TIMEOUT_MS = 10_000


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def require_safe(settings: Settings) -> None:
    """Refuse a public bind without credentials, and a weak token (one line each)."""
    host, token = settings.dashboard_host, settings.dashboard_token
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"DASHBOARD_TOKEN must be at least {MIN_TOKEN_LENGTH} characters long"
            " (e.g. `openssl rand -hex 24`)"
        )
    if not token and not is_loopback(host):
        raise ConfigError(
            f"DASHBOARD_HOST {host or '(all addresses)'} is not a loopback address and"
            " DASHBOARD_TOKEN is not set: refusing to serve the dashboard publicly"
            " without credentials (set DASHBOARD_TOKEN, or bind 127.0.0.1)"
        )


def require_free_port(settings: Settings) -> None:
    """A taken port is the operator's to fix (78), not a server retrying forever."""
    host, port = settings.dashboard_host, settings.dashboard_port
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ConfigError(
                f"DASHBOARD_PORT {port} on {host} is not free ({exc.strerror});"
                " stop what holds it or set DASHBOARD_PORT"
            ) from None


def app_from_settings(settings: Settings) -> Flask:
    """The app over a pool of this process's own connections."""
    from supervisor.db import dashboard
    from supervisor.db.connection import pool_for

    pool = pool_for(
        settings,
        "dashboard",
        max_size=THREADS,
        configure=lambda conn: dashboard.configure(conn, STATEMENT_TIMEOUT_MS),
    )
    return create_app(DashboardConfig(connection=pool.connection, token=settings.dashboard_token))


def announcer(settings: Settings) -> Any:
    """gunicorn's `when_ready`: one line saying where it listens (with port 0, only
    gunicorn knows) and whether actions are possible."""
    mode = "actions need DASHBOARD_TOKEN" if settings.dashboard_token else "read-only"

    def when_ready(server: Any) -> None:
        host, port = server.LISTENERS[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"storyworker: dashboard on http://{shown}:{port}/ ({mode})", file=sys.stderr)
        sys.stderr.flush()

    return when_ready


def serve(settings: Settings) -> int:
    """Serve the dashboard in the foreground until TERM or INT; gunicorn's exit code."""
    from health.server import HealthServer, server_options
    from supervisor import logs

    options = server_options(
        settings.dashboard_host,
        settings.dashboard_port,
        settings.log_level.lower(),
        logs.formatter_path(settings.log_format),
    )
    options.update(
        worker_class="gthread",
        threads=THREADS,
        proc_name="storyworker: dashboard",
        when_ready=announcer(settings),
    )
    try:
        HealthServer(lambda: app_from_settings(settings), options).run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0
