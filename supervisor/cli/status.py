"""`storyworker status`: the whole system at a glance, from the database: the queue,
the last hour, the shared rate limiters, and every supervisor on every host with its
workers (the process registry, supervisor.db.registry). Also the table that
`storyworker health` prints on a terminal."""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import datetime
from typing import Any

import click
import psycopg

from supervisor import exitcodes
from supervisor.cli.common import connect, friendly_errors
from supervisor.cli.term import Term, age
from supervisor.db import queue, registry
from supervisor.db.progress import bar

WATCH_SECONDS = 2.0
STATUSES = ("pending", "processing", "completed", "failed", "cancelled")


def overview(conn: psycopg.Connection) -> dict[str, Any]:
    """Everything `status` shows. The keys of `--json` come first; `rate_limits` and
    each supervisor's `extra` are for the table only (see `as_json`)."""
    stats = queue.stats(conn)
    oldest = stats.oldest_runnable_age_seconds
    return {
        "queue": {s: stats.depth_by_status.get(s, 0) for s in STATUSES},
        "oldest_pending_seconds": None if oldest is None else round(oldest, 3),
        "last_hour": queue.last_hour(conn),
        "stories": queue.story_stats(conn),
        "supervisors": supervisors(conn),
        "rate_limits": registry.rate_limits(conn),
    }


