"""Database connections, and the edge where driver errors become storyworker's own.

`connect_for(settings, purpose)` is how every part of storyworker opens a connection:
in the process that uses it, never before a fork, with the settings' choice about
prepared statements (off behind a transaction-mode pooler). Driver errors are
translated by `translated(action)`: a constraint violation keeps the constraint's name,
everything else is a DatabaseError naming what failed. No message carries a password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg.rows import dict_row

from supervisor.config import Settings
from supervisor.errors import ConstraintViolation, DatabaseError
from supervisor.redact import redact, redact_dsn

CONNECT_TIMEOUT_SECONDS = 10.0
#: How long a probe (health checks, a LISTEN test) waits for a connection.
PROBE_CONNECT_TIMEOUT_SECONDS = 2.0


def connect_for(
    settings: Settings,
    purpose: str,
    *,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    short_lived: bool = False,
) -> psycopg.Connection:
    """A connection to `settings`' database for `purpose` ("worker 3", "migrate", …,
    shown as `application_name` in pg_stat_activity).

    `short_lived` connections (probes) never prepare statements: they end before
    preparing could pay off. Raises ConfigError when no database is configured and
    DatabaseError when it cannot be reached.
    """
    return connect(
        settings.require_database(),
        application_name=f"storyworker {purpose}",
        prepared_statements=settings.prepared_statements and not short_lived,
        connect_timeout=connect_timeout,
    )


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
        raise DatabaseError(f"cannot connect to {redact_dsn(dsn)}: {describe(exc, dsn)}") from exc


def describe(exc: BaseException, dsn: str | None = None) -> str:
    """A one-line description of a driver error, with every credential masked."""
    return redact(" ".join(str(exc).split()) or type(exc).__name__, dsn)


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Re-raise driver errors from the block as storyworker's, naming `action`: a
    constraint violation as ConstraintViolation with the constraint's name, anything
    else as DatabaseError."""
    try:
        yield
    except psycopg.errors.IntegrityError as exc:
        constraint = exc.diag.constraint_name or ""
        raise ConstraintViolation(
            f"{action} failed: {describe(exc)}", constraint=constraint
        ) from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"{action} failed: {describe(exc)}") from exc
