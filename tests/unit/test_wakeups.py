"""The host listener's wake-ups: one byte, one worker; the workers' wait; the listener's
pump (a fake connection), without a database."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import pytest

from supervisor.arbiter.listener import HostListener, State
from supervisor.config import Settings
from supervisor.errors import ConnectionLostError
from supervisor.wakeups import WakeChannel
from supervisor.worker.listener import HostWakeup, Mode


@pytest.fixture
def channel():
    wake = WakeChannel()
    yield wake
    wake.close()


def fork_waiters(channel: WakeChannel, n: int, seconds: float) -> list[int]:
    """`n` child processes each waiting `seconds` for one wake-up; exit 1 if it got one."""
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            channel.in_worker()
            os._exit(int(channel.take(seconds)))
        pids.append(pid)
    return pids


def test_one_wakeup_wakes_one_of_eight_waiting_processes(channel):
    pids = fork_waiters(channel, 8, seconds=1.5)
    time.sleep(0.3)  # all of them blocked in select()
    assert channel.wake(most=8)
    woken = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids)
    assert woken == 1


def test_three_wakeups_wake_three(channel):
    pids = fork_waiters(channel, 8, seconds=1.5)
    time.sleep(0.3)
    for _ in range(3):
        assert channel.wake(most=8)
    woken = sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids)
    assert woken == 3


def test_wakeups_nobody_took_wait_in_the_pipe_but_no_more_than_asked(channel):
    assert [channel.wake(most=2) for _ in range(5)] == [True, True, False, False, False]
    assert channel.pending() == 2
    assert channel.take(0) and channel.take(0)
    assert not channel.take(0.05)  # empty: waited, nothing came


def test_the_listening_flag_is_shared_with_children(channel):
    channel.set_listening(True)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        deadline = time.monotonic() + 2
        while channel.listening and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(0 if not channel.listening else 1)
    channel.set_listening(False)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


# --- the worker's side --------------------------------------------------------------


def test_host_wakeup_returns_when_woken(channel):
    channel.set_listening(True)
    wakeup = HostWakeup(channel, poll_interval=5.0, slice_seconds=0.1)
    assert wakeup.start() is Mode.LISTEN
    channel.wake(most=1)
    started = time.monotonic()
    wakeup.wait(lambda: False, lambda: None)
    assert time.monotonic() - started < 0.5
    assert wakeup.wakeups == 1


def test_host_wakeup_polls_and_follows_the_listener_up_and_down(channel):
    modes: list[Mode] = []
    slices: list[float] = []
    wakeup = HostWakeup(channel, poll_interval=0.3, on_mode=modes.append, slice_seconds=0.05)
    assert wakeup.start() is Mode.POLL  # the listener is not up
    channel.set_listening(True)
    started = time.monotonic()
    wakeup.wait(lambda: False, lambda: slices.append(time.monotonic()))
    assert 0.25 < time.monotonic() - started < 1  # the poll interval, no wake-up came
    assert len(slices) >= 3  # the heartbeat was beaten while waiting
    channel.set_listening(False)
    wakeup.wait(lambda: False, lambda: None)
    assert modes == [Mode.LISTEN, Mode.POLL]


def test_host_wakeup_stops_when_asked(channel):
    wakeup = HostWakeup(channel, poll_interval=30.0, slice_seconds=0.05)
    wakeup.start()
    deadline = time.monotonic() + 0.2
    wakeup.wait(lambda: time.monotonic() > deadline, lambda: None)
    assert time.monotonic() - deadline < 0.3


# --- the supervisor's side, with a fake connection ----------------------------------


@dataclass
class Note:
    payload: str


@dataclass
class FakeConnection:
    batches: list[list[str]] = field(default_factory=list)
    broken: bool = False
    closed: bool = False

    def notifies(self, timeout: float | None = None):
        if self.broken:
            import psycopg

            raise psycopg.OperationalError("server closed the connection unexpectedly")
        batch = self.batches.pop(0) if self.batches else []
        return iter([Note(p) for p in batch])

    def close(self) -> None:
        self.closed = True


def listener_on(channel: WakeChannel, conn: FakeConnection, concurrency: int = 8) -> HostListener:
    settings = Settings(database_url="postgresql://u@h/db", concurrency=concurrency)
    listener = HostListener(lambda: settings, channel)
    listener._conn = conn  # as if connected and proven
    listener.state = State.LISTENING
    channel.set_listening(True)
    return listener


def test_one_wakeup_per_job_notification_and_none_for_probes(channel):
    conn = FakeConnection([["job-1", "probe:someone-else", "job-2"], ["job-3"]])
    listener = listener_on(channel, conn)
    assert listener.pump() == 3
    assert channel.pending() == 3


def test_a_burst_writes_no_more_wakeups_than_there_are_workers(channel):
    conn = FakeConnection([[f"job-{i}" for i in range(100)]])
    listener = listener_on(channel, conn, concurrency=4)
    assert listener.pump() == 4
    assert channel.pending() == 4


def test_a_lost_connection_is_said_once_and_workers_poll_meanwhile(channel, caplog):
    conn = FakeConnection(broken=True)
    listener = listener_on(channel, conn)
    assert listener.pump() == 0
    assert listener.state is State.LOST and not channel.listening and conn.closed
    # Reconnecting fails too: nothing more is said, and the retries back off.
    listener._conn = FakeConnection(broken=True)
    listener.pump()
    lost = [r for r in caplog.records if "host listener lost" in r.getMessage()]
    assert len(lost) == 1
    assert listener._delay > 0.5


def test_before_fork_closes_the_connection_and_keeps_the_workers_mode(channel):
    conn = FakeConnection()
    listener = listener_on(channel, conn)
    listener.before_fork()
    assert conn.closed and listener._conn is None
    assert channel.listening  # a blip, not an outage
    assert listener.state is State.STARTING


def test_connection_lost_errors_are_database_errors():
    # HostListener.tick and pump catch DatabaseError: a lost connection is one.
    from supervisor.errors import DatabaseError

    assert issubclass(ConnectionLostError, DatabaseError)


def test_a_worker_says_it_polls_once_not_on_every_reconnect(channel, caplog):
    from health.heartbeat import HeartbeatTable
    from supervisor.worker.listener import wakeups_for

    table = HeartbeatTable.create(2)
    try:
        make = wakeups_for(channel, table, 0)  # as in a worker: closes the write end
        channel.write_fd = -1  # so that the fixture does not close that number again
        for _ in range(3):  # the first connection, then two reconnects
            assert make(None, 1.0, lambda c, p: None).start() is Mode.POLL
    finally:
        table.close()
        table.unlink()
    assert sum("polling instead" in r.getMessage() for r in caplog.records) == 1
