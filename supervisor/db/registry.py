"""The process registry (`storyworker.supervisors`): every running supervisor on any
host, what it runs and what its workers are doing, for `storyworker status`.

A supervisor's row is written with its lease renewal (`beat`), never once per job,
and removed on a clean exit (`leave`). A row whose heartbeat is older than its own
lease is shown as dead; rows that stay dead are pruned by the next beat of any
supervisor (see `registry_beat` in queries.sql).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from supervisor.db import sql


def _version() -> str:
    try:
        return metadata.version("storyworker")
    except metadata.PackageNotFoundError:
        return ""


@dataclass(frozen=True)
class Identity:
    """Who a supervisor is in the registry: fixed for its whole life."""

    id: uuid.UUID = field(default_factory=uuid.uuid4)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    version: str = field(default_factory=_version)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Report:
    """What a supervisor publishes at each beat."""

    state: str
    lease_seconds: float
    concurrency: int
    provider: str
    paused: bool = False
    paused_reason: str | None = None
    #: [{index, pid, state, job_id, progress}]
    workers: tuple[dict[str, Any], ...] = ()


def beat(conn: psycopg.Connection, who: Identity, report: Report) -> None:
    """Insert or refresh `who`'s row with `report` (and prune long-dead rows)."""
    sql.run(
        conn,
        "registry_beat",
        {
            "id": who.id,
            "host": who.host,
            "pid": who.pid,
            "version": who.version,
            "started_at": who.started_at,
            "lease": report.lease_seconds,
            "concurrency": report.concurrency,
            "provider": report.provider,
            "state": report.state,
            "paused": report.paused,
            "paused_reason": report.paused_reason,
            "workers": Jsonb(list(report.workers)),
        },
    )


def leave(conn: psycopg.Connection, who: Identity) -> None:
    """Remove `who`'s row: it exits cleanly."""
    sql.run(conn, "registry_leave", {"id": who.id})


def supervisors(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every registered supervisor, `state` `dead` when its heartbeat is older than
    its lease, with `heartbeat_age` in seconds."""
    return sql.all_rows(conn, "registry_list")


def rate_limits(conn: psycopg.Connection) -> dict[str, float]:
    """Each shared rate limiter by name: seconds until it allows the next call."""
    return {row["name"]: float(row["wait"]) for row in sql.all_rows(conn, "rate_limit_state")}


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _workers(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A supervisor's workers as it last published them; a dead one's are dead too."""
    keys = ("index", "pid", "state", "job_id", "progress")
    workers = [{k: w.get(k) for k in keys} for w in row["workers"] or []]
    if row["state"] == "dead":
        for worker in workers:
            worker["state"] = "dead"
    return workers


def view(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every supervisor on every host with its workers, as `storyworker status` and the
    dashboard's Workers page show them; `extra` is for tables, not `status --json`."""
    return [
        {
            "host": row["host"],
            "pid": row["pid"],
            "state": row["state"],
            "started_at": _iso(row["started_at"]),
            "heartbeat_age_seconds": round(max(row["heartbeat_age"], 0.0), 3),
            "workers": _workers(row),
            "extra": {k: row[k] for k in ("version", "provider", "concurrency")}
            | {"paused": row["paused"], "paused_reason": row["paused_reason"]}
            | {
                "live_text_warnings": sum(
                    w.get("live_text_warnings", 0) for w in row["workers"] or []
                )
            },
        }
        for row in supervisors(conn)
    ]