def supervisors(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every supervisor on every host with its workers (db/registry.py's `view`)."""
    return registry.view(conn)


def as_json(view: dict[str, Any]) -> dict[str, Any]:
    """The `--json` answer: exactly its documented keys."""
    supervisors = [{k: v for k, v in s.items() if k != "extra"} for s in view["supervisors"]]
    keys = ("queue", "oldest_pending_seconds", "last_hour", "stories")
    return {**{k: view[k] for k in keys}, "supervisors": supervisors}


def _wrapped(label: str, items: list[str], width: int) -> list[str]:
    """`label` then `items`, as many a line as fit in `width`, continued under the
    first item."""
    indent = " " * 13
    lines, line = [], f"{label:<13}"
    for item in items:
        if line.strip() and line != f"{label:<13}" and len(line) + 2 + len(item) >= width:
            lines.append(line)
            line = indent
        line += ("" if line.endswith(" ") else "  ") + item
    return [*lines, line]


def _stories(stories: dict[str, Any]) -> list[str]:
    waiting = stories["waiting_on_story"]
    if not waiting:
        return ["no job waits on an earlier chapter"]
    return [
        f"waiting on an earlier chapter {waiting}",
        f"oldest {age(stories['oldest_wait_seconds'])}",
    ]


def _users(users: list[dict[str, Any]]) -> list[str]:
    """`id… N pending N running AGE`: the top users' backlogs, oldest pending job's age."""
    if not users:
        return ["none with jobs pending"]
    return [
        f"{u['user_id'][:8]} {u['pending']} pending {u['processing']} running"
        f" {age(u['oldest_pending_seconds'])}"
        for u in users
    ]


def _rate_limits(limits: dict[str, float]) -> list[str]:
    if not limits:
        return ["none used yet"]
    return [
        f"{name} {'free' if wait <= 0 else f'next call in {wait:.1f}s'}"
        for name, wait in limits.items()
    ]


def status_lines(view: dict[str, Any], width: int = 100) -> list[str]:
    """The table, one string per line, laid out for `width` columns (before colour)."""
    dead = sum(1 for s in view["supervisors"] if s["state"] == "dead")
    pairs = lambda counts: [f"{k} {n}" for k, n in counts.items()]  # noqa: E731
    lines = [
        *_wrapped("queue", pairs(view["queue"]), width),
        *_wrapped("oldest", [f"runnable pending {age(view['oldest_pending_seconds'])}"], width),
        *_wrapped("last hour", pairs(view["last_hour"]), width),
        *_wrapped("stories", _stories(view["stories"]), width),
        *_wrapped("top users", _users(view["stories"]["top_users"]), width),
        *_wrapped("rate limits", _rate_limits(view["rate_limits"]), width),
        f"supervisors  {len(view['supervisors'])}" + (f" ({dead} dead)" if dead else ""),
    ]
    for sup in view["supervisors"]:
        lines += ["", *_supervisor_lines(sup, width)]
    return lines


def _supervisor_lines(sup: dict[str, Any], width: int) -> list[str]:
    extra = sup["extra"]
    started = datetime.fromisoformat(sup["started_at"]).timestamp()
    lines = [
        f"{sup['host']}  pid {sup['pid']}  {sup['state']}",
        f"  up {age(time.time() - started)}  heartbeat {age(sup['heartbeat_age_seconds'])} ago"
        f"  {extra['provider']}  v{extra['version']}",
    ]
    if extra["paused"]:
        lines.append(f"  paused: {extra['paused_reason'] or 'the provider is at fault'}")
    if extra.get("live_text_warnings"):
        lines.append(f"  live text: {extra['live_text_warnings']} realtime.send warnings (lost)")
    lines.append("  #  pid     state    job")
    for w in sup["workers"]:
        line = f"  {w['index']:<2} {w['pid']:<7} {w['state']:<8}"
        if w["job_id"]:
            line += f" {w['job_id'][:8]} "
            pct = w["progress"] or 0
            line += f"{bar(pct, max(4, min(20, width - 1 - len(line) - 7)))} {pct:3d}%"
        lines.append(line)
    return lines


def health_lines(body: dict[str, Any]) -> list[str]:
    """`storyworker health` on a terminal: the /health answer as a table."""
    sup = body.get("supervisor") or {}
    lines = [
        f"{body.get('status', '?')}  supervisor pid {sup.get('pid', '?')}"
        f" {sup.get('state', '?')}  up {age(body.get('uptime'))}"
        f"  {len(body.get('workers', []))} workers"
    ]
    provider = body.get("provider")
    if provider:
        why = f": {provider['reason']}" if provider.get("reason") else ""
        lines.append(f"provider  {provider.get('state', '?')}{why}")
    header = " #  pid      state     job       prog  beat    done  failed  restarts  rss"
    lines.append(header)
    for w in body.get("workers", []):
        lines.append(
            f"{w.get('index', '?'):>2}  {w.get('pid', 0):<8} {w.get('state', '?'):<9} "
            f"{(w.get('job_id') or '-')[:8]:<9} {w.get('progress') or 0:>3}%  "
            f"{age(w.get('heartbeat_age_seconds')):<7} {w.get('jobs_completed', 0):>4}  "
            f"{w.get('jobs_failed', 0):>6}  {w.get('restarts', 0):>8}  "
            f"{(w.get('rss_bytes') or 0) / 1e6:.1f} MB"
        )
    lines += [f"problem: {p}" for p in body.get("problems", [])]
    return lines


def _draw(conn: psycopg.Connection, term: Term, json_out: bool, redraw: bool) -> None:
    view = overview(conn)
    if json_out:
        click.echo(json.dumps(as_json(view), indent=None if redraw else 2))
        return
    lines = [term.show(line) for line in status_lines(view, term.width)]
    if redraw and term.live:
        # Home, then each line over the last frame's: nothing scrolls, nothing piles up.
        height = max(shutil.get_terminal_size().lines - 1, 1)
        frame = "".join(f"{line}\x1b[K\n" for line in lines[:height])
        click.echo(f"\x1b[H{frame}\x1b[J", nl=False)
        sys.stdout.flush()
    else:
        click.echo("\n".join(lines) + ("\n" if redraw else ""))


@click.command()
@click.option("--json", "json_out", is_flag=True, help="One JSON object (one a line with --watch).")
@click.option("--watch", is_flag=True, help="Redraw every 2 s until Ctrl-C (exit 130).")
@friendly_errors
def status(json_out: bool, watch: bool) -> None:
    """The whole system: queue counts, oldest pending job, the last hour, rate limits,
    and every supervisor on every host with its workers."""
    term = Term.detect()
    with connect("status") as conn:
        if not watch:
            _draw(conn, term, json_out, redraw=False)
            return
        if term.live and not json_out:
            click.echo("\x1b[2J", nl=False)  # once: the screen is the view's now
        try:
            while True:
                _draw(conn, term, json_out, redraw=True)
                time.sleep(WATCH_SECONDS)
        except KeyboardInterrupt:
            click.echo()
            sys.exit(exitcodes.INTERRUPTED)
