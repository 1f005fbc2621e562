"""Driver errors become storyworker's by kind, against a real PostgreSQL (issue 13
item 2): a lost connection, data the server refuses for good (naming the constraint,
never quoting the failing row), and refusals that may pass."""

from __future__ import annotations

import psycopg
import pytest

from supervisor.db.connection import translated
from supervisor.errors import ConnectionLostError, ConstraintViolation, StatementError


@pytest.fixture
def table(conn: psycopg.Connection) -> str:
    conn.execute("create table notes (body text constraint notes_not_secret check (body <> 'x'))")
    return "notes"


def test_a_check_violation_names_the_constraint_and_is_permanent(conn, table):
    with pytest.raises(ConstraintViolation) as caught, translated("writing a note", conn):
        conn.execute("insert into notes values ('x')")
    error = caught.value
    assert error.constraint == "notes_not_secret" and error.sqlstate == "23514"
    assert not error.retryable
    assert str(error).startswith("writing a note failed: ")
    assert "notes_not_secret" in str(error) and "Failing row" not in str(error)
    conn.execute("select 1")  # the connection is still good


def test_data_the_server_or_the_driver_refuses_is_permanent(conn, table):
    with pytest.raises(StatementError) as caught, translated("dividing", conn):
        conn.execute("select 1 / 0")
    assert caught.value.sqlstate == "22012" and not caught.value.retryable
    with pytest.raises(StatementError) as nul, translated("writing a NUL", conn):
        conn.execute("insert into notes values (%s)", ("a\x00b",))
    assert not nul.value.retryable and not isinstance(nul.value, ConnectionLostError)


def test_a_statement_timeout_is_a_refusal_that_may_pass(conn):
    conn.execute("set statement_timeout = 20")
    with pytest.raises(StatementError) as caught, translated("sleeping", conn):
        conn.execute("select pg_sleep(1)")
    assert caught.value.sqlstate == "57014" and caught.value.retryable
    assert not isinstance(caught.value, ConnectionLostError)


def test_a_terminated_backend_is_a_lost_connection(conn, database_url):
    with psycopg.connect(database_url, autocommit=True) as victim:
        conn.execute("select pg_terminate_backend(%s)", (victim.info.backend_pid,))
        with pytest.raises(ConnectionLostError), translated("working", victim):
            victim.execute("select 1")
        # Afterwards the driver says "the connection is closed", with no SQLSTATE.
        with pytest.raises(ConnectionLostError), translated("working again"):
            victim.execute("select 1")
