"""The `storyworker` command line: thin commands over the rest of the package.

`service` holds the service's own commands (migrate, run, demo, watch); the
operator's are `admin` (enqueue, health), `jobs`, `status` and `dashboard`; `common` and `term`
are what they share.
"""

from __future__ import annotations

import click

from supervisor.cli import admin, dashboard, jobs, service, status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="storyworker")
def main() -> None:
    """storyworker: writes story chapters with an LLM from a PostgreSQL job queue."""


for command in (
    service.migrate,
    service.run,
    service.demo,
    service.watch,
    admin.enqueue,
    jobs.jobs,
    admin.health,
    status.status,
    dashboard.dashboard,
):
    main.add_command(command)
