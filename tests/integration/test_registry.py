"""The process registry against a real PostgreSQL: a beat inserts and refreshes one
row, a row is dead once its heartbeat is older than its lease, long-dead rows and
dead rows of the same host and pid are pruned by the next beat, and leaving removes
the row. Nothing in it is reachable by PUBLIC."""

from __future__ import annotations

import os
import uuid

from supervisor.db import registry

REPORT = registry.Report(
    state="running",
    lease_seconds=5,
    concurrency=2,
    provider="offline",
    workers=({"index": 0, "pid": 11, "state": "busy", "job_id": None, "progress": 30},),
)


def age(conn, who: registry.Identity, seconds: float) -> None:
    conn.execute(
        "update storyworker.supervisors set heartbeat_at = now() - make_interval(secs => %s)"
        " where id = %s",
        (seconds, who.id),
    )


def test_beat_refreshes_one_row_and_a_stale_one_is_dead(conn):
    who = registry.Identity(host="host-a", pid=100)
    registry.beat(conn, who, REPORT)
    registry.beat(conn, who, REPORT)
    (row,) = registry.supervisors(conn)
    assert (row["host"], row["pid"], row["state"], row["concurrency"]) == (
        "host-a",
        100,
        "running",
        2,
    )
    assert row["workers"] == list(REPORT.workers) and row["heartbeat_age"] < 2
    age(conn, who, 6)
    assert registry.supervisors(conn)[0]["state"] == "dead"
    registry.leave(conn, who)
    assert registry.supervisors(conn) == []


def test_a_beat_prunes_long_dead_rows_and_this_pids_dead_predecessor(conn):
    gone = registry.Identity(host="host-b", pid=7)
    predecessor = registry.Identity(host="host-a", pid=100)
    recently_dead = registry.Identity(host="host-c", pid=9)
    for who in (gone, predecessor, recently_dead):
        registry.beat(conn, who, REPORT)
    age(conn, gone, 301)
    age(conn, predecessor, 6)
    age(conn, recently_dead, 6)
    registry.beat(conn, registry.Identity(host="host-a", pid=100), REPORT)
    rows = registry.supervisors(conn)
    assert sorted((r["host"], r["state"]) for r in rows) == [
        ("host-a", "running"),
        ("host-c", "dead"),
    ]


def test_nothing_of_it_for_public(conn):
    granted = conn.execute(
        "select has_table_privilege('public', 'storyworker.supervisors', 'select, insert,"
        " update, delete') as p"
    ).fetchone()["p"]
    assert not granted
    assert uuid.UUID(str(registry.Identity().id))


def test_maintenance_beats_in_the_renewals_transaction_and_leaves_on_exit(
    conn, job_factory, database_url, tmp_path, monkeypatch
):
    from health.breaker import Breaker
    from health.heartbeat import HeartbeatTable, WorkerState
    from supervisor.arbiter.leases import Maintenance
    from supervisor.arbiter.registration import Registration
    from supervisor.config import Settings

    job = job_factory()
    conn.execute(
        "update generation_jobs set status = 'processing', locked_by = 'h/1', attempts = 1,"
        " heartbeat_at = now() where id = %s",
        (job["id"],),
    )
    table = HeartbeatTable.create(4, directory=str(tmp_path))
    breaker = Breaker.create(str(tmp_path))
    table.set_supervisor(expected_workers=1)
    table.reset_slot(0, pid=1, state=WorkerState.STARTING, restarts=0)
    table.update_slot(0, state=WorkerState.PAUSED, job_id=job["id"], progress=30)
    breaker.trip("Gemini rejected the API key (HTTP 400)")
    settings = Settings(database_url=database_url, lease_seconds=30, concurrency=1)
    registration = Registration(table, breaker, lambda: settings)
    maintenance = Maintenance(lambda: settings, registration)
    beat, seen = registry.beat, []

    def spy(c, *args):
        # The top-level transaction the beat runs in (a savepoint of it).
        seen.append(c.execute("select txid_current()::text as tx").fetchone()["tx"])
        beat(c, *args)

    monkeypatch.setattr(registry, "beat", spy)
    try:
        maintenance.tick(0.0, [("h/1", str(job["id"]))])
        (row,) = conn.execute("select * from storyworker.supervisors")
        renewed = conn.execute(
            "select xmin::text as tx from generation_jobs where id = %s", (job["id"],)
        ).fetchone()
        assert seen == [renewed["tx"]]  # one transaction for the renewal and the beat
        assert row["paused"] and "rejected the API key" in row["paused_reason"]
        assert row["workers"] == [
            {
                "index": 0,
                "pid": os.getpid(),
                "state": "paused",
                "job_id": str(job["id"]),
                "progress": 30,
            }
        ]
        maintenance.leave_registry()
        assert registry.supervisors(conn) == []
    finally:
        maintenance.before_fork()
        for shared in (table, breaker):
            shared.close()
            shared.unlink()


def test_a_refused_registry_write_never_stops_the_lease_renewal(
    conn, job_factory, database_url, tmp_path, caplog
):
    from health.heartbeat import HeartbeatTable
    from supervisor.arbiter.leases import Maintenance
    from supervisor.arbiter.registration import Registration
    from supervisor.config import Settings

    job = job_factory()
    conn.execute(
        "update generation_jobs set status = 'processing', locked_by = 'h/1', attempts = 1,"
        " heartbeat_at = now() - interval '20 seconds' where id = %s",
        (job["id"],),
    )
    conn.execute("alter table storyworker.supervisors rename to supervisors_elsewhere")
    table = HeartbeatTable.create(2, directory=str(tmp_path))
    settings = Settings(database_url=database_url, lease_seconds=30)
    maintenance = Maintenance(lambda: settings, Registration(table, None, lambda: settings))
    try:
        maintenance.tick(0.0, [("h/1", str(job["id"]))])
        maintenance.tick(20.0, [("h/1", str(job["id"]))])
    finally:
        maintenance.before_fork()
        table.close()
        table.unlink()
    age = conn.execute(
        "select extract(epoch from now() - heartbeat_at) as s from generation_jobs where id = %s",
        (job["id"],),
    ).fetchone()["s"]
    assert age < 5 and not maintenance.outage
    refused = [r for r in caplog.records if "process registry write refused" in r.getMessage()]
    assert len(refused) == 1  # said once


def test_draining_is_published_at_once_and_worker_changes_at_most_every_2s(
    conn, database_url, tmp_path
):
    """`status` must stop saying `running` as soon as the supervisor drains: its own
    state is published on the next pass, while its workers' changes wait for
    PUBLISH_SECONDS."""
    from health.heartbeat import HeartbeatTable, SupervisorState, WorkerState
    from supervisor.arbiter.registration import Registration
    from supervisor.config import Settings

    table = HeartbeatTable.create(2, directory=str(tmp_path))
    try:
        table.set_supervisor(state=SupervisorState.RUNNING, expected_workers=1)
        table.reset_slot(0, pid=1, state=WorkerState.IDLE, restarts=0)
        settings = Settings(database_url=database_url, lease_seconds=30)
        now = [100.0]
        registration = Registration(table, None, lambda: settings, clock=lambda: now[0])
        registration.beat(conn)
        table.update_slot(0, state=WorkerState.BUSY)
        assert not registration.changed(now[0] + 0.5)  # a worker's change waits
        table.set_supervisor(state=SupervisorState.DRAINING)
        assert registration.changed(now[0] + 0.5)  # the supervisor's does not
        registration.beat(conn)
        (row,) = registry.supervisors(conn)
        assert row["state"] == "draining"
    finally:
        table.close()
        table.unlink()
