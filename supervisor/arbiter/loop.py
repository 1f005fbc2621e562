"""The supervisor's loop: one thread, fixed steps, each a short method.

    handle signals → reap children → kill stale workers → maintain → spawn → wait

One catch-all guards each pass: a bug in any step is logged with its traceback and
the supervisor drains (a graceful shutdown) instead of leaving its workers orphaned.

The supervisor never calls the LLM and never runs a job; workers never fork. All
fork/kill/wait calls go through `Processes`, so the loop can be driven with fakes.
"""

from __future__ import annotations

import enum
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from health.heartbeat import HeartbeatTable, SupervisorState, WorkerState
from supervisor import exitcodes, logs
from supervisor.arbiter.health_child import HealthChild
from supervisor.arbiter.leases import Maintenance
from supervisor.arbiter.listener import HostListener, NoListener
from supervisor.arbiter.procs import Exit, Processes, SignalQueue
from supervisor.arbiter.slots import Slot
from supervisor.arbiter.systemd import Notifier
from supervisor.config import Settings
from supervisor.db.jobs import owner_name
from supervisor.logs import fields

log = logging.getLogger(__name__)

LOOP_SECONDS = 0.5
ABORT_TO_KILL_SECONDS = 5.0
QUIT_TO_KILL_SECONDS = 5.0
#: Consecutive workers dying before they booted, with none booting in between.
BOOT_FAILURES_TO_GIVE_UP = 3
#: Consecutive loop passes that raised before the supervisor stops trying to drain.
LOOP_ERRORS_TO_GIVE_UP = 20
#: After the last worker exited, how long releases the database refused are retried
#: (at least; the rest of the grace period when longer).
RELEASE_RETRY_SECONDS = 10.0


class Stopping(enum.StrEnum):
    """How the supervisor is shutting down."""

    GRACEFUL = "graceful"  # TERM/INT: jobs may finish within the grace period
    IMMEDIATE = "immediate"  # QUIT, or the grace is over: release jobs now


@dataclass
class Arbiter:
    settings: Settings
    table: HeartbeatTable
    maintenance: Maintenance
    reload_settings: Callable[[], Settings]
    worker_main: Callable[[int, Settings, HeartbeatTable], NoReturn]
    health_main: Callable[[], NoReturn] | None = None
    #: Where the health server writes the address it bound (None: probe the settings').
    health_address_file: str | None = None
    processes: Processes = field(default_factory=Processes)
    #: The host's one LISTEN for new jobs (NoListener: plain polling, or tests).
    listener: HostListener | NoListener = field(default_factory=NoListener)
    signals: SignalQueue = field(default_factory=SignalQueue)
    notifier: Notifier = field(default_factory=lambda: Notifier(None, None))
    clock: Callable[[], float] = time.monotonic
    slots: dict[int, Slot] = field(default_factory=dict)
    target: int = 0
    stopping: Stopping | None = None
    deadline: float = 0.0
    reload_queue: list[int] = field(default_factory=list)
    boot_failures: int = 0
    exit_code: int = exitcodes.OK
    ready_sent: bool = False
    loop_errors: int = 0
    #: Until when releases still owed at shutdown are retried (set once they are).
    release_deadline: float | None = None

    def __post_init__(self) -> None:
        self.health = HealthChild(self.health_main, self.health_address_file)

    # --- life cycle --------------------------------------------------------------

    def run(self) -> int:
        """Supervise until shut down; return the process exit code."""
        self.signals.install()
        self.target = self.settings.concurrency
        self.table.set_supervisor(state=SupervisorState.STARTING, expected_workers=self.target)
        log.info(
            "supervisor starting",
            extra=fields(workers=self.target, provider=self.settings.provider),
        )
        self.spawn_health()
        while not self.run_pass():
            self.listener.wait(self.signals, LOOP_SECONDS)
        self.listener.close()
        self.stop_health()
        self.table.set_supervisor(state=SupervisorState.STOPPED)
        log.info("supervisor stopped", extra=fields(exit_code=self.exit_code))
        return self.exit_code

    def run_pass(self) -> bool:
        """One pass of the loop; True once the supervisor may exit. Never raises."""
        try:
            self.handle_signals()
            self.reap()
            self.kill_stale()
            self.maintain()
            if self.stopping and self.drive_shutdown():
                return True
            if not self.stopping:
                self.spawn_missing()
        except Exception:
            log.error("unhandled exception in the main loop; draining", exc_info=True)
            return self.after_loop_error()
        self.loop_errors = 0
        return False

    def after_loop_error(self) -> bool:
        """Drain after a bug; kill everything if even draining keeps failing."""
        self.exit_code = exitcodes.FAILURE
        self.loop_errors += 1
        if self.loop_errors >= LOOP_ERRORS_TO_GIVE_UP:
            log.critical("the main loop keeps failing; killing every worker")
            for slot in self.live_slots():
                self.processes.kill(slot.pid, signal.SIGKILL)
            return True
        if self.stopping is None:
            self.handle_term()
        return False

    # --- signals -----------------------------------------------------------------

    def handle_signals(self) -> None:
        for sig in self.signals.drain():
            handler = {
                signal.SIGTERM: self.handle_term,
                signal.SIGINT: self.handle_term,
                signal.SIGQUIT: self.handle_quit,
                signal.SIGHUP: self.handle_hup,
                signal.SIGTTIN: self.handle_ttin,
                signal.SIGTTOU: self.handle_ttou,
            }.get(sig)
            if handler is not None:
                log.info("signal received", extra=fields(signal=signal.Signals(sig).name))
                handler()

    def handle_term(self) -> None:
        if self.stopping:
            self.handle_quit()
            return
        self.begin_shutdown(Stopping.GRACEFUL)
        self.deadline = self.clock() + self.settings.shutdown_grace_seconds
        for slot in self.live_slots():
            self.ask_to_stop(slot, signal.SIGTERM)

    def handle_quit(self) -> None:
        if self.stopping is not Stopping.IMMEDIATE:
            self.begin_shutdown(Stopping.IMMEDIATE)
            self.quit_all()

    def begin_shutdown(self, how: Stopping) -> None:
        if self.stopping is None:
            self.notifier.stopping()
            self.table.set_supervisor(state=SupervisorState.DRAINING)
        self.stopping = how
        log.info(
            "shutting down",
            extra=fields(mode=how.value, grace_s=self.settings.shutdown_grace_seconds),
        )

    def handle_hup(self) -> None:
        try:
            new = self.reload_settings()
        except Exception as exc:  # noqa: BLE001 - a bad reload keeps the old settings
            log.error(
                "reload failed; keeping the current configuration", extra=fields(error=str(exc))
            )
            return
        self.notifier.reloading()
        old, self.settings = self.settings, new
        logs.configure(new.log_level, new.log_format)
        self.target = new.concurrency
        self.table.set_supervisor(expected_workers=self.target)
        self.reload_queue = [s.index for s in self.live_slots()]
        if (old.port, old.health_host) != (new.port, new.health_host):
            self.health.replace(self.processes)  # the next one listens where told
            self.ready_sent = False
        log.info(
            "reloading workers one at a time",
            extra=fields(workers=self.target, replacing=len(self.reload_queue)),
        )

    def handle_ttin(self) -> None:
        self.target = min(self.target + 1, self.table.capacity)
        self.table.set_supervisor(expected_workers=self.target)
        log.info("scaling", extra=fields(workers=self.target))

    def handle_ttou(self) -> None:
        if self.target <= 1:
            return
        self.target -= 1
        self.table.set_supervisor(expected_workers=self.target)
        log.info("scaling", extra=fields(workers=self.target))
        slot = self.slots.get(self.target)
        if slot is not None and slot.pid is not None:
            self.ask_to_stop(slot, signal.SIGTERM)

    # --- children ----------------------------------------------------------------

    def live_slots(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.pid is not None]

    def ask_to_stop(self, slot: Slot, sig: int) -> None:
        slot.quitting = True
        if slot.pid is not None:
            self.processes.kill(slot.pid, sig)

    def quit_all(self) -> None:
        self.deadline = self.clock() + QUIT_TO_KILL_SECONDS
        for slot in self.live_slots():
            self.ask_to_stop(slot, signal.SIGQUIT)

    def reap(self) -> None:
        for ended in self.processes.reap():
            if ended.pid == self.health.pid:
                self.health.ended(ended.describe(), self.clock())
                continue
            slot = next((s for s in self.slots.values() if s.pid == ended.pid), None)
            if slot is not None:
                self.worker_ended(slot, ended)

    def worker_ended(self, slot: Slot, ended: Exit) -> None:
        now = self.clock()
        owner = owner_name(ended.pid)
        level = logging.INFO if slot.quitting and ended.clean else logging.WARNING
        log.log(
            level,
            "worker exited",
            extra=fields(worker=slot.index, pid=ended.pid, how=ended.describe()),
        )
        if slot.quitting:
            self.maintenance.release(owner)
        else:
            self.maintenance.rescue(
                owner, f"rescued: worker {slot.index} (pid {ended.pid}) {ended.describe()}"
            )
        self.count_boot_failure(slot, ended)
        slot.ended(now)
        state = (
            WorkerState.DEAD
            if slot.index < self.target and not self.stopping
            else WorkerState.EMPTY
        )
        self.table.reset_slot(slot.index, pid=0, state=state, restarts=slot.restarts)

    def count_boot_failure(self, slot: Slot, ended: Exit) -> None:
        if ended.code == exitcodes.CANNOT_BOOT and not slot.booted:
            self.boot_failures += 1
            if self.boot_failures >= BOOT_FAILURES_TO_GIVE_UP and not self.stopping:
                log.critical(
                    "workers cannot boot; giving up", extra=fields(failures=self.boot_failures)
                )
                self.exit_code = exitcodes.CANNOT_BOOT
                self.handle_quit()

    def spawn_missing(self) -> None:
        now = self.clock()
        self.roll_reload()
        for index in range(self.target):
            slot = self.slots.setdefault(index, Slot(index))
            if slot.due(now):
                self.spawn_worker(slot)

    def roll_reload(self) -> None:
        """Replace workers one at a time after HUP: the next goes when the last is back."""
        if not self.reload_queue or any(s.quitting or not s.booted for s in self.live_slots()):
            return
        slot = self.slots.get(self.reload_queue.pop(0))
        if slot is not None and slot.pid is not None:
            self.ask_to_stop(slot, signal.SIGTERM)

    def spawn_worker(self, slot: Slot) -> None:
        slot.restarts += bool(slot.started) and not slot.planned
        self.before_fork()
        settings, table, main = self.settings, self.table, self.worker_main
        self.table.reset_slot(slot.index, pid=0, state=WorkerState.STARTING, restarts=slot.restarts)
        pid = self.processes.spawn(
            lambda: main(slot.index, settings, table), self.signals.forget_in_child
        )
        slot.spawned(pid, self.clock())
        self.table.reset_slot(
            slot.index, pid=pid, state=WorkerState.STARTING, restarts=slot.restarts
        )
        log.info("worker spawned", extra=fields(worker=slot.index, pid=pid, restarts=slot.restarts))

    def spawn_health(self) -> None:
        if self.health.main is not None:
            self.before_fork()
            self.health.spawn(self.processes, self.signals.forget_in_child, self.clock())

    def before_fork(self) -> None:
        """No connection crosses a fork."""
        self.maintenance.before_fork()
        self.listener.before_fork()

    def kill_stale(self) -> None:
        now = self.clock()
        for slot in self.live_slots():
            snap = self.table.worker(slot.index)
            running = (WorkerState.IDLE, WorkerState.BUSY, WorkerState.PAUSED)
            if snap.state in running and not slot.booted:
                slot.booted = True
                self.boot_failures = 0
            age = snap.age(now)
            if slot.aborted_at is None and age > self.settings.worker_timeout_seconds:
                log.error(
                    "worker is stuck; aborting it",
                    extra=fields(
                        worker=slot.index,
                        pid=slot.pid,
                        heartbeat_age_s=round(age, 1),
                        job_id=snap.job_id,
                    ),
                )
                slot.aborted_at = now
                self.processes.kill(slot.pid, signal.SIGABRT)
            elif slot.aborted_at is not None and now - slot.aborted_at > ABORT_TO_KILL_SECONDS:
                self.processes.kill(slot.pid, signal.SIGKILL)

    # --- periodic work -----------------------------------------------------------

    def maintain(self) -> None:
        """The periodic steps: beat, host listener, leases, readiness and status,
        health server."""
        now = self.clock()
        self.beat(now)
        self.listener.tick(now)
        self.tend_leases(now)
        self.report_status()
        self.restart_health()

    def beat(self, now: float) -> None:
        """The supervisor's own heartbeat (table and systemd watchdog)."""
        self.table.set_supervisor()
        self.notifier.watchdog(now)

    def tend_leases(self, now: float) -> None:
        """Renew the leases of the jobs that workers with a fresh heartbeat say they
        hold; rescue expired ones."""
        held = []
        for slot in self.live_slots():
            snap = self.table.worker(slot.index)
            fresh = snap.age(now) < self.settings.worker_timeout_seconds
            if slot.aborted_at is None and fresh and snap.job_id:
                held.append((owner_name(slot.pid), snap.job_id))
        self.maintenance.tick(now, held)

    def report_status(self) -> None:
        """READY=1 once every worker booted and /health answers; STATUS= after that."""
        busy = sum(
            1 for s in self.live_slots() if self.table.worker(s.index).state == WorkerState.BUSY
        )
        status = f"{busy}/{self.target} workers busy" + (
            f", {self.stopping} shutdown" if self.stopping else ""
        )
        if (
            not self.ready_sent
            and not self.stopping
            and self.all_booted()
            and self.health.answers(self.settings.health_host, self.settings.port)
        ):
            self.ready_sent = True
            self.table.set_supervisor(state=SupervisorState.RUNNING)
            self.notifier.ready(status)
            log.info("supervisor ready", extra=fields(workers=self.target, port=self.settings.port))
        elif self.ready_sent:
            self.notifier.status(status)

    def restart_health(self) -> None:
        """Start the health server again if it died (not while shutting down)."""
        if not self.stopping and self.health.due(self.clock()):
            self.spawn_health()

    def all_booted(self) -> bool:
        slots = [self.slots.get(i) for i in range(self.target)]
        return all(s is not None and s.pid is not None and s.booted for s in slots)

    # --- shutdown ----------------------------------------------------------------

    def drive_shutdown(self) -> bool:
        """Advance the shutdown; True once every worker is gone and its jobs given
        back (or the time to give them back is over)."""
        now = self.clock()
        if not self.live_slots():
            return self.releases_settled(now)
        if now >= self.deadline:
            if self.stopping is Stopping.GRACEFUL:
                log.warning("grace period over; releasing unfinished jobs")
                self.stopping = Stopping.IMMEDIATE
                self.quit_all()
            else:
                for slot in self.live_slots():
                    self.processes.kill(slot.pid, signal.SIGKILL)
                self.deadline = now + QUIT_TO_KILL_SECONDS
        return False

    def releases_settled(self, now: float) -> bool:
        """Releases the database refused are retried by the maintenance step on each
        pass: wait for them within the grace period (RELEASE_RETRY_SECONDS at least)."""
        owed = len(self.maintenance.owed)
        if not owed:
            return True
        if self.release_deadline is None:
            self.release_deadline = max(self.deadline, now + RELEASE_RETRY_SECONDS)
            log.warning(
                "waiting for the database to release jobs",
                extra=fields(workers=owed, wait_s=round(self.release_deadline - now, 1)),
            )
        if now < self.release_deadline:
            return False
        log.error(
            "could not release jobs; they return to the queue when their lease expires",
            extra=fields(workers=owed),
        )
        return True

    def stop_health(self) -> None:
        self.health.stop(self.processes)
