"""Schema migrations shipped inside the package.

Each `migrations/NNNN_name.sql` runs once, in its own transaction, recorded in
`storyworker.migrations`: storyworker's own schema, out of reach of the app's roles.
That bookkeeping table is made (or moved from `public`, where versions before 0005
kept it) inside the transaction of the first migration it records, so a failed
attempt leaves nothing behind. A session advisory lock serialises concurrent runs, so
two hosts migrating at once is safe: the second waits, then finds nothing to do.

Every way the database can refuse is one line (`explain`): what the operator must
change is a MigrationRefused (exit 78), an unreachable or busy database a
DatabaseError (exit 69). `run`'s check and the admin commands share these messages.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import psycopg

from supervisor.db import sql
from supervisor.errors import ConfigError, DatabaseError, NotMigratedError, StoryworkerError

log = logging.getLogger(__name__)

# Any constant unique to storyworker; pg_advisory_lock takes a bigint.
ADVISORY_LOCK_KEY = 0x5707_3A0E_C0DE
#: The unique index that lets only one job write a chapter at a time.
ONE_WRITER_INDEX = "generation_jobs_one_writer_per_chapter_idx"
#: Columns of the app's tables that the migrations and the worker use but that no
#: migration adds to an existing table, with the contract's type for the message.
NEEDED_COLUMNS = {
    "sequences": {"id": "uuid primary key", "user_id": "uuid not null", "title": "text"},
    "chapters": {
        "id": "uuid primary key",
        "sequence_id": "uuid not null references sequences (id) on delete cascade",
        "chapter_number": "integer not null",
        "content": "text not null default ''",
    },
    "generation_jobs": {
        "id": "uuid primary key",
        "sequence_id": "uuid not null references sequences (id) on delete cascade",
        "chapter_id": "uuid references chapters (id) on delete cascade",
        "user_id": "uuid not null",
        "user_preferences": "jsonb not null",
        "status": "text not null default 'pending'",
        "current_step": "text",
        "progress": "integer default 0",
        "error_message": "text",
        "created_at": "timestamptz default now()",
        "started_at": "timestamptz",
        "completed_at": "timestamptz",
        "updated_at": "timestamptz default now()",
    },
}
OWNER_HINT = (
    "connect as the role that owns the app's tables (on Supabase: postgres; `alter table"
    " NAME owner to postgres` for a table another role owns)"
)


class MigrationRefused(ConfigError):
    """The database refused a migration; the operator must change something first."""


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
    with explained(conn, "reading storyworker.migrations", again=False):
        where = sql.one(conn, "migrations_table")
        if where["current"] is not None:
            rows = sql.all_rows(conn, "migrations_applied")
        elif where["legacy"] is not None:
            rows = sql.all_rows(conn, "migrations_applied_legacy")
        else:
            return set()
    return {row["version"] for row in rows}


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
    Raises MigrationRefused or DatabaseError with one line saying what to do.
    """
    lock = {"key": ADVISORY_LOCK_KEY}
    with explained(conn, "taking the migration lock"):
        sql.one(conn, "migration_lock", lock)
    try:
        nullable_content = check_app_tables(conn)
        done: list[str] = []
        for migration in pending(conn):
            with explained(conn, f"migration {migration.version}"), conn.transaction():
                sql.one(conn, "migration_lock_timeout", {"timeout": lock_timeout})
                sql.one(conn, "migration_search_path")
                sql.run(conn, "migrations_bootstrap")
                conn.execute(migration.sql)
                sql.run(conn, "migrations_lockdown")
                sql.run(conn, "migration_record", {"version": migration.version})
            log.info("migration applied version=%s", migration.version)
            done.append(migration.version)
        if nullable_content:
            log.info("chapters.content allows NULL; storyworker reads NULL as an empty chapter")
        return done
    finally:
        if not conn.closed:
            with contextlib.suppress(StoryworkerError):
                sql.one(conn, "migration_unlock", lock)


def check_app_tables(conn: psycopg.Connection) -> bool:
    """Refuse, naming table and column, an existing app table that lacks a column the
    migrations need. Return whether chapters.content allows NULL, which is allowed: the
    worker reads NULL as an empty chapter (the claim coalesces it) and writes it from
    the outline on."""
    with explained(conn, "checking the app's tables"):
        rows = sql.all_rows(conn, "app_tables_shape")
    present: dict[str, dict[str, bool]] = {}
    for row in rows:
        present.setdefault(row["table_name"], {})[row["column_name"]] = row["nullable"]
    for table, columns in present.items():
        needed = NEEDED_COLUMNS.get(table, {})
        missing = [c for c in needed if c not in columns]
        if missing:
            column = missing[0]
            raise MigrationRefused(
                f"table {table} has no column {column}, which storyworker needs: add it"
                f" (`alter table {table} add column {column} {needed[column]}`, with values"
                " for existing rows) and run `storyworker migrate` again"
            )
    return bool(present.get("chapters", {}).get("content"))


@contextlib.contextmanager
def explained(conn: psycopg.Connection, action: str, *, again: bool = True) -> Iterator[None]:
    """Re-raise any database error from the block as one line saying what to do.
    `again`: a passing error says to run `storyworker migrate` again (only what the
    migrate command itself does; a check that other commands share says nothing of
    the kind, the database being merely unavailable)."""
    try:
        yield
    except (psycopg.Error, DatabaseError) as exc:
        raise explain(exc, action, _role(conn), again=again) from exc


def _role(conn: psycopg.Connection) -> str:
    try:
        return conn.info.user
    except psycopg.Error:
        return "(unknown)"


def explain(exc: BaseException, action: str, role: str, *, again: bool = True) -> StoryworkerError:
    """The one-line error for `exc`, raised by the database while doing `action`:
    MigrationRefused for what the operator must change, DatabaseError otherwise."""
    if isinstance(exc, NotMigratedError | MigrationRefused):
        return exc
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    if not isinstance(cause, psycopg.Error):
        return exc if isinstance(exc, StoryworkerError) else DatabaseError(f"{action}: {exc}")
    state = cause.sqlstate or ""
    message = " ".join((cause.diag.message_primary or str(cause)).split())
    if state == "42501":
        return MigrationRefused(f"{action}: role {role}: {message}; {OWNER_HINT}")
    if state in ("42P01", "42703", "42883", "3F000"):
        return MigrationRefused(
            f"{action}: {message}: the database lacks something storyworker needs;"
            " check that DATABASE_URL names the app's database and see README, Database"
        )
    if state == "23505" and ONE_WRITER_INDEX in (cause.diag.constraint_name or message):
        return MigrationRefused(_two_writers(cause, action))
    if state.startswith(("08", "57", "53")) or state in ("55P03", "40P01", ""):
        hint = "; run `storyworker migrate` again" if again else ""
        return DatabaseError(f"{action}: {message}{hint}")
    return MigrationRefused(f"{action}: {message} [SQLSTATE {state}]")


def _two_writers(cause: psycopg.Error, action: str) -> str:
    detail = " ".join((cause.diag.message_detail or "").split())
    return (
        f"{action}: cannot create {ONE_WRITER_INDEX}: more than one processing job writes"
        f" the same chapter ({detail or 'see generation_jobs'}); cancel all but one"
        " (`storyworker jobs cancel ID`) and run `storyworker migrate` again"
    )
