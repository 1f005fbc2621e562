"""`storyworker dashboard`: the web dashboard, in the foreground."""

from __future__ import annotations

import sys

import click

from supervisor.cli.common import friendly_errors


@click.command()
@click.option("--host", help="Address to listen on (DASHBOARD_HOST, default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (DASHBOARD_PORT, default 3952).")
@friendly_errors
def dashboard(host: str | None, port: int | None) -> None:
    """The web dashboard: overview, jobs, job, story and workers pages, live; retry
    and cancel with DASHBOARD_TOKEN (read-only without it)."""
    from supervisor import logs
    from supervisor.cli.common import connect
    from supervisor.config import load_settings
    from supervisor.dashboard import require_free_port, require_safe, serve

    settings = load_settings(dashboard_host=host, dashboard_port=port)
    require_safe(settings)
    logs.configure(settings.log_level, settings.log_format)
    with connect("dashboard"):
        pass  # reachable and migrated, or the same one line and exit code as `run`
    require_free_port(settings)
    sys.exit(serve(settings))
