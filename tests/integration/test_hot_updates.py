"""What a job writes while it runs touches no index of generation_jobs: its heartbeat,
its live text and its checkpoints are HOT updates (migration 0014), so a flush writes
the job's row and nothing else, not a new entry in each of the table's indexes."""

from __future__ import annotations

import psycopg

from supervisor.db import queue

COUNTS = """
select pg_stat_get_tuples_updated('generation_jobs'::regclass) as updated,
       pg_stat_get_tuples_hot_updated('generation_jobs'::regclass) as hot
"""


def counts(conn: psycopg.Connection) -> tuple[int, int]:
    """generation_jobs' updates and HOT updates so far, this session's included."""
    conn.execute("select pg_stat_force_next_flush()")
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute(COUNTS).fetchone()
    return row["updated"], row["hot"]


def test_a_running_jobs_writes_are_hot_updates(conn, job_factory):
    job = job_factory()
    claim = queue.claim(conn, "w1")
    assert claim is not None
    updated, hot = counts(conn)
    # Each in its own transaction, as a worker sends them: each heartbeat a new now().
    for text in ("Once", " upon", " a time"):
        queue.append_text(conn, claim, text)
    queue.checkpoint(conn, claim, text=".", progress=50, step="section 1 of 2", checkpoint={})
    assert queue.renew_leases(conn, [("w1", job["id"])]) == 1
    after_updated, after_hot = counts(conn)
    assert after_updated - updated == 5
    assert after_hot - hot == 5, "a running job's write touched an index"
