"""Section `order` (issue 21): the claim with story order and fairness at 100,000 pending jobs,
the drain of independent jobs against the bare SKIP LOCKED loop in the same run, and
how long a second user waits behind a first user's backlog."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import psycopg

from supervisor.db import queue, sql
from supervisor.db.connection import connect as worker_connection
from tests.benchmarks import ours
from tests.benchmarks.harness import Bench, Result, connect, storyworker, wait_until

#: 1,000 users with 10 stories of 10 chapters each, every chapter queued: chapter 1 of
#: each story is runnable, chapters 2-10 (90%) wait behind it. Stories are queued in a
#: random order, each story's chapters at once and in order. Inserted without row
#: triggers (session_replication_role = replica), which only keep current_step; the
#: indexes the claim uses are maintained as ever.
SEED = """
set session_replication_role = replica;
insert into auth.users select gen_random_uuid() from generate_series(1, %(users)s);
insert into sequences (user_id, title) select u.id, 'Bench' from auth.users u,
       generate_series(1, %(stories)s);
insert into chapters (sequence_id, chapter_number) select s.id, n from sequences s,
       generate_series(1, %(chapters)s) n;
insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences, created_at)
select s.id, c.id, s.user_id, '{}',
       now() - interval '1 day' + r.rank * interval '1 second'
             + c.chapter_number * interval '1 millisecond'
  from (select id, row_number() over (order by random()) as rank from sequences) r
  join sequences s on s.id = r.id join chapters c on c.sequence_id = s.id;
set session_replication_role = default;
"""
#: Workers already busy when the claims are measured: chapter 1 of as many stories,
#: each of another user, so those users have a job in flight.
IN_FLIGHT = """
update generation_jobs set status = 'processing', locked_by = 'bench/busy', attempts = 1,
       heartbeat_at = now(), started_at = now()
 where id in (select distinct on (j.user_id) j.id from generation_jobs j
                join chapters c on c.id = j.chapter_id
               where c.chapter_number = 1 order by j.user_id, j.created_at limit %(n)s)
"""


def seed_backlog(dsn: str, users: int = 1000, stories: int = 10, chapters: int = 10) -> None:
    with connect(dsn) as conn:
        for statement in SEED.strip().split(";\n"):
            conn.execute(statement, {"users": users, "stories": stories, "chapters": chapters})
        conn.execute(IN_FLIGHT, {"n": 4})
        conn.execute("vacuum analyze generation_jobs")
        conn.execute("vacuum analyze chapters")


def claim_latencies(dsn: str, samples: int = 500) -> list[float]:
    """Seconds per claim (statement and reply), each in a transaction rolled back, so
    every sample sees the same backlog; the first 20 (plans, caches) are dropped."""
    timings = []
    with worker_connection(dsn) as conn:
        for _ in range(samples + 20):
            with conn.transaction() as tx:
                started = time.perf_counter()
                claim = queue.claim(conn, "bench/1")
                timings.append(time.perf_counter() - started)
                assert claim is not None
                raise psycopg.Rollback(tx)
    return timings[20:]


def explain_claim(dsn: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one claim on the seeded backlog (rolled back)."""
    params = queue.claims._claim_params("bench/1")
    with worker_connection(dsn) as conn, conn.transaction() as tx:
        queue.claim(conn, "bench/warm")  # the plan cache, as a running worker has it
        rows = conn.execute("explain (analyze, buffers) " + sql.text("claim"), params).fetchall()
        raise psycopg.Rollback(tx)
    return "\n".join(row["QUERY PLAN"] for row in rows)


