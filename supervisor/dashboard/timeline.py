"""A job's story told from its row: what happened when, who held it, what it spent,
and what the model was sent (the `context` manifest, where that column exists).

The row keeps the latest attempt's times and error; earlier attempts are counted
(`attempts`, and the `retries` in `usage`), not kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from supervisor.db import timestamps

LIVE = ("pending", "processing")


def when(value: datetime | None) -> str:
    """A timestamp in UTC for the page (`infinity` as such)."""
    if isinstance(value, datetime) and value not in (timestamps.LATEST, timestamps.EARLIEST):
        value = value.astimezone(UTC)
    return timestamps.shown(value) + (" UTC" if value is not None else "")


def usage_rows(usage: Any) -> list[dict[str, Any]]:
    """`usage` (one object, or a list of them per provider and model) as rows."""
    entries = usage if isinstance(usage, list) else [usage] if usage else []
    return [entry for entry in entries if isinstance(entry, Mapping)]


def events(row: Mapping[str, Any]) -> list[tuple[datetime, str]]:
    """(when, what) for each moment the row records, in order."""
    found: list[tuple[datetime, str]] = []

    def add(moment: datetime | None, what: str) -> None:
        if isinstance(moment, datetime):
            found.append((moment, what))

    add(row.get("created_at"), "queued")
    attempt = row.get("attempts") or 0
    holder = f" by {row['locked_by']}" if row.get("locked_by") else ""
    if attempt:
        add(row.get("started_at"), f"attempt {attempt} started{holder}")
    if row["status"] == "processing":
        add(row.get("heartbeat_at"), f"last heartbeat{holder}")
    if row["status"] == "pending" and row.get("run_after"):
        add(row.get("run_after"), "retry scheduled (not before)")
    ended = {"completed": "completed", "failed": "failed", "cancelled": "cancelled"}
    if row["status"] in ended:
        add(row.get("completed_at"), ended[row["status"]])
    return sorted(found, key=lambda event: event[0])


def sections(checkpoint: Any) -> list[str]:
    """Who wrote each finished section, as the checkpoint records it."""
    if not isinstance(checkpoint, Mapping):
        return []
    done = checkpoint.get("sections_done")
    written = checkpoint.get("sections") if isinstance(checkpoint.get("sections"), list) else []
    if not isinstance(done, int):
        return []
    names = []
    for index in range(done):
        source = written[index] if index < len(written) else None
        if isinstance(source, Mapping) and source.get("provider"):
            names.append(f"{source.get('provider')} {source.get('model') or ''}".strip())
        else:
            names.append("written")
    return names


def pretty(value: Any) -> str | None:
    return None if value is None else json.dumps(value, indent=2, sort_keys=True, default=str)


def describe(row: Mapping[str, Any]) -> dict[str, Any]:
    """What the Job page shows of `row` (a `dashboard_job` row)."""
    return {
        "job": row,
        "events": [(when(moment), what) for moment, what in events(row)],
        "sections": sections(row.get("checkpoint")),
        "usage": usage_rows(row.get("usage")),
        "preferences": pretty(row.get("user_preferences")),
        "has_context_column": "context" in row,
        "context_manifest": pretty(row.get("context")),
        "live": row["status"] in LIVE,
        "retryable": row["status"] in ("failed", "cancelled"),
        "cancellable": row["status"] in LIVE,
    }
