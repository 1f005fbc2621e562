"""Every way the database refuses a migration is one line with the right exit code
(issue 12 item 5), and timestamps Python cannot hold are loaded and printed."""

from __future__ import annotations

import psycopg
import pytest

from supervisor.db import timestamps
from supervisor.db.migrate import MigrationRefused, explain
from supervisor.errors import ConfigError, DatabaseError, NotMigratedError, StatementError


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (
            psycopg.errors.InsufficientPrivilege("permission denied for schema auth"),
            MigrationRefused,
            "role app: permission denied for schema auth; connect as the role that owns",
        ),
        (
            psycopg.errors.UndefinedTable('relation "chapters" does not exist'),
            MigrationRefused,
            "check that DATABASE_URL names the app's database",
        ),
        (
            psycopg.errors.UndefinedColumn('column "chapter_id" does not exist'),
            MigrationRefused,
            'column "chapter_id" does not exist',
        ),
        (
            psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
            DatabaseError,
            "run `storyworker migrate` again",
        ),
        (psycopg.errors.AdminShutdown("terminating connection"), DatabaseError, "again"),
        (
            psycopg.OperationalError("server closed the connection unexpectedly"),
            DatabaseError,
            "server closed",
        ),
        (
            psycopg.errors.DatatypeMismatch("foreign key constraint cannot be implemented"),
            MigrationRefused,
            "[SQLSTATE 42804]",
        ),
    ],
)
def test_database_errors_become_one_line(error, kind, words):
    found = explain(error, "migration 0001_schema", "app")
    assert type(found) is kind and "\n" not in str(found)
    assert words in str(found) and str(found).startswith("migration 0001_schema")
    # ...also when sql.py translated it first.
    wrapped = StatementError("x failed")
    wrapped.__cause__ = error
    assert type(explain(wrapped, "migration 0001_schema", "app")) is kind


def test_what_the_operator_must_change_exits_78_and_the_rest_69():
    assert issubclass(MigrationRefused, ConfigError)
    assert not issubclass(MigrationRefused, DatabaseError)
    already = NotMigratedError("missing")
    assert explain(already, "x", "app") is already


@pytest.mark.parametrize(
    ("text", "expected", "shown"),
    [
        (b"infinity", timestamps.LATEST, "infinity"),
        (b"-infinity", timestamps.EARLIEST, "-infinity"),
        (b"50000-01-01 00:00:00+00", timestamps.LATEST, "infinity"),
        (b"0044-03-15 00:00:00+00 BC", timestamps.EARLIEST, "-infinity"),
    ],
)
def test_timestamps_python_cannot_hold(text, expected, shown):
    loader = timestamps.BoundedTimestamptzLoader(1184, None)
    assert loader.load(text) == expected
    assert timestamps.shown(expected) == shown


def test_ordinary_timestamps_are_shown_as_before():
    loader = timestamps.BoundedTimestamptzLoader(1184, None)
    value = loader.load(b"2026-12-01 10:00:00+00")
    assert timestamps.shown(value) == value.strftime("%Y-%m-%d %H:%M:%S")
    assert timestamps.shown(None) == "-"
