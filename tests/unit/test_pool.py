"""The supervisor loop's decisions, driven step by step with fake processes and a
fake clock (the real thing runs as a real process in tests/acceptance)."""

from __future__ import annotations

import itertools
import signal
from dataclasses import dataclass, field

import pytest

from health.heartbeat import HeartbeatTable, WorkerState
from supervisor import exitcodes
from supervisor.arbiter.loop import LOOP_ERRORS_TO_GIVE_UP, Arbiter
from supervisor.arbiter.procs import Exit
from supervisor.config import Settings
from supervisor.db.jobs import owner_name
from tests.fakes import Clock, FakeProcesses


@dataclass
class FakeMaintenance:
    released: list[str] = field(default_factory=list)
    rescued: list[tuple[str, str]] = field(default_factory=list)
    owed: dict[str, str | None] = field(default_factory=dict)

    def before_fork(self) -> None: ...
    def tick(self, now: float, owners) -> None: ...

    def release(self, owner: str) -> None:
        self.released.append(owner)

    def rescue(self, owner: str, reason: str) -> None:
        self.rescued.append((owner, reason))


@pytest.fixture
def arbiter(tmp_path):
    table = HeartbeatTable.create(8, directory=str(tmp_path))
    clock = Clock()
    settings = Settings(concurrency=1, worker_timeout_seconds=10)
    arb = Arbiter(
        settings=settings,
        table=table,
        maintenance=FakeMaintenance(),
        reload_settings=lambda: settings,
        worker_main=lambda *a: None,
        processes=FakeProcesses(),
        clock=clock,
    )
    arb.target = 1
    arb.clock_ = clock
    yield arb
    table.unlink()


def crash(arb: Arbiter, code: int = 1) -> None:
    pid = arb.slots[0].pid
    arb.processes.exits.append(Exit(pid, code, None))
    arb.reap()


def test_a_crashing_worker_is_replaced_at_once_then_with_growing_delays(arbiter):
    arbiter.spawn_missing()
    delays = []
    for _ in range(6):
        crash(arbiter)
        waited = 0.0
        while arbiter.slots[0].pid is None:
            arbiter.spawn_missing()
            if arbiter.slots[0].pid is None:
                arbiter.clock_.now += 0.25
                waited += 0.25
        delays.append(waited)
    assert delays[0] == 0.0  # the first death is replaced at once
    assert delays == sorted(delays) and delays[-1] >= 8.0
    assert arbiter.slots[0].restarts == 6


def test_a_worker_that_lived_long_resets_the_backoff(arbiter):
    arbiter.spawn_missing()
    for _ in range(4):
        crash(arbiter)
        arbiter.clock_.now += 60
        arbiter.spawn_missing()
    arbiter.clock_.now += 60  # this one lived a minute
    crash(arbiter)
    arbiter.spawn_missing()
    assert arbiter.slots[0].pid is not None


def test_workers_that_cannot_boot_make_the_supervisor_give_up(arbiter):
    arbiter.spawn_missing()
    for _ in range(3):
        crash(arbiter, exitcodes.CANNOT_BOOT)
        arbiter.clock_.now += 60
        arbiter.spawn_missing()
    assert arbiter.exit_code == exitcodes.CANNOT_BOOT
    assert arbiter.stopping == "immediate"


def test_a_crash_rescues_its_job_and_a_requested_stop_releases_it(arbiter):
    arbiter.spawn_missing()
    first = arbiter.slots[0].pid
    arbiter.processes.exits.append(Exit(first, None, signal.SIGKILL))
    arbiter.reap()
    assert arbiter.maintenance.rescued[0][0] == owner_name(first)
    assert "killed by SIGKILL" in arbiter.maintenance.rescued[0][1]
    arbiter.spawn_missing()
    second = arbiter.slots[0].pid
    arbiter.handle_term()
    assert (second, signal.SIGTERM) in arbiter.processes.killed
    arbiter.processes.exits.append(Exit(second, 0, None))
    arbiter.reap()
    assert arbiter.maintenance.released == [owner_name(second)]
    assert arbiter.drive_shutdown() is True


def test_a_stale_worker_gets_sigabrt_then_sigkill(arbiter):
    arbiter.spawn_missing()
    pid = arbiter.slots[0].pid
    arbiter.table.reset_slot(0, pid=pid, state=WorkerState.BUSY, restarts=0, now=arbiter.clock_.now)
    arbiter.clock_.now += 5
    arbiter.kill_stale()
    assert arbiter.processes.killed == []
    arbiter.clock_.now += 6  # 11 s without a heartbeat, timeout is 10
    arbiter.kill_stale()
    assert arbiter.processes.killed == [(pid, signal.SIGABRT)]
    arbiter.clock_.now += 6
    arbiter.kill_stale()
    assert arbiter.processes.killed[-1] == (pid, signal.SIGKILL)


