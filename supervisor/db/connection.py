"""Database connections, and the edge where driver errors become storyworker's own.

`connect_for(settings, purpose)` is how every part of storyworker opens a connection:
in the process that uses it, never before a fork, with the settings' choice about
prepared statements (off behind a transaction-mode pooler). Driver errors are
translated by kind in `translated(action)`: a lost connection (ConnectionLostError:
reconnect), a statement the server refused on a live connection (StatementError, with
`retryable` saying whether it may pass; ConstraintViolation names the constraint), or
else a DatabaseError naming what failed. No message carries a password or row data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import dict_row

from supervisor.config import Settings
from supervisor.db import timestamps
from supervisor.errors import (
    ConnectionLostError,
    ConstraintViolation,
    DatabaseError,
    StatementError,
)
from supervisor.redact import redact, redact_dsn

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

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
        conn = psycopg.connect(
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
    # A row may hold timestamps no worker wrote (`infinity`, from before the guard):
    # every connection loads them instead of failing on the whole row.
    timestamps.register(conn)
    return conn


def describe(exc: BaseException, dsn: str | None = None) -> str:
    """A one-line description of a driver error, with every credential masked."""
    return redact(" ".join(str(exc).split()) or type(exc).__name__, dsn)


#: SQLSTATEs (or classes) after which the session is gone, or is on a server that can
#: no longer take writes (a standby after a failover): only a new connection helps.
SESSION_GONE = ("08", "57P01", "57P02", "57P03", "57P05", "25006")
#: SQLSTATE classes of data the server will refuse however often it is sent: data
#: exceptions, integrity constraints, WITH CHECK OPTION, and an app trigger's RAISE.
#: Every other refusal (deadlock, serialization, lock or statement timeout, out of
#: memory or disk, an I/O error, a missing privilege) may pass and is retried.
REFUSED_FOR_GOOD = ("22", "23", "44", "P0")


@contextlib.contextmanager
def translated(action: str, conn: psycopg.Connection | None = None) -> Iterator[None]:
    """Re-raise driver errors from the block as storyworker's, naming `action`, by kind
    (see `translate`). `conn`, when given, is the connection the block used: a closed
    one after the error means it was lost, whatever the error says."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc, action, conn) from exc


def translate(
    exc: psycopg.Error, action: str, conn: psycopg.Connection | None = None
) -> DatabaseError:
    """storyworker's error for a driver error raised while doing `action`."""
    sqlstate = exc.sqlstate or ""
    if _connection_lost(exc, sqlstate, conn):
        return ConnectionLostError(f"{action} failed: connection lost: {describe(exc)}")
    refusal = f"{action} failed: {_refusal(exc)}"
    if isinstance(exc, psycopg.errors.IntegrityError):
        return ConstraintViolation(
            refusal, constraint=exc.diag.constraint_name or "", sqlstate=sqlstate
        )
    if sqlstate:
        return StatementError(
            refusal, sqlstate=sqlstate, retryable=not sqlstate.startswith(REFUSED_FOR_GOOD)
        )
    # Raised by the driver itself (no server reply): bad data it would not send (a NUL
    # in text) is refused for good; anything else is a bug that may not recur.
    return StatementError(refusal, retryable=not isinstance(exc, psycopg.DataError))


def _connection_lost(exc: psycopg.Error, sqlstate: str, conn: psycopg.Connection | None) -> bool:
    if conn is not None and conn.closed:
        return True
    if sqlstate:
        return sqlstate.startswith(SESSION_GONE)
    # No SQLSTATE: the driver's own verdict ("the connection is closed", "server closed
    # the connection unexpectedly", a socket error).
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def _refusal(exc: psycopg.Error) -> str:
    """The server's primary message, with the SQLSTATE and the constraint's name. Never
    its DETAIL: for a constraint that is the whole failing row, story text included."""
    diag = exc.diag
    primary = diag.message_primary or (str(exc).splitlines() or [type(exc).__name__])[0]
    message = redact(" ".join(primary.split()))
    constraint = diag.constraint_name
    if constraint and constraint not in message:
        message += f" (constraint {constraint})"
    return message + (f" [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else "")


def pool_for(
    settings: Settings,
    purpose: str,
    *,
    max_size: int,
    configure: Callable[[psycopg.Connection], None] | None = None,
) -> ConnectionPool:
    """A pool of connections like `connect_for`'s (autocommit, dict rows, keepalives,
    timestamps Python cannot hold loaded), made in the process that uses it and
    opened on first use. `configure` runs on each new connection."""
    from psycopg_pool import ConnectionPool

    def setup(conn: psycopg.Connection) -> None:
        timestamps.register(conn)
        if configure is not None:
            configure(conn)

    return ConnectionPool(
        settings.require_database(),
        min_size=1,
        max_size=max_size,
        open=True,
        timeout=CONNECT_TIMEOUT_SECONDS,
        check=ConnectionPool.check_connection,
        configure=setup,
        name=f"storyworker {purpose}",
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            # Never prepared: the dashboard's optional filters fold away only in a
            # plan made for the values at hand, never in a generic one.
            "prepare_threshold": None,
            "connect_timeout": round(CONNECT_TIMEOUT_SECONDS),
            "application_name": f"storyworker {purpose}",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )
