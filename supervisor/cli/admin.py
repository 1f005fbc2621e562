"""Admin commands: enqueue, and health (the running health server's answer). The
`jobs` commands are in supervisor.cli.jobs, `status` in supervisor.cli.status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import click

from supervisor import exitcodes
from supervisor.cli.common import connect, fail, friendly_errors
from supervisor.cli.term import Term
from supervisor.config import load_settings
from supervisor.db import queue


def read_preferences(value: str | None) -> Any:
    """--prefs: inline JSON, or @path to a JSON file; validated like the worker does."""
    if value is None:
        return {}
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text("utf-8")
        except OSError as exc:
            fail(f"cannot read preferences file {value[1:]}: {exc.strerror}", exitcodes.USAGE)
    try:
        prefs = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        fail(f"--prefs is not valid JSON: {exc.msg} at {where}", exitcodes.USAGE)
    from generation.errors import InvalidPreferencesError
    from generation.story import parse_preferences

    try:
        parse_preferences(prefs)
    except InvalidPreferencesError as exc:
        fail(str(exc), exitcodes.USAGE)
    return prefs


@click.command()
@click.option("--chapter", "chapter_id", type=click.UUID, required=True, help="Chapter to write.")
@click.option("--prefs", help="user_preferences as JSON, or @file.json.")
@friendly_errors
def enqueue(chapter_id: UUID, prefs: str | None) -> None:
    """Queue a job for an existing chapter and print the job's id."""
    preferences = read_preferences(prefs)
    with connect("enqueue") as conn:
        click.echo(queue.enqueue(conn, chapter_id, preferences))


@click.command()
@click.option("--url", help="Health endpoint (default: http://127.0.0.1:$PORT/health).")
@click.option("--timeout", type=float, default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The raw JSON answer (also when piped).")
@friendly_errors
def health(url: str | None, timeout: float, as_json: bool) -> None:
    """Ask the running health server: a table on a terminal, its JSON answer
    otherwise (or with --json); exit 0 only when healthy."""
    from health.client import HealthClientError, fetch_health

    url = url or f"http://127.0.0.1:{load_settings().port}/health"
    try:
        status, body = fetch_health(url, timeout=timeout)
    except HealthClientError as exc:
        fail(str(exc), exitcodes.FAILURE)
    term = Term.detect()
    if as_json or not term.live:
        click.echo(json.dumps(body, indent=2))
    else:
        from supervisor.cli.status import health_lines

        lines = health_lines(body)
        # The column header is not painted ("failed" there is a column's name).
        click.echo("\n".join(term.fit(x) if x.startswith(" # ") else term.show(x) for x in lines))
    raise SystemExit(exitcodes.OK if status == 200 else exitcodes.FAILURE)