def test_grace_expiry_quits_then_kills(arbiter):
    arbiter.spawn_missing()
    pid = arbiter.slots[0].pid
    arbiter.handle_term()
    arbiter.clock_.now += arbiter.settings.shutdown_grace_seconds + 1
    assert arbiter.drive_shutdown() is False
    assert arbiter.processes.killed[-1] == (pid, signal.SIGQUIT) and arbiter.stopping == "immediate"
    arbiter.clock_.now += 6
    arbiter.drive_shutdown()
    assert arbiter.processes.killed[-1] == (pid, signal.SIGKILL)


def test_ttou_stops_the_highest_worker_and_it_is_not_replaced(arbiter):
    arbiter.target = 3
    arbiter.spawn_missing()
    top = arbiter.slots[2].pid
    arbiter.handle_ttou()
    assert arbiter.target == 2 and (top, signal.SIGTERM) in arbiter.processes.killed
    arbiter.processes.exits.append(Exit(top, 0, None))
    arbiter.reap()
    arbiter.spawn_missing()
    assert arbiter.slots[2].pid is None
    assert arbiter.table.worker(2).state == WorkerState.EMPTY


def test_a_bug_in_one_step_is_logged_and_the_supervisor_drains(arbiter, caplog):
    arbiter.spawn_missing()
    pid = arbiter.slots[0].pid

    def broken(now: float) -> None:
        raise RuntimeError("a bug in lease renewal")

    arbiter.tend_leases = broken
    assert arbiter.run_pass() is False  # the loop goes on, draining
    assert "unhandled exception in the main loop" in caplog.text
    assert "RuntimeError: a bug in lease renewal" in caplog.text  # with its traceback
    assert arbiter.stopping == "graceful" and arbiter.exit_code == exitcodes.FAILURE
    assert arbiter.processes.killed == [(pid, signal.SIGTERM)]
    # The worker leaves; the next passes (still failing) finish the shutdown.
    arbiter.processes.exits.append(Exit(pid, 0, None))
    arbiter.tend_leases = lambda now: None
    assert arbiter.run_pass() is True


def test_a_loop_that_keeps_failing_kills_its_workers_and_gives_up(arbiter):
    arbiter.spawn_missing()
    pid = arbiter.slots[0].pid

    def broken(now: float) -> None:
        raise RuntimeError("always")

    arbiter.tend_leases = broken
    passes = [arbiter.run_pass() for _ in range(LOOP_ERRORS_TO_GIVE_UP)]
    assert passes[-1] is True and not any(passes[:-1])
    assert (pid, signal.SIGKILL) in arbiter.processes.killed


def test_a_health_server_that_dies_at_once_is_restarted_with_growing_delays(tmp_path):
    table = HeartbeatTable.create(2, directory=str(tmp_path))
    clock, processes = Clock(), FakeProcesses()
    settings = Settings(concurrency=1)
    arb = Arbiter(
        settings=settings,
        table=table,
        maintenance=FakeMaintenance(),
        reload_settings=lambda: settings,
        worker_main=lambda *a: None,
        health_main=lambda: None,
        processes=processes,
        clock=clock,
    )
    arb.spawn_health()
    spawned_at = []
    for _ in range(6):  # it exits at once, every time (a port it cannot bind, say)
        processes.exits.append(Exit(arb.health.pid, 1, None))
        arb.reap()
        while arb.health.pid is None:
            arb.restart_health()
            clock.now += 0.25
        spawned_at.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(spawned_at)]
    assert gaps == sorted(gaps) and gaps[-1] >= 8  # not 619 restarts in 48 s
    assert arb.health.slot.restarts == 6
    table.unlink()


def test_a_worker_replaced_by_a_reload_is_not_counted_as_a_restart(arbiter):
    arbiter.spawn_missing()
    pid = arbiter.slots[0].pid
    arbiter.handle_hup()
    arbiter.table.update_slot(0, state=WorkerState.IDLE, now=arbiter.clock_.now)
    arbiter.kill_stale()  # notices the worker booted
    arbiter.spawn_missing()  # rolls the reload: asks the worker to go
    assert (pid, signal.SIGTERM) in arbiter.processes.killed
    arbiter.processes.exits.append(Exit(pid, 0, None))
    arbiter.reap()
    arbiter.spawn_missing()
    assert arbiter.slots[0].pid != pid and arbiter.slots[0].restarts == 0
    crash(arbiter)
    arbiter.spawn_missing()
    assert arbiter.slots[0].restarts == 1  # a crash still counts
