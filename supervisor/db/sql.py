"""The named statements of `queries.sql`, and the only functions that run them.

Every statement storyworker sends lives in `queries.sql` under `-- name: NAME`,
followed by at least one comment line saying what it does (procrastinate's style).
Callers ask for a statement by its meaning; driver errors come back translated
(`connection.translated`), named after the statement.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import psycopg
import psycopg.sql

from supervisor.db.connection import translated

_NAME = re.compile(r"^-- name: (\w+)\n", flags=re.MULTILINE)


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    text: str


def parse(source: str) -> dict[str, Query]:
    """The queries of a `-- name:` file; ValueError for one without a description line
    or a name used twice."""
    parts = _NAME.split(source)
    found: dict[str, Query] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = body.strip().splitlines()
        leading = list(itertools.takewhile(lambda line: line.startswith("--"), lines))
        if not leading:
            raise ValueError(f"query {name} has no description line")
        if name in found:
            raise ValueError(f"query {name} is defined twice")
        description = " ".join(line.removeprefix("--").strip() for line in leading)
        found[name] = Query(name, description, body.strip())
    return found


@cache
def queries() -> dict[str, Query]:
    """Every named statement storyworker runs."""
    return parse((resources.files("supervisor.db") / "queries.sql").read_text("utf-8"))


def text(name: str) -> str:
    """The SQL of one named statement."""
    return queries()[name].text


def one(conn: psycopg.Connection, name: str, params: Mapping[str, Any] | None = None) -> Any:
    """Run `name`; its first row, or None."""
    with translated(name, conn):
        return conn.execute(text(name), params or {}).fetchone()


def all_rows(
    conn: psycopg.Connection, name: str, params: Mapping[str, Any] | None = None
) -> list[Any]:
    """Run `name`; every row."""
    with translated(name, conn):
        return conn.execute(text(name), params or {}).fetchall()


def run(conn: psycopg.Connection, name: str, params: Mapping[str, Any] | None = None) -> int:
    """Run `name` for its effect; the number of rows it touched."""
    with translated(name, conn):
        return conn.execute(text(name), params or {}).rowcount


def composed_rows(
    conn: psycopg.Connection,
    name: str,
    params: Mapping[str, Any],
    **identifiers: str,
) -> list[Any]:
    """Run `name`, whose text names database objects by `{placeholder}` (a schema known
    only at run time, such as pgvector's), with each filled in as a quoted identifier;
    every row."""
    statement = psycopg.sql.SQL(text(name)).format(
        **{key: psycopg.sql.Identifier(value) for key, value in identifiers.items()}
    )
    with translated(name, conn):
        return conn.execute(statement, params).fetchall()
