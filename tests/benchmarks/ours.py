"""storyworker's side of the benchmarks: its real queue calls and its real process tree."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from tests.benchmarks.harness import (
    chapter_ids,
    connect,
    count,
    empty_jobs,
    enqueue_jobs,
    python_processes,
    seed_chapters,
    storyworker,
    wait_until,
)

# Each drain process waits for a common start instant (after its imports and
# connection), so that process start-up is not counted; it prints when it is done.
REAL_DRAIN = """
import sys, time
from supervisor.db import queue
from supervisor.db.connection import connect
conn = connect(sys.argv[1])
go = float(sys.argv[2])
time.sleep(max(0.0, go - time.time()))
owner = f"bench/{sys.argv[3]}"
claim = queue.claim(conn, owner)
while claim is not None:  # as a worker does: finish, and claim the next in one commit
    claim = queue.finish(conn, claim, summary="", embedding=[], embedding_model="", word_count=0,
                         checkpoint={}, next_owner=owner)
print(time.time(), flush=True)
"""

BARE_DRAIN = """
import sys, time
import psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
go = float(sys.argv[2])
time.sleep(max(0.0, go - time.time()))
claim = ("update generation_jobs set status = 'processing', attempts = attempts + 1 where id = ("
         "select id from generation_jobs where status = 'pending' order by created_at, id"
         " limit 1 for update skip locked) returning id")
finish = "update generation_jobs set status = 'completed' where id = %s"
while (row := conn.execute(claim).fetchone()) is not None:
    conn.execute(finish, row)
print(time.time(), flush=True)
"""

COMMIT_LOOP = """
import sys, time
import psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
go, seconds, me = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
conn.execute("insert into bench_counter values (%s, 0) on conflict do nothing", (me,))
time.sleep(max(0.0, go - time.time()))
n = 0
while time.time() < go + seconds:
    conn.execute("update bench_counter set n = n + 1 where id = %s", (me,))
    n += 1
print(n, flush=True)
"""


def drain_rate(dsn: str, jobs: int, workers: int, *, bare: bool = False) -> float:
    """Jobs/s for `workers` processes draining `jobs` empty jobs with storyworker's
    real claim and finish (or, `bare`, a minimal SKIP LOCKED claim-then-finish)."""
    empty_jobs(dsn, jobs)
    go = time.time() + 2.0
    outputs = python_processes(
        BARE_DRAIN if bare else REAL_DRAIN, [[dsn, str(go), str(i)] for i in range(workers)]
    )
    return jobs / (max(float(out) for out in outputs) - go)


def commit_ceiling(dsn: str, workers: int, seconds: float = 3.0) -> float:
    """Single-row UPDATE commits per second the machine sustains with `workers` clients."""
    with connect(dsn) as conn:
        conn.execute("create table if not exists bench_counter (id int primary key, n bigint)")
    go = time.time() + 2.0
    outputs = python_processes(
        COMMIT_LOOP, [[dsn, str(go), str(seconds), str(i)] for i in range(workers)]
    )
    return sum(int(out) for out in outputs) / seconds


def pickup_latencies(dsn: str, log_dir: Path, samples: int, *, listen: bool = True) -> list[float]:
    """Seconds from an INSERT's commit to an idle worker claiming the job."""
    seed_chapters(dsn, samples, with_jobs=False)
    env = {
        "WORKER_CONCURRENCY": "1",
        "OFFLINE_LATENCY_MS": "0",
        "POLL_INTERVAL_MS": "5000",
        "DATABASE_LISTEN": "true" if listen else "false",
    }
    latencies = []
    with storyworker(dsn, log_dir, **env), connect(dsn) as conn:
        time.sleep(1.5)
        for chapter in chapter_ids(conn):
            sent = time.time()
            (job,) = enqueue_jobs(conn, {"bullet_count": 1, "words_per_bullet": 50}, chapter)
            # The commit happened between sending and the acknowledgement.
            committed = (sent + time.time()) / 2
            wait_until(lambda j=job: _status(conn, j) == "completed", 30, interval=0.002)
            started = conn.execute(
                "select extract(epoch from started_at) as t from generation_jobs where id = %s",
                (job,),
            ).fetchone()["t"]
            latencies.append(float(started) - committed)
            time.sleep(0.05)
    return latencies


def _status(conn: psycopg.Connection, job_id: object) -> str:
    return conn.execute("select status from generation_jobs where id = %s", (job_id,)).fetchone()[
        "status"
    ]


def _commits(conn: psycopg.Connection) -> int:
    return conn.execute(
        "select xact_commit from pg_stat_database where datname = current_database()"
    ).fetchone()["xact_commit"]


def _xid(conn: psycopg.Connection) -> int:
    """The next transaction id: only transactions that write take one."""
    return int(conn.execute("select pg_current_xact_id()::text::bigint as x").fetchone()["x"])


