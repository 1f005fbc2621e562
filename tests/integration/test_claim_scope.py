"""`storyworker.claim_sequence` (the demo on a database it was given, issue 13 item
14): a session with it set claims and rescues only that sequence's jobs; without it,
every job is fair game, as before."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from supervisor.cli.demo import scoped
from supervisor.db import queue


def stale(conn: psycopg.Connection, job_id) -> None:
    conn.execute(
        "update generation_jobs set status = 'processing', attempts = 1, locked_by = 'gone/1',"
        " heartbeat_at = now() - interval '1 hour' where id = %s",
        (job_id,),
    )


def test_a_scoped_session_claims_and_rescues_only_its_sequence(
    conn, database_url, job_factory, chapter_factory
):
    other, other_stale = job_factory(), job_factory()
    stale(conn, other_stale["id"])
    mine = job_factory()
    mine_stale = job_factory(chapter=chapter_factory(sequence_id=mine["sequence_id"]))
    stale(conn, mine_stale["id"])
    dsn = scoped(make_conninfo(database_url), mine["sequence_id"])
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as demo:
        rescued = queue.rescue(demo, lease_seconds=60, max_retries=3)
        assert [r.job_id for r in rescued] == [mine_stale["id"]]
        # One story, one chapter at a time (issue 21): each is finished before the next.
        claimed = []
        for _ in range(3):
            claimed.append(queue.claim(demo, "demo/1"))
            if claimed[-1] is not None:
                queue.finish(
                    demo,
                    claimed[-1],
                    summary="s",
                    embedding=[],
                    embedding_model="",
                    word_count=0,
                    checkpoint={},
                )
        assert {c.job_id for c in claimed if c} == {mine["id"], mine_stale["id"]}
        assert claimed[-1] is None
    states = {r["id"]: r for r in conn.execute("select id, status, locked_by from generation_jobs")}
    assert states[other["id"]]["status"] == "pending"
    assert (states[other_stale["id"]]["status"], states[other_stale["id"]]["locked_by"]) == (
        "processing",
        "gone/1",
    )
    # Unscoped, as every real supervisor runs: the other jobs are taken as before.
    assert [r.job_id for r in queue.rescue(conn, lease_seconds=60, max_retries=3)] == [
        other_stale["id"]
    ]
    assert queue.claim(conn, "host/1") is not None
