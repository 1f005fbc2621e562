"""The claim reads the oldest runnable job from its index, however many jobs wait
(issue 28): a scope test inside the scan's filter once made the planner expect almost
no runnable row, so on a table it had no statistics for yet (a burst of new jobs) it
sorted every pending job on each claim, and a drain of n jobs cost n² rows.

Since issue 21 the search runs inside storyworker.claim_next, whose plans EXPLAIN does
not show: what the whole claim read of generation_jobs is counted too, from the
transaction's own statistics (pg_stat_xact_*: rows and index entries read)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.sql as pgsql
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from supervisor.cli.demo import scoped
from supervisor.db import queue, sql
from tests.benchmarks.harness import empty_jobs
from tests.integration.test_queue import finish

WAITING = 1500
#: Rows a claim may touch in any one plan node: the job, a few locked neighbours.
FEW = 20


def pending_jobs(conn: psycopg.Connection, count: int) -> Any:
    user = conn.execute("insert into auth.users values (gen_random_uuid()) returning id")
    user_id = user.fetchone()["id"]
    sequence = conn.execute(
        "insert into sequences (user_id) values (%s) returning id", (user_id,)
    ).fetchone()["id"]
    conn.execute(
        "insert into generation_jobs (sequence_id, user_id, user_preferences)"
        " select %s, %s, '{}' from generate_series(1, %s)",
        (sequence, user_id, count),
    )
    return sequence


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


READ = """
select pg_stat_get_xact_tuples_returned('generation_jobs'::regclass)
       + sum(pg_stat_get_xact_tuples_returned(i.indexrelid)
             + pg_stat_get_xact_tuples_fetched(i.indexrelid)) as n
  from pg_index i where i.indrelid = 'generation_jobs'::regclass
"""


def rows_read(conn: psycopg.Connection) -> int:
    """Rows and index entries of generation_jobs read so far in this transaction."""
    (n,) = conn.execute(READ).fetchone().values()
    return int(n)


def claim_plan(conn: psycopg.Connection, mode: str) -> dict[str, Any]:
    """The claim as the worker sends it, EXPLAIN ANALYZEd (and rolled back), with the
    plan cache in `mode`: psycopg prepares statements after five runs, and PostgreSQL
    may then use a generic plan. The plan's "Read" is what the claim read of
    generation_jobs in all (its functions' statements too)."""
    params = queue.claims._claim_params("w/1")
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql.text("claim"))))
    text = sql.text("claim")
    for number, name in enumerate(names, 1):
        text = text.replace(f"%({name})s", f"${number}")
    conn.execute("deallocate all")
    conn.execute(f"set plan_cache_mode = {mode}")
    types = ", ".join("text" if isinstance(params[n], str) else "int" for n in names)
    conn.execute(f"prepare claim_now ({types}) as {text}")
    args = pgsql.SQL(", ").join(pgsql.Literal(params[name]) for name in names)
    explain = pgsql.SQL("explain (analyze, format json) execute claim_now ({})").format(args)
    with conn.transaction(force_rollback=True):
        before = rows_read(conn)
        row = conn.execute(explain)
        (explained,) = row.fetchone().values()
        read = rows_read(conn) - before
    data = explained if isinstance(explained, list) else json.loads(explained)
    return {**data[0]["Plan"], "Read": read}


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_a_claim_reads_a_few_rows_however_many_jobs_wait(conn, mode):
    pending_jobs(conn, WAITING)
    # No ANALYZE since the insert: what the planner knows right after a burst of jobs.
    plan = claim_plan(conn, mode)
    assert plan["Actual Rows"] == 1
    busiest = max(nodes(plan), key=lambda n: n.get("Actual Rows", 0) * n.get("Actual Loops", 1))
    read = busiest.get("Actual Rows", 0) * busiest.get("Actual Loops", 1)
    assert read <= FEW, (busiest["Node Type"], read)
    assert 0 < plan["Read"] <= FEW, plan["Read"]


def test_a_scoped_claim_still_takes_only_its_sequence(conn, database_url):
    pending_jobs(conn, WAITING)
    mine = pending_jobs(conn, 3)
    with psycopg.connect(
        scoped(make_conninfo(database_url), mine), autocommit=True, row_factory=dict_row
    ) as demo:
        plan = claim_plan(demo, "force_generic_plan")
        claimed = queue.claim(demo, "demo/1")
    assert plan["Actual Rows"] == 1
    assert claimed is not None and claimed.sequence_id == mine


def claim_reads(conn: psycopg.Connection) -> int:
    """What one claim reads of generation_jobs (rolled back)."""
    with conn.transaction(force_rollback=True):
        before = rows_read(conn)
        assert queue.claim(conn, "w/2") is not None
        return rows_read(conn) - before


def drain(conn: psycopg.Connection, claim: Any, jobs: int) -> Any:
    """Finish `jobs` jobs from `claim` on, each finish claiming the next as a worker
    does; the claim in hand after them."""
    for _ in range(jobs):
        claim = finish(conn, claim, next_owner="w/1")
    return claim


def test_a_claim_in_a_drain_does_not_read_again_the_jobs_that_ended(conn, database_url):
    # A drain ends jobs faster than vacuum comes: each leaves a dead entry in the
    # indexes of live jobs. A claim once counted the jobs in flight with a bitmap scan,
    # which never marks an entry dead, probed for a waiting user from the start of the
    # index, and locked its pick through the app's index on status: each claim read
    # again hundreds of the jobs the drain had finished (issue 21's drain).
    conn.execute("alter table generation_jobs set (autovacuum_enabled = false)")
    empty_jobs(database_url, 700)  # one user, each job its own story: all runnable
    held = [queue.claim(conn, f"other/{n}") for n in range(3)]  # three jobs in flight
    claim = drain(conn, queue.claim(conn, "w/1"), 20)
    early = claim_reads(conn)
    claim = drain(conn, claim, 580)
    late = claim_reads(conn)
    assert all(held) and claim is not None
    assert early <= 2 * FEW, early
    # A leaf page more of index to step over, no more.
    assert late <= early + 4, (early, late)
