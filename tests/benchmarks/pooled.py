"""Section 7: behind a transaction-mode pooler (PgBouncer from the OS packages, a small
pool), with the supervisor's one LISTEN per host on a direct connection (issue 15).

Each measurement runs a real `storyworker run` whose DATABASE_URL is the pooler and
whose DATABASE_LISTEN_URL is the database itself, against the same through direct
connections and against today's fallback behind a pooler (no DATABASE_LISTEN_URL:
LISTEN is not delivered there, so workers poll every POLL_INTERVAL_MS=5000)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from tests import pgbouncer
from tests.benchmarks.harness import (
    Bench,
    Result,
    chapter_ids,
    connect,
    count,
    enqueue_jobs,
    seed_chapters,
    storyworker,
    wait_until,
)

POOL_SIZE = 4
FAST = {"bullet_count": 1, "words_per_bullet": 50}
#: How each variant reaches the database: env for `storyworker run`, given the DSNs.
VARIANTS: dict[str, Callable[[str, str], dict[str, str]]] = {
    "pooler + host LISTEN": lambda direct, pooled: {
        "DATABASE_URL": pooled,
        "DATABASE_LISTEN_URL": direct,
        "DATABASE_PREPARED_STATEMENTS": "false",
    },
    "direct + host LISTEN": lambda direct, pooled: {"DATABASE_URL": direct},
    "pooler, polling fallback": lambda direct, pooled: {
        "DATABASE_URL": pooled,
        "DATABASE_PREPARED_STATEMENTS": "false",
        "POLL_INTERVAL_MS": "5000",
    },
}


class Peak:
    """The most server connections to the database seen at once (every client backend
    but the sampler's own and `exclude`), sampled every 5 ms from a thread."""

    def __init__(self, dsn: str, exclude: int) -> None:
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._exclude = exclude
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        query = (
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and backend_type = 'client backend' and pid not in (pg_backend_pid(), %s)"
        )
        while not self._stop.is_set():
            self.peak = max(self.peak, self._conn.execute(query, (self._exclude,)).fetchone()[0])
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()
        return self.peak


@contextlib.contextmanager
def service(
    dsn: str, logs: Path, variant: str, **env: str
) -> Iterator[tuple[psycopg.Connection, Peak]]:
    """The variant's `storyworker run` with a pooler in front of `dsn`; yields the
    app's (direct) connection and the connection sampler, started before the service."""
    with pgbouncer.pgbouncer(dsn, POOL_SIZE) as pooled, connect(dsn) as conn:
        peak = Peak(dsn, conn.info.backend_pid)
        try:
            with storyworker(dsn, logs, **{**VARIANTS[variant](dsn, pooled), **env}):
                yield conn, peak
        finally:
            peak.stop()


def pickups(dsn: str, logs: Path, variant: str, workers: int, samples: int) -> tuple[list, int]:
    """(seconds from INSERT commit to claim by an idle worker, peak server connections)."""
    seed_chapters(dsn, samples, with_jobs=False)
    env = {"WORKER_CONCURRENCY": str(workers), "OFFLINE_LATENCY_MS": "0"}
    env.setdefault("POLL_INTERVAL_MS", "5000")
    found = []
    with service(dsn, logs, variant, **env) as (conn, peak):
        time.sleep(2.0)  # every worker idle
        for chapter in chapter_ids(conn):
            sent = time.time()
            (job,) = enqueue_jobs(conn, FAST, chapter)
            committed = (sent + time.time()) / 2
            wait_until(lambda j=job: _started(conn, j) is not None, 30, interval=0.002)
            found.append(_started(conn, job) - committed)
            wait_until(lambda: count(conn, "completed") == len(found), 30, interval=0.005)
            time.sleep(0.05)
        return found, peak.peak


def drain(dsn: str, logs: Path, variant: str, workers: int, jobs: int) -> tuple[float, int]:
    """(jobs/s for short jobs at zero LLM latency, peak server connections)."""
    seed_chapters(dsn, jobs, with_jobs=False)
    env = {"WORKER_CONCURRENCY": str(workers), "OFFLINE_LATENCY_MS": "0"}
    with service(dsn, logs, variant, **env) as (conn, peak):
        time.sleep(1.0)
        started = time.time()
        enqueue_jobs(conn, FAST)
        wait_until(lambda: count(conn, "completed") == jobs, 600, interval=0.02)
        return jobs / (time.time() - started), peak.peak


def throughput(dsn: str, logs: Path, variant: str, workers: int, latency_ms: int) -> float:
    """Jobs/min, 3 jobs per worker of 4 sections, at `latency_ms` per call and chunk."""
    jobs = 3 * workers
    seed_chapters(dsn, jobs, with_jobs=False)
    env = {"WORKER_CONCURRENCY": str(workers), "OFFLINE_LATENCY_MS": str(latency_ms)}
    with service(dsn, logs, variant, **env) as (conn, _):
        time.sleep(1.0)
        started = time.time()
        enqueue_jobs(conn, {"bullet_count": 4, "words_per_bullet": 60})
        wait_until(lambda: count(conn, "completed") == jobs, 900, interval=0.05)
        return jobs / ((time.time() - started) / 60)


def _started(conn: psycopg.Connection, job: object) -> float | None:
    row = conn.execute(
        "select extract(epoch from started_at) as t from generation_jobs where id = %s", (job,)
    ).fetchone()
    return None if row["t"] is None else float(row["t"])


def run(bench: Bench, logs: Path) -> None:
    """Print section 7."""
    if not pgbouncer.available():
        print("\n## 7. behind a transaction pooler: skipped, pgbouncer is not installed")
        return
    print(
        f"\n## 7. behind a transaction pooler: PgBouncer {pgbouncer.version()},"
        f" pool_mode=transaction, default_pool_size={POOL_SIZE}; listener direct"
    )
    peaks: dict[int, int] = {}
    for workers in (8, 32):
        _pickup_rows(bench, logs, workers, peaks)
    for variant in ("pooler + host LISTEN", "direct + host LISTEN"):
        rate = Result(f"drain, 32 workers, {variant}", "jobs/s", note="1-section jobs")
        for _ in range(bench.runs):
            with bench.database() as dsn:
                value, seen = drain(dsn, logs, variant, 32, 320)
            rate.samples.append(value)
            if variant.startswith("pooler"):
                peaks[32] = max(peaks.get(32, 0), seen)
        print(rate.row(), flush=True)
    for workers, seen in sorted(peaks.items()):
        target = f"target: <= {POOL_SIZE + 2}" if workers == 32 else ""
        print(
            f"{f'peak server connections, {workers} workers via the pooler':<58}"
            f" {seen:>12} conns    {'':>17}  {target}",
            flush=True,
        )
    _scaling_rows(bench, logs)


def _pickup_rows(bench: Bench, logs: Path, workers: int, peaks: dict[int, int]) -> None:
    for variant in VARIANTS:
        samples = 5 if "polling" in variant else 20
        result = Result(f"pick-up, {workers} workers, {variant}", "ms")
        for _ in range(1 if "polling" in variant else bench.runs):
            with bench.database() as dsn:
                found, seen = pickups(dsn, logs, variant, workers, samples)
            result.samples += [x * 1000 for x in found]
            if variant.startswith("pooler +"):
                peaks[workers] = max(peaks.get(workers, 0), seen)
        result.note = f"max {max(result.samples):,.1f} ms" + (
            "; target: p50 < 5" if variant.startswith("pooler +") else ""
        )
        print(result.row(), flush=True)


def _scaling_rows(bench: Bench, logs: Path, latency: int = 200) -> None:
    print(f"scaling: offline provider, {latency} ms per call and per chunk (jobs/min)")
    for variant in VARIANTS:
        base = None
        for workers in (1, 4, 16):
            result = Result(f"  {variant}, {workers} worker(s)", "jobs/min")
            with bench.database() as dsn:
                result.samples.append(throughput(dsn, logs, variant, workers, latency))
            base = base or result.median
            efficiency = result.median / (base * workers)
            target = "  target: >= 90%" if workers == 16 and variant.startswith("pooler +") else ""
            result.note = f"{efficiency:.0%} of linear{target}"
            print(result.row(), flush=True)