def fairness(dsn: str, log_dir: Path, backlog: int = 200) -> dict[str, float]:
    """User A queues `backlog` jobs, then (once the workers are busy with them) user B
    queues one: B's wait, A's jobs' duration, and how many of A's jobs started first."""
    prefs = '{"bullet_count": 1, "words_per_bullet": 50}'
    env = {"WORKER_CONCURRENCY": "4", "OFFLINE_LATENCY_MS": "25"}
    with storyworker(dsn, log_dir, **env), connect(dsn) as conn:
        a, b = (
            conn.execute(
                "insert into auth.users values (gen_random_uuid()) returning id"
            ).fetchone()["id"]
            for _ in range(2)
        )
        _queue(conn, a, backlog, prefs)
        wait_until(lambda: _count(conn, "completed") >= 4, 60)
        _queue(conn, b, 1, prefs)
        wait_until(lambda: _count(conn, "completed") == backlog + 1, 600, interval=0.05)
        rows = conn.execute(
            "select user_id, extract(epoch from started_at - created_at) as waited,"
            " extract(epoch from completed_at - started_at) as took, started_at"
            " from generation_jobs order by started_at"
        ).fetchall()
    b_row = next(r for r in rows if r["user_id"] == b)
    took = [float(r["took"]) for r in rows if r["user_id"] == a]
    return {
        "b_wait": float(b_row["waited"]),
        "a_job": statistics.median(took),
        "a_before_b": sum(
            1 for r in rows if r["user_id"] == a and r["started_at"] < b_row["started_at"]
        ),
    }


def _queue(conn: psycopg.Connection, user: object, jobs: int, prefs: str) -> None:
    conn.execute(
        "with s as (insert into sequences (user_id) select %(u)s from generate_series(1, %(n)s)"
        " returning id), c as (insert into chapters (sequence_id, chapter_number)"
        " select id, 1 from s returning id, sequence_id)"
        " insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences)"
        " select sequence_id, id, %(u)s, %(p)s from c",
        {"u": user, "n": jobs, "p": prefs},
    )


def _count(conn: psycopg.Connection, status: str) -> int:
    row = conn.execute("select count(*) as n from generation_jobs where status = %s", (status,))
    return row.fetchone()["n"]


def run(bench: Bench, logs: Path, explain: bool = True) -> None:
    print("\n## 11. story order and fair claiming (issue 21)")
    ms = Result("claim at 100,000 pending (10k stories, 1k users, 90% waiting)", "ms")
    ms.note = "target: p50 < 5"
    plan = ""
    for _ in range(bench.runs):
        with bench.database() as dsn:
            seed_backlog(dsn)
            ms.samples += [t * 1000 for t in claim_latencies(dsn)]
            plan = plan or (explain_claim(dsn) if explain else "")
    print(ms.row(), flush=True)
    ordered = sorted(ms.samples)
    p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
    line("  p50 / p99", f"{p50:.2f} / {p99:.2f} ms")
    line("  claims per second, one worker, this backlog", f"{1000 / statistics.mean(ordered):,.0f}")
    drain(bench)
    found = [_fair(bench, logs) for _ in range(max(1, bench.runs - 1))]
    for key, label in (("b_wait", "B's wait behind A's 200 (s)"), ("a_job", "one of A's jobs (s)")):
        values = [f[key] for f in found]
        spread = f"({min(values):.2f}-{max(values):.2f})"
        line(label, f"{statistics.median(values):.2f} s  {spread}")
    line(
        "A's jobs started before B's (of 200)",
        f"{statistics.median(f['a_before_b'] for f in found):.0f}",
    )
    if plan:
        print("\nEXPLAIN (ANALYZE, BUFFERS) of the claim:\n" + plan)


def line(label: str, value: str) -> None:
    print(f"{label:<58} {value:>12}", flush=True)


def _fair(bench: Bench, logs: Path) -> dict[str, float]:
    with bench.database() as dsn:
        return fairness(dsn, logs)


def drain(bench: Bench, jobs: int = 5000) -> None:
    """Ours and the bare loop alternate within one run, so both meet the same machine."""
    mine = Result(f"storyworker claim+finish, 4 workers, {jobs} independent jobs", "jobs/s")
    bare = Result("bare SKIP LOCKED claim-then-finish, 4 workers", "jobs/s")
    for _ in range(bench.runs):
        for result, is_bare in ((mine, False), (bare, True)):
            with bench.database() as dsn:
                result.samples.append(ours.drain_rate(dsn, jobs, 4, bare=is_bare))
    print(mine.row(), flush=True)
    print(bare.row(), flush=True)
    print(f"{'  storyworker / bare':<58} {mine.median / bare.median:>12.2f} x  target: >= 0.9")
