"""The live-text benchmark's WAL breakdown (tests/benchmarks/walscope.py) puts each
write where it belongs: read back with pg_waldump from the suite's own server."""

from __future__ import annotations

import random
import string

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.benchmarks import walscope


def _lsn(conn: psycopg.Connection) -> str:
    return str(conn.execute("select pg_current_wal_lsn() as lsn").fetchone()["lsn"])


def test_a_chapter_rewrite_is_counted_to_chapters_with_its_toast_and_its_commit(
    pg, database_url, chapter_factory
):
    if pg.pgdata is None or walscope.waldump() is None:
        pytest.skip("needs the suite's own server and pgserver's pg_waldump")
    chapter = chapter_factory()
    # Incompressible, so TOAST stores all of it out of line.
    text = "".join(random.Random(26).choices(string.ascii_letters, k=30_000))
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        names = walscope.families(conn)
        oid = conn.execute("select oid from pg_database where datname = current_database()")
        oid = oid.fetchone()["oid"]
        start = _lsn(conn)
        conn.execute("update chapters set content = %s where id = %s", (text, chapter["id"]))
        end = _lsn(conn)
        written = conn.execute("select pg_wal_lsn_diff(%s, %s)::int as n", (end, start))
        written = written.fetchone()["n"]
    found = walscope.shares(pg.pgdata, start, end, oid, names)
    assert found.buckets["chapters"] >= len(text)
    assert found.buckets["commit records"] > 0
    assert "realtime.messages" not in found.buckets and "generation_jobs" not in found.buckets
    # Every record in the stretch is counted once (records are padded to 8 bytes).
    assert 0.9 * written <= found.total <= written
