"""Supabase Realtime Broadcast from the database (`LIVE_TEXT=broadcast`): whether this
database and role can send with `realtime.send`, and the WARNINGs it raises.

`realtime.send(payload, event, topic, private)` inserts into `realtime.messages`, which
the Realtime server reads through logical replication and broadcasts to the topic's
subscribers. It catches its own errors (no partition for today, a policy refusing the
insert) and raises them as a WARNING instead, so a caller that does not listen for
notices never knows a message was lost: `warnings_during` listens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from supervisor.db import sql


@contextlib.contextmanager
def warnings_during(conn: psycopg.Connection) -> Iterator[list[str]]:
    """The messages of the WARNINGs the server sends on `conn` inside the block (psycopg
    delivers notices while the statement's results are read, so before it returns)."""
    heard: list[str] = []

    def hear(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING":
            heard.append(diag.message_primary or "")

    conn.add_notice_handler(hear)
    try:
        yield heard
    finally:
        conn.remove_notice_handler(hear)


def why_not(conn: psycopg.Connection) -> str | None:
    """None when this role can send live text with realtime.send, else why not, in a
    few words: found out from the catalogs, then by one probe rolled back."""
    row = sql.one(conn, "live_text_check")
    if not row["found"]:
        return "realtime.send(jsonb, text, text, boolean) does not exist (no Supabase Realtime)"
    if not row["may_execute"]:
        return f"role {_role(conn)} may not execute realtime.send"
    if not row["may_insert"]:
        return f"role {_role(conn)} may not insert into realtime.messages"
    with warnings_during(conn) as heard, conn.transaction(force_rollback=True):
        sql.one(conn, "live_text_probe")
    if heard:
        return f"realtime.send warned: {heard[0]}"
    return None


def _role(conn: psycopg.Connection) -> str:
    return conn.info.parameter_status("session_authorization") or "(this role)"
