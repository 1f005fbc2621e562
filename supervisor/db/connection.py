"""Database connections. Connections are opened in the process that uses them, never
before a fork, and driver errors are translated here into storyworker's own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg.rows import dict_row

from supervisor.config import redact_dsn
from supervisor.errors import DatabaseError

CONNECT_TIMEOUT_SECONDS = 10


def connect(
    dsn: str,
    *,
    application_name: str = "storyworker",
    prepared_statements: bool = True,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> psycopg.Connection:
    """An autocommit connection with dict rows and TCP keepalives.

    `prepared_statements=False` is for transaction-mode poolers (PgBouncer, Supabase's
    pooler on port 6543), which cannot keep server-side prepared statements.
    Raises DatabaseError, whose message never carries the password.
    """
    try:
        return psycopg.connect(
            dsn,
            autocommit=True,
            row_factory=dict_row,
            prepare_threshold=5 if prepared_statements else None,
            connect_timeout=max(1, round(connect_timeout)),
            application_name=application_name,
            # A dead peer (host gone, NAT dropped) is noticed in about a minute
            # instead of the kernel's two hours.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
    except psycopg.Error as exc:
        raise DatabaseError(describe(exc, dsn)) from exc


def describe(exc: BaseException, dsn: str | None = None) -> str:
    """A one-line description of a driver error, with the password scrubbed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if dsn:
        from urllib.parse import urlsplit

        with contextlib.suppress(ValueError):
            password = urlsplit(dsn).password if "://" in dsn else None
            if password:
                text = text.replace(password, "***")
        where = redact_dsn(dsn)
        return f"cannot connect to {where}: {text}"
    return text


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Re-raise driver errors from the block as DatabaseError naming `action`."""
    try:
        yield
    except psycopg.Error as exc:
        raise DatabaseError(f"{action} failed: {describe(exc)}") from exc
