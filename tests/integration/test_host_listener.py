"""The supervisor's host listener against a real PostgreSQL: it proves LISTEN, turns each
job's NOTIFY into one wake-up, and comes back by itself after its backend is killed."""

from __future__ import annotations

import time

import psycopg
import pytest

from supervisor.arbiter.listener import HostListener, State
from supervisor.arbiter.procs import SignalQueue
from supervisor.config import Settings
from supervisor.db.listen import CHANNEL
from supervisor.wakeups import WakeChannel


@pytest.fixture
def channel():
    wake = WakeChannel()
    yield wake
    wake.close()


@pytest.fixture
def listener(database_url, channel):
    settings = Settings(database_url=database_url, concurrency=8)
    host = HostListener(lambda: settings, channel)
    yield host
    host.close()


def notify(conn: psycopg.Connection, payload: str) -> None:
    conn.execute("select pg_notify(%s, %s)", (CHANNEL, payload))


def drain(channel: WakeChannel) -> int:
    taken = 0
    while channel.take(0):
        taken += 1
    return taken


def listener_pid(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        "select pid from pg_stat_activity where application_name = 'storyworker listener'"
        " and datname = current_database()"
    ).fetchone()
    return row["pid"] if row else None


def test_it_proves_listen_and_wakes_one_worker_per_job(listener, channel, conn):
    listener.tick(time.monotonic())
    assert listener.state is State.LISTENING and channel.listening
    drain(channel)  # the wake-up that follows every (re)connect
    signals = SignalQueue()
    for payload in ("job-1", "job-2", "probe:other-host"):
        notify(conn, payload)
    listener.wait(signals, 0.3)
    assert drain(channel) == 2


def test_the_loops_wait_returns_on_time_without_notifications(listener):
    listener.tick(time.monotonic())
    started = time.monotonic()
    listener.wait(SignalQueue(), 0.3)
    assert 0.25 < time.monotonic() - started < 1


def test_killed_backend_is_noticed_and_listen_comes_back(listener, channel, conn):
    listener.tick(time.monotonic())
    pid = listener_pid(conn)
    assert pid is not None
    conn.execute("select pg_terminate_backend(%s)", (pid,))
    listener.wait(SignalQueue(), 1.0)  # the socket says the server closed it
    assert listener.state is State.LOST and not channel.listening
    drain(channel)
    listener.tick(time.monotonic() + 1)  # the retry is due
    assert listener.state is State.LISTENING and channel.listening
    assert listener_pid(conn) not in (None, pid)
    assert drain(channel) == 1  # one catch-up wake-up: a job may have come meanwhile
    notify(conn, "job-after")
    listener.wait(SignalQueue(), 0.3)
    assert drain(channel) == 1


def test_a_probe_that_never_arrives_means_polling_for_good(database_url, channel, conn):
    # A LISTEN that is accepted and never delivered (a transaction pooler): here, a
    # DATABASE_LISTEN_URL on another database, where the probe NOTIFY never arrives.
    other = conn.execute("select 'template1' as name").fetchone()["name"]
    listen_url = psycopg.conninfo.make_conninfo(database_url, dbname=other)
    settings = Settings(database_url=database_url, database_listen_url=listen_url)
    host = HostListener(lambda: settings, channel)
    host.tick(time.monotonic())
    assert host.state is State.UNAVAILABLE and not channel.listening
    host.tick(time.monotonic() + 60)  # never retried
    assert host.state is State.UNAVAILABLE
    host.close()