def job_cost(dsn: str, log_dir: Path, jobs: int, workers: int) -> tuple[float, float, float]:
    """(write transactions per job, all commits per job, jobs/s): offline provider at
    zero latency, 4 sections, rate limit off.

    Write transactions are counted exactly by transaction ids. pg_stat_database's
    commits also count read-only ones, among them the one an idle LISTENing backend
    runs each time a NOTIFY wakes it; those are reported too, idle noise removed.
    """
    prefs = {"bullet_count": 4, "words_per_bullet": 300}
    seed_chapters(dsn, jobs, with_jobs=False)
    env = {
        "WORKER_CONCURRENCY": str(workers),
        "OFFLINE_LATENCY_MS": "0",
        "LEASE_SECONDS": "60",
        "POLL_INTERVAL_MS": "60000",
    }  # idle workers wait on NOTIFY, not on polls
    with connect(dsn) as conn:
        # Autovacuum's own transactions would count as ours.
        for table in ("generation_jobs", "chapters", "sequences"):
            conn.execute(f"alter table {table} set (autovacuum_enabled = false)")
    with storyworker(dsn, log_dir, **env), connect(dsn) as conn:
        # PostgreSQL flushes a backend's counters within ~10 s of it going idle.
        time.sleep(11)
        idle_start, t0 = _commits(conn), time.time()
        time.sleep(10)
        idle_rate = (_commits(conn) - idle_start - 1) / (time.time() - t0)
        before, xid_before, started = _commits(conn), _xid(conn), time.time()
        enqueue_jobs(conn, prefs)
        polls = [0]

        def done() -> bool:
            polls[0] += 1
            return count(conn, "completed") == jobs

        wait_until(done, 600, interval=0.05)
        elapsed = time.time() - started
        xids = _xid(conn) - xid_before - 2  # minus our insert and our second xid call
        time.sleep(11)
        total = _commits(conn) - before - 3 - polls[0]  # minus our own statements
        noise = idle_rate * (time.time() - started)
    return xids / jobs, (total - noise) / jobs, jobs / elapsed


def throughput(dsn: str, log_dir: Path, workers: int, jobs: int, latency_ms: int) -> float:
    """Jobs per minute with `workers` workers and a slow (sleeping) offline LLM."""
    seed_chapters(dsn, jobs, with_jobs=False)
    env = {"WORKER_CONCURRENCY": str(workers), "OFFLINE_LATENCY_MS": str(latency_ms)}
    with storyworker(dsn, log_dir, **env), connect(dsn) as conn:
        started = time.time()
        enqueue_jobs(conn, {"bullet_count": 4, "words_per_bullet": 60})
        wait_until(lambda: count(conn, "completed") == jobs, 900, interval=0.05)
        return jobs / ((time.time() - started) / 60)


def time_to_first_text(dsn: str, log_dir: Path, samples: int, latency_ms: int) -> list[float]:
    """Seconds from an INSERT's commit to the first text visible in chapters.content."""
    seed_chapters(dsn, samples, with_jobs=False)
    env = {"WORKER_CONCURRENCY": "1", "OFFLINE_LATENCY_MS": str(latency_ms)}
    results = []
    with storyworker(dsn, log_dir, **env), connect(dsn) as conn, connect(dsn) as watcher:
        time.sleep(1.5)
        for chapter in chapter_ids(conn):
            enqueue_jobs(conn, {"bullet_count": 2, "words_per_bullet": 60}, chapter)
            committed = time.time()
            wait_until(lambda c=chapter: _has_text(watcher, c), 30, interval=0.001)
            results.append(time.time() - committed)
            wait_until(lambda: count(conn, "processing") + count(conn, "pending") == 0, 60)
    return results


def _has_text(conn: psycopg.Connection, chapter: object) -> bool:
    sql = "select length(content) > 0 as v from chapters where id = %s"
    return conn.execute(sql, (chapter,)).fetchone()["v"]


def _rollup(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes from /proc/PID/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("Rss:", "Pss:"):
            values[parts[0]] = int(parts[1]) * 1024
    return values["Rss:"], values["Pss:"]


def memory(dsn: str, log_dir: Path, workers: int) -> dict[str, list[tuple[int, int]]]:
    """RSS/PSS by role: supervisor, idle workers, busy workers, health server processes."""
    from health.client import fetch_health
    from tests.service import children_of

    seed_chapters(dsn, workers, with_jobs=False)
    env = {"WORKER_CONCURRENCY": str(workers), "OFFLINE_LATENCY_MS": "200"}
    found: dict[str, list[tuple[int, int]]] = {}
    with storyworker(dsn, log_dir, **env) as proc, connect(dsn) as conn:
        url = f"http://127.0.0.1:{proc.port}/health"  # type: ignore[attr-defined]
        time.sleep(2)
        worker_pids = [w["pid"] for w in fetch_health(url)[1]["workers"]]
        health_pids = [p for p in children_of(proc.pid) if p not in worker_pids]
        found["supervisor"] = [_rollup(proc.pid)]
        found["idle worker"] = [_rollup(p) for p in worker_pids]
        found["health server (gunicorn master + worker)"] = [_rollup(p) for p in health_pids]
        enqueue_jobs(conn, {"bullet_count": 4, "words_per_bullet": 600})
        wait_until(lambda: count(conn, "processing") == workers, 60)
        time.sleep(3)  # well into their sections
        found["busy worker"] = [_rollup(p) for p in worker_pids]
    return found
