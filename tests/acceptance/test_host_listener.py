"""One LISTEN per host (issue 15): the supervisor listens, wakes one idle worker per new
job through a pipe, and the workers run through a transaction-mode pooler (a real
PgBouncer with a pool of three) on a handful of server connections."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests import pgbouncer
from tests.service import wait_for

pytestmark = pytest.mark.slow

FAST_JOB = {"bullet_count": 1, "words_per_bullet": 50}
POOL_SIZE = 3


class PeakConnections:
    """Samples the server connections to the test's database (every client backend but
    the sampler's own and the test's `conn`) from a thread; `peak` is the most seen."""

    def __init__(self, database_url: str, exclude_pid: int) -> None:
        self._conn = psycopg.connect(database_url, autocommit=True)
        self._exclude = exclude_pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            (count,) = self._conn.execute(
                "select count(*) from pg_stat_activity where datname = current_database()"
                " and backend_type = 'client backend' and pid not in (pg_backend_pid(), %s)",
                (self._exclude,),
            ).fetchone()
            self.peak = max(self.peak, count)
            time.sleep(0.01)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()
        return self.peak


def completed(conn: psycopg.Connection, ids: list) -> bool:
    row = conn.execute(
        "select count(*) as n from generation_jobs where status = 'completed' and id = any(%s)",
        (ids,),
    ).fetchone()
    return row["n"] == len(ids)


def pickups_ms(conn: psycopg.Connection, ids: list) -> list[float]:
    rows = conn.execute(
        "select extract(epoch from started_at - created_at) * 1000 as ms"
        " from generation_jobs where id = any(%s)",
        (ids,),
    ).fetchall()
    return [float(r["ms"]) for r in rows]


def all_idle(svc) -> bool:
    workers = svc.workers()
    return bool(workers) and all(w["state"] == "idle" for w in workers)


@pytest.fixture
def pooled(database_url) -> Iterator[str]:
    if not pgbouncer.available():
        pytest.skip("pgbouncer is not installed")
    with pgbouncer.pgbouncer(database_url, pool_size=POOL_SIZE) as dsn:
        yield dsn


def test_eight_workers_through_a_pool_of_three_pick_up_at_listen_speed(
    service, job_factory, conn, database_url, pooled
):
    sampler = PeakConnections(database_url, exclude_pid=conn.info.backend_pid)
    svc = service(
        DATABASE_URL=pooled,
        DATABASE_LISTEN_URL=database_url,
        DATABASE_PREPARED_STATEMENTS="false",
        WORKER_CONCURRENCY="8",
        POLL_INTERVAL_MS="5000",  # a pick-up by polling would take seconds
    ).start()
    wait_for(lambda: all_idle(svc), 20, "eight idle workers")
    ids = []
    for _ in range(16):
        ids.append(job_factory(user_preferences=FAST_JOB)["id"])
        time.sleep(0.2)
    wait_for(lambda: completed(conn, ids), 60, "every job through the pooler")
    peak = sampler.stop()
    pickups = pickups_ms(conn, ids)
    assert statistics.median(pickups) < 100, pickups
    # The pool's three, the listener's own, and a probe or health check at most.
    assert peak <= POOL_SIZE + 3, peak
    logs = svc.logs()
    assert "host listener up" in logs and "polling instead" not in logs
    status, ready = svc.get("/ready")
    assert status == 200 and ready["checks"]["listener"]["detail"] == "listen"
    assert svc.stop() == 0


def test_one_job_wakes_one_of_eight_idle_workers(service, job_factory, conn):
    # LISTEN proven on DATABASE_URL itself (no DATABASE_LISTEN_URL).
    svc = service(WORKER_CONCURRENCY="8", POLL_INTERVAL_MS="30000", LOG_LEVEL="DEBUG").start()
    wait_for(lambda: all_idle(svc), 20, "eight idle workers")
    time.sleep(1.0)  # the wake-up written after each (re)connect has been taken
    before = svc.logs().count("woken by the host listener")
    job = job_factory(user_preferences=FAST_JOB)
    wait_for(lambda: completed(conn, [job["id"]]), 20, "the job")
    time.sleep(1.0)  # any other worker woken would have logged by now
    assert svc.logs().count("woken by the host listener") - before == 1
    assert svc.stop() == 0


@pytest.fixture
def listener_role(conn, database_url) -> Iterator[str]:
    """A login role of its own for DATABASE_LISTEN_URL, so that the test can keep the
    listener from reconnecting for a while (NOLOGIN)."""
    role = f"sw_listen_{uuid.uuid4().hex[:8]}"
    conn.execute(f"create role {role} login")
    yield make_conninfo(database_url, user=role, password=None)
    conn.execute(f"alter role {role} login")
    conn.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", (role,)
    )
    wait_for(
        lambda: (
            not conn.execute(
                "select 1 from pg_stat_activity where usename = %s", (role,)
            ).fetchone()
        ),
        10,
        "the role's sessions gone",
    )
    conn.execute(f"drop role {role}")


def listener_pid(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        "select pid from pg_stat_activity where application_name = 'storyworker listener'"
        " and datname = current_database()"
    ).fetchone()
    return row["pid"] if row else None


def test_a_killed_listener_falls_back_to_polling_and_comes_back_by_itself(
    service, job_factory, conn, listener_role
):
    svc = service(DATABASE_LISTEN_URL=listener_role, POLL_INTERVAL_MS="500").start()
    pid = wait_for(lambda: listener_pid(conn), 10, "the listener's backend")
    conn.execute(f'alter role "{conninfo_user(listener_role)}" nologin')
    conn.execute("select pg_terminate_backend(%s)", (pid,))
    wait_for(lambda: "host listener lost" in svc.logs(), 10, "the loss in the log")
    wait_for(lambda: svc.get("/ready")[1]["checks"]["listener"]["detail"] == "poll", 10, "poll")
    during = [job_factory(user_preferences=FAST_JOB)["id"] for _ in range(2)]
    wait_for(lambda: completed(conn, during), 20, "jobs picked up by polling")
    assert listener_pid(conn) is None  # it was polling, not listening, that found them
    conn.execute(f'alter role "{conninfo_user(listener_role)}" login')
    wait_for(lambda: "host listener is back" in svc.logs(), 40, "the listener back")
    assert listener_pid(conn) not in (None, pid)
    wait_for(lambda: svc.get("/ready")[1]["checks"]["listener"]["detail"] == "listen", 10, "ok")
    after = [job_factory(user_preferences=FAST_JOB)["id"]]
    wait_for(lambda: completed(conn, after), 20, "a job after the listener is back")
    logs = svc.logs()
    assert logs.count("host listener lost") == 1 and logs.count("host listener is back") == 1
    assert svc.stop() == 0


def conninfo_user(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["user"]


def test_listen_off_means_no_listener_at_all(service, job_factory, conn):
    svc = service(DATABASE_LISTEN="false", POLL_INTERVAL_MS="300").start()
    job = job_factory(user_preferences=FAST_JOB)
    wait_for(lambda: completed(conn, [job["id"]]), 20, "the job, by polling")
    assert listener_pid(conn) is None and "host listener" not in svc.logs()
    assert svc.stop() == 0


def test_no_transaction_stays_open_across_an_llm_call(service, job_factory, conn, pooled):
    # Through a transaction pooler a worker must hold a server connection only while a
    # statement runs: an open transaction would pin one for the length of the call.
    svc = service(
        DATABASE_URL=pooled,
        DATABASE_PREPARED_STATEMENTS="false",
        OFFLINE_LATENCY_MS="300",
    ).start()
    ids = [job_factory(user_preferences={**FAST_JOB, "bullet_count": 2})["id"] for _ in range(2)]
    long_open = 0
    deadline = time.monotonic() + 60
    while not completed(conn, ids) and time.monotonic() < deadline:
        long_open += conn.execute(
            "select count(*) as n from pg_stat_activity where datname = current_database()"
            " and state like 'idle in transaction%'"
            " and now() - state_change > interval '150 milliseconds'"
        ).fetchone()["n"]
        time.sleep(0.02)
    assert completed(conn, ids)
    assert long_open == 0
    assert svc.stop() == 0
