"""Session-wide fixtures: a real PostgreSQL, one migrated template, a clone per test,
and factories for users, sequences, chapters and jobs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.pg import PgServer, throwaway_server


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    with throwaway_server() as server:
        server.build_template()
        yield server


@pytest.fixture
def database_url(pg: PgServer) -> Iterator[str]:
    """DSN of a freshly migrated database of this test's own."""
    with pg.database() as dsn:
        yield dsn


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


Factory = Callable[..., dict[str, Any]]


def _insert(conn: psycopg.Connection, table: str, values: dict[str, Any]) -> dict[str, Any]:
    columns = ", ".join(values)
    placeholders = ", ".join(f"%({k})s" for k in values)
    sql = f"insert into {table} ({columns}) values ({placeholders}) returning *"
    return conn.execute(sql, values).fetchone()


@pytest.fixture
def user_factory(conn: psycopg.Connection) -> Factory:
    def make(**overrides: Any) -> dict[str, Any]:
        return _insert(conn, "auth.users", {"id": uuid.uuid4(), **overrides})

    return make


@pytest.fixture
def sequence_factory(conn: psycopg.Connection, user_factory: Factory) -> Factory:
    def make(**overrides: Any) -> dict[str, Any]:
        values = {"title": "The Lighthouse", "premise": "A keeper finds a door in the sea."}
        values.update(overrides)
        values.setdefault("user_id", user_factory()["id"])
        return _insert(conn, "sequences", values)

    return make


@pytest.fixture
def chapter_factory(conn: psycopg.Connection, sequence_factory: Factory) -> Factory:
    def make(**overrides: Any) -> dict[str, Any]:
        values: dict[str, Any] = {"chapter_number": 1, **overrides}
        values.setdefault("sequence_id", sequence_factory()["id"])
        return _insert(conn, "chapters", values)

    return make


@pytest.fixture
def job_factory(conn: psycopg.Connection, chapter_factory: Factory) -> Factory:
    """A pending job for a new chapter (or `chapter=`), with any column overridden."""

    def make(chapter: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
        chapter = chapter or chapter_factory()
        owner = conn.execute(
            "select user_id from sequences where id = %s", (chapter["sequence_id"],)
        ).fetchone()
        values: dict[str, Any] = {
            "sequence_id": chapter["sequence_id"],
            "chapter_id": chapter["id"],
            "user_id": owner["user_id"],
            "user_preferences": {"bullet_count": 4, "words_per_bullet": 60},
        }
        values.update(overrides)
        values["user_preferences"] = Jsonb(values["user_preferences"])
        return _insert(conn, "generation_jobs", values)

    return make
