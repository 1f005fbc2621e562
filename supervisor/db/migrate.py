"""Schema migrations shipped inside the package.

Each `migrations/NNNN_name.sql` runs once, in its own transaction, recorded in
`storyworker_migrations`. A session advisory lock serialises concurrent runs, so two
hosts migrating at once is safe: the second waits, then finds nothing to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import psycopg

from supervisor.db import sql
from supervisor.errors import NotMigratedError

log = logging.getLogger(__name__)

# Any constant unique to storyworker; pg_advisory_lock takes a bigint.
ADVISORY_LOCK_KEY = 0x5707_3A0E_C0DE

@dataclass(frozen=True)
class Migration:
    version: str
    sql: str


def shipped() -> list[Migration]:
    """The migrations in the package, in order."""
    folder = resources.files("supervisor.db") / "migrations"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [Migration(f.name.removesuffix(".sql"), f.read_text("utf-8")) for f in files]


def applied(conn: psycopg.Connection) -> set[str]:
    """Versions recorded as applied; empty when the bookkeeping table is missing."""
    if sql.one(conn, "migrations_table")["t"] is None:
        return set()
    return {row["version"] for row in sql.all_rows(conn, "migrations_applied")}


def pending(conn: psycopg.Connection) -> list[Migration]:
    """Shipped migrations not yet applied."""
    done = applied(conn)
    return [m for m in shipped() if m.version not in done]


def require_migrated(conn: psycopg.Connection) -> None:
    """Raise NotMigratedError naming what is missing, unless everything is applied."""
    missing = pending(conn)
    if missing:
        names = ", ".join(m.version for m in missing)
        raise NotMigratedError(
            f"the database is missing migrations ({names}); run `storyworker migrate`"
        )


def migrate(conn: psycopg.Connection, *, lock_timeout: str = "15s") -> list[str]:
    """Apply every pending migration; return the versions applied by this call.

    `conn` must be in autocommit mode. `lock_timeout` bounds how long one DDL
    statement waits behind running workers' row locks before giving up cleanly.
    """
    lock = {"key": ADVISORY_LOCK_KEY}
    sql.one(conn, "migration_lock", lock)
    try:
        sql.run(conn, "migrations_create_table")
        done: list[str] = []
        for migration in pending(conn):
            with conn.transaction():
                sql.one(conn, "migration_lock_timeout", {"timeout": lock_timeout})
                conn.execute(migration.sql)
                sql.run(conn, "migration_record", {"version": migration.version})
            log.info("migration applied version=%s", migration.version)
            done.append(migration.version)
        return done
    finally:
        sql.one(conn, "migration_unlock", lock)
