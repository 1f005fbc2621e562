"""The idle worker's Waiter against a real PostgreSQL: it listens only while idle."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from supervisor.db.connection import connect
from supervisor.db.listen import CHANNEL
from supervisor.worker.listener import Mode, Waiter


@pytest.fixture
def worker_conn(database_url):
    with connect(database_url) as conn:
        yield conn


@pytest.fixture
def waiter(worker_conn, database_url):
    def send_probe(channel: str, payload: str) -> None:
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("select pg_notify(%s, %s)", (channel, payload))

    waiter = Waiter(worker_conn, poll_interval=30.0, send_probe=send_probe, slice_seconds=0.2)
    assert waiter.start() is Mode.LISTEN
    return waiter


def channels(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("select pg_listening_channels() as channel").fetchall()
    return [r["channel"] for r in rows]


def waited(waiter: Waiter) -> float:
    started = time.monotonic()
    waiter.wait(lambda: False, lambda: None)
    return time.monotonic() - started


def notify_soon(database_url: str, delay: float) -> threading.Thread:
    def send() -> None:
        time.sleep(delay)
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("select pg_notify(%s, 'job')", (CHANNEL,))

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_a_busy_worker_does_not_listen(waiter, worker_conn):
    assert channels(worker_conn) == [CHANNEL]
    waiter.busy()
    assert channels(worker_conn) == []
    waiter.busy()  # twice is harmless
    assert channels(worker_conn) == []


def test_the_first_wait_after_a_job_listens_and_returns_for_one_more_claim(
    waiter, worker_conn, database_url
):
    waiter.busy()
    # A job inserted while the worker was busy notified nobody: claim once more first.
    assert waited(waiter) < 0.5
    assert channels(worker_conn) == [CHANNEL]
    # Now listening: the next wait blocks until a NOTIFY arrives, and not much longer.
    sender = notify_soon(database_url, 0.5)
    assert 0.4 < waited(waiter) < 5
    sender.join()


def test_notifies_received_while_listening_do_not_wake_the_next_idle_spell(
    waiter, worker_conn, database_url
):
    notify_soon(database_url, 0).join()
    waiter.busy()  # claimed a job: what arrived meanwhile is stale
    assert waited(waiter) < 0.5  # the re-listen pass
    sender = notify_soon(database_url, 0.5)
    assert waited(waiter) > 0.4  # not woken by the stale NOTIFY
    sender.join()


def test_polling_mode_never_listens(worker_conn):
    waiter = Waiter(worker_conn, poll_interval=0.3, send_probe=lambda c, p: None)
    assert waiter.start(listen=False) is Mode.POLL
    waiter.busy()
    assert 0.25 < waited(waiter) < 2
    assert channels(worker_conn) == []


def test_other_notifications_before_the_probe_do_not_make_it_poll(worker_conn, database_url):
    # A sibling's probe and a new job's NOTIFY arrive first (issue 13, item 5).
    def send_probe(channel: str, payload: str) -> None:
        with psycopg.connect(database_url, autocommit=True) as other:
            for noise in ("probe:someone-else", "a-new-job-id"):
                other.execute("select pg_notify(%s, %s)", (channel, noise))
            other.execute("select pg_notify(%s, %s)", (channel, payload))

    waiter = Waiter(worker_conn, poll_interval=30.0, send_probe=send_probe)
    assert waiter.start() is Mode.LISTEN
    assert channels(worker_conn) == [CHANNEL]


def test_a_probe_that_never_comes_back_polls_and_stops_listening(worker_conn):
    # Behind a transaction pooler the NOTIFY is accepted but never delivered.
    waiter = Waiter(worker_conn, poll_interval=30.0, send_probe=lambda channel, payload: None)
    assert waiter.start() is Mode.POLL
    assert channels(worker_conn) == []
