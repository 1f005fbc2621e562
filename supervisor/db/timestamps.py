"""Timestamps the worker did not write, loaded without crashing.

PostgreSQL's `infinity`, `-infinity` and years past 9999 have no Python datetime:
psycopg refuses to load them ("timestamp too large"). Connections that show whole
job rows (the admin commands) load them as datetime.max / datetime.min instead, and
`shown()` prints those as `infinity` / `-infinity`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg.types.datetime import TimestamptzLoader

LATEST = datetime.max.replace(tzinfo=UTC)
EARLIEST = datetime.min.replace(tzinfo=UTC)


class BoundedTimestamptzLoader(TimestamptzLoader):
    """timestamptz as datetime, with what Python cannot hold clamped to its bounds."""

    def load(self, data: bytes | bytearray | memoryview) -> datetime:
        try:
            return super().load(data)
        except psycopg.DataError:
            text = bytes(data)
            return EARLIEST if text.startswith(b"-") or text.endswith(b"BC") else LATEST


def register(conn: psycopg.Connection) -> None:
    """Load this connection's timestamptz values with BoundedTimestamptzLoader."""
    conn.adapters.register_loader("timestamptz", BoundedTimestamptzLoader)


def shown(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """`value` for a person: `-` when missing, `infinity` / `-infinity` at the bounds."""
    if value is None:
        return "-"
    if value == LATEST:
        return "infinity"
    if value == EARLIEST:
        return "-infinity"
    return value.strftime(fmt)
