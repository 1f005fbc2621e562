"""procrastinate and pgqueuer, driven the same way as storyworker: a worker process
per measured worker, started ahead and released at a common instant, so that process
start-up is not counted; latency read from the job's start as the worker reports it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from tests.benchmarks.harness import ROOT

PROCRASTINATE_WORKER = """
import sys, time
import procrastinate
dsn, mode, go = sys.argv[1], sys.argv[2], float(sys.argv[3])
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

@app.task(name="noop", queue="bench")
def noop():
    if mode == "latency":
        print(time.time(), flush=True)

time.sleep(max(0.0, go - time.time()))
app.run_worker(queues=["bench"], concurrency=1, wait=(mode == "latency"), listen_notify=True,
               install_signal_handlers=True, delete_jobs="never")
print("done", time.time(), flush=True)
"""

PGQUEUER_WORKER = """
import asyncio, sys, time
from datetime import timedelta
import psycopg
from psycopg.conninfo import conninfo_to_dict
from pgqueuer import AsyncpgDriver, PsycopgDriver, Queries, QueueManager
from pgqueuer.types import QueueExecutionMode
dsn, mode, go, driver = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]

async def main():
    if driver == "asyncpg":  # pgqueuer's own first choice
        import asyncpg
        p = conninfo_to_dict(dsn)
        conn = await asyncpg.connect(host=p.get("host"), port=p.get("port"), user=p.get("user"),
                                     password=p.get("password"), database=p.get("dbname"))
        qm = QueueManager(queries=Queries(AsyncpgDriver(conn)))
    else:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        qm = QueueManager(queries=Queries(PsycopgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job):
        if mode == "latency":
            print(time.time(), flush=True)

    await asyncio.sleep(max(0.0, go - time.time()))
    drain = QueueExecutionMode.drain if mode == "drain" else QueueExecutionMode.continuous
    await qm.run(mode=drain, batch_size=10, dequeue_timeout=timedelta(seconds=5))
    print("done", time.time(), flush=True)

asyncio.run(main())
"""


PEERS = {
    # name: (modules it needs, worker script, extra worker argument)
    "procrastinate": (("procrastinate",), "procrastinate", ""),
    "pgqueuer (asyncpg)": (("pgqueuer", "asyncpg"), "pgqueuer", "asyncpg"),
    # With psycopg, pgqueuer listens and queries on one connection: a fetch woken by
    # NOTIFY waits for the listener's 1 s read timeout to give the connection back.
    "pgqueuer (psycopg)": (("pgqueuer",), "pgqueuer", "psycopg"),
}


def available() -> dict[str, bool]:
    import importlib.util

    return {
        name: all(importlib.util.find_spec(m) is not None for m in modules)
        for name, (modules, _, _) in PEERS.items()
    }


def install(peer: str, dsn: str) -> None:
    if PEERS[peer][1] == "procrastinate":
        import procrastinate

        app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=dsn))
        with app.open():
            app.schema_manager.apply_schema()
    else:
        import asyncio

        import psycopg
        from pgqueuer import PsycopgDriver, Queries

        async def run() -> None:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await Queries(PsycopgDriver(conn)).install()

        asyncio.run(run())


def enqueuer(peer: str, dsn: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(enqueue(n), close): n no-op jobs, committed when enqueue returns."""
    if PEERS[peer][1] == "procrastinate":
        import procrastinate

        app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=dsn))

        @app.task(name="noop", queue="bench")
        def noop() -> None: ...

        app.open()
        return (lambda n: noop.batch_defer(*([{}] * n))), app.close
    import psycopg
    from pgqueuer.db import SyncPsycopgDriver
    from pgqueuer.queries import SyncQueries

    conn = psycopg.connect(dsn, autocommit=True)
    queries = SyncQueries(SyncPsycopgDriver(conn))
    return (lambda n: queries.enqueue(["noop"] * n, [None] * n, [0] * n)), conn.close


def start_workers(peer: str, dsn: str, mode: str, count: int, go: float) -> list[subprocess.Popen]:
    _, kind, extra = PEERS[peer]
    script = PROCRASTINATE_WORKER if kind == "procrastinate" else PGQUEUER_WORKER
    return [
        subprocess.Popen(
            [sys.executable, "-c", script, dsn, mode, str(go), extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env={**os.environ},
        )
        for _ in range(count)
    ]


def drain_rate(peer: str, dsn: str, jobs: int, workers: int) -> float:
    """Jobs per second for `workers` processes draining `jobs` no-op jobs."""
    install(peer, dsn)
    enqueue, close = enqueuer(peer, dsn)
    enqueue(jobs)
    close()
    go = time.time() + 3.0
    procs = start_workers(peer, dsn, "drain", workers, go)
    ends = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        ends += [float(line.split()[1]) for line in out.splitlines() if line.startswith("done")]
    return jobs / (max(ends) - go)


def pickup_latencies(peer: str, dsn: str, samples: int) -> list[float]:
    """Seconds from an enqueue's commit to the idle worker starting the job."""
    install(peer, dsn)
    enqueue, close = enqueuer(peer, dsn)
    (proc,) = start_workers(peer, dsn, "latency", 1, time.time())
    time.sleep(3.0)  # imported, connected, listening
    latencies = []
    try:
        for _ in range(samples):
            sent = time.time()
            enqueue(1)
            # The commit happened between sending and the acknowledgement.
            committed = (sent + time.time()) / 2
            latencies.append(float(proc.stdout.readline()) - committed)
            time.sleep(0.05)
    finally:
        close()
        proc.terminate()
        proc.wait(30)
    return latencies
