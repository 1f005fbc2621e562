"""A worker process: boots, then claims jobs one at a time until asked to stop.

It is forked by the supervisor with nothing but configuration and the heartbeat
table; it opens its own database connection and provider after the fork. It exits
when asked (SIGTERM: after the current job; SIGQUIT: at once, releasing its job), when
its supervisor dies, or with CANNOT_BOOT when it cannot even start. Running one job is
`runner.JobRunner`'s; this module is the process around it: signals, heartbeat,
connection and reconnection, and the wait for work.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn, Protocol

import psycopg
from setproctitle import setproctitle

from generation import providers
from generation.errors import GenerationError
from generation.types import CallRecord, ProviderHooks
from health.breaker import Breaker
from health.heartbeat import HeartbeatTable, WorkerState, current_rss_bytes
from health.lifecycle import die_with_parent
from supervisor import exitcodes, metrics
from supervisor.config import Settings
from supervisor.db import queue, sql
from supervisor.db.backoff import Backoff
from supervisor.db.connection import connect_for
from supervisor.db.jobs import Claim, owner_name
from supervisor.db.queue import WorkerQueue
from supervisor.errors import DatabaseError, StatementError
from supervisor.logs import fields
from supervisor.redact import redact
from supervisor.signals import unblock_signals
from supervisor.worker import live
from supervisor.worker.listener import Mode, Waiter, Wake, wakeups_for
from supervisor.worker.providers import build_provider, rate_limits
from supervisor.worker.runner import Abandon, JobRunner, Settled, Tally
from supervisor.worker.watch import CallWatch

log = logging.getLogger(__name__)

#: How often a paused worker looks at the breaker again.
PAUSE_SLICE_SECONDS = 1.0


class ConnectionLost(GenerationError):
    """lost the database connection while writing; will resume from the checkpoint"""

    retryable = True


class Wakeup(Protocol):
    """How an idle worker waits for work (`listener.Waiter`, or a host-level one)."""

    def start(self, listen: bool = True) -> Mode: ...
    def busy(self) -> None: ...
    def wait(self, should_stop: Callable[[], bool], on_slice: Callable[[], None]) -> None: ...


#: Builds the wake-up for a fresh connection: (connection, poll seconds, probe sender).
WakeupFactory = Callable[[psycopg.Connection, float, Callable[[str, str], None]], Wakeup]


class Worker:
    def __init__(
        self,
        index: int,
        settings: Settings,
        table: HeartbeatTable,
        breaker: Breaker,
        make_wakeup: WakeupFactory = Waiter,
    ) -> None:
        self.index = index
        self.settings = settings
        self.table = table
        self.breaker = breaker
        self.make_wakeup = make_wakeup
        self.owner = owner_name(os.getpid())
        self.parent = os.getppid()
        self.stopping = False
        self.conn: psycopg.Connection | None = None
        #: The rate limit, by provider name (each provider has a limiter of its own).
        self.before_request: Callable[[str], None] = lambda provider: None
        #: A job held when the database connection broke; settled after reconnecting.
        self.orphan: Claim | None = None
        #: After a reconnect, until settled: the orphan and jobs claimed unawares.
        self.unsettled = False
        #: Waits between reconnect attempts, reset once a claim went through.
        self.backoff = Backoff()
        self.tally = Tally()
        self._beat_lock = threading.Lock()
        self.call_timeout = call_timeout_seconds(settings)

    # --- boot --------------------------------------------------------------------

    def boot(self) -> None:
        """Signals, title, provider, database, listener. Raises on a fatal problem."""
        self._install_signals()
        self._title("starting")
        self.table.update_slot(
            self.index, state=WorkerState.STARTING, rss_bytes=current_rss_bytes()
        )
        self.watch = CallWatch(lambda: self._beat(None))
        self.provider = build_provider(self.settings, hooks_for=self._hooks_for)
        self._check_provider()
        self._connect()
        self.runner = JobRunner(
            queue=WorkerQueue(self.conn, self.settings.max_jobs_per_user),
            provider=self.provider,
            owner=self.owner,
            max_retries=self.settings.max_retries,
            backoff_seconds=self.settings.retry_backoff_seconds,
            on_progress=self._progress,
            on_alive=self._alive,
            should_stop=lambda: self.stopping,
            on_provider_fault=self._provider_fault,
            # The same fault right after a passing probe is the jobs', not an outage.
            blame_provider=lambda error: not self.breaker.repeats(str(error)),
            tally=self.tally,
            budget_tokens=self.settings.context_budget_tokens,
            live_text=live.factory(self.settings, lambda: self._beat(None, live_warnings_delta=1)),
        )

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(-1)  # the supervisor's self-pipe is not ours
        signal.signal(signal.SIGTERM, self._handle_term)
        signal.signal(signal.SIGQUIT, self._handle_quit)
        for ignored in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(ignored, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        faulthandler.enable()  # SIGABRT from a supervisor that found us stuck: traceback
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
        unblock_signals()  # a TERM sent while we were starting lands in _handle_term now
        die_with_parent(signal.SIGQUIT)
        if os.getppid() != self.parent:  # the supervisor died before prctl took effect
            raise Abandon

    def _handle_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _handle_quit(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        raise Abandon

    def _check_provider(self) -> None:
        """The key and the models, before anything is claimed. A rejected key or a
        model that does not exist stops the worker (CANNOT_BOOT), unless the pool is
        already paused for it: then this worker waits with the others."""
        try:
            self.provider.check()
        except GenerationError as exc:
            fatal = exc.provider_wide and not exc.retryable
            if fatal and not self.breaker.state().open:
                raise
            # Unreachable now is not fatal: jobs will retry, or the pause waits it out.
            log.warning("provider check failed; continuing", extra=fields(error=str(exc)))

    def _connect(self) -> None:
        """Connect (again), backing off after each failed attempt. Connecting is not
        the end of a reconnect cycle: the back-off goes on until a claim succeeds."""
        while not self.stopping:
            try:
                self._open()
                return
            except DatabaseError as exc:
                self._back_off("database unavailable; retrying", exc)

    def _open(self) -> None:
        self.conn = connect_for(self.settings, f"worker {self.index}")
        if hasattr(self, "runner"):  # a reconnect
            self.runner.queue = WorkerQueue(self.conn, self.settings.max_jobs_per_user)
        self.wakeup = self.make_wakeup(
            self.conn, self.settings.poll_interval_ms / 1000, self._notify
        )
        mode = self.wakeup.start(self.settings.listen)
        self.table.update_slot(self.index, pickup=mode.value)
        self.before_request = rate_limits(self.conn, self.settings)
        log.info(
            "worker connected",
            extra=fields(worker=self.index, pickup=mode.value, attempt=self.backoff.failures),
        )

    def _back_off(self, what: str, exc: DatabaseError) -> None:
        """One failed attempt: say so (one line), drop the connection, wait."""
        delay = self.backoff.failed()
        log.warning(
            what,
            extra=fields(
                worker=self.index,
                attempt=self.backoff.failures,
                retry_in_s=round(delay, 2),
                error=str(exc),
            ),
        )
        self._close()
        self._idle_sleep(delay)

    def _notify(self, channel: str, payload: str) -> None:
        """NOTIFY from a short-lived connection of its own (the LISTEN probe)."""
        purpose = f"worker {self.index} probe"
        with connect_for(self.settings, purpose, short_lived=True) as conn:
            sql.one(conn, "notify", {"channel": channel, "payload": payload})

    # --- loop --------------------------------------------------------------------

    def run(self) -> None:
        """Claim and run jobs until asked to stop."""
        try:
            while not self.stopping:
                self._check_parent()
                self._beat(WorkerState.IDLE)
                self._title("idle")  # also before the first job, and after a pause
                self._run_once()
        finally:
            # A job claimed together with the last one's finish, never started.
            if self.runner.next_claim is not None:
                self.runner.release(self.runner.next_claim)

    def _run_once(self) -> None:
        if self.breaker.state().open:
            self._paused()
            return
        runner = self.runner
        try:
            if self.unsettled:
                self._settle()
            claim, runner.next_claim = runner.next_claim or runner.queue.claim(self.owner), None
            self.backoff.succeeded()
            if claim is None:
                self.wakeup.wait(lambda: self.stopping, lambda: self._beat(WorkerState.IDLE))
                return
            self.run_job(claim)
        except DatabaseError as exc:
            # A refusal outside a job's own failure (the claim, a settlement) is not a
            # lost connection, whatever is done about it: the log says which.
            refused = isinstance(exc, StatementError)
            what = "database refused a statement" if refused else "database connection lost"
            self._title("idle")
            self.unsettled = True
            self._back_off(what, exc)
            self._connect()

    def _settle(self) -> None:
        """After a reconnect: requeue the job that was running when the connection
        broke (if still ours), then give back any job the database says this worker
        holds that it does not know of: a claim (or finish-and-claim) that committed
        but whose reply was lost. Nobody renews their leases; without this they would
        wait for a rescue and lose an attempt. A connection lost again raises (what is
        unsettled stays so, for the next cycle); a refusal leaves the job to
        `release_owner` or, failing that, to its lease."""
        claim = self.orphan
        if claim is not None:
            try:
                self.runner.fail(claim, ConnectionLost())
            except StatementError as exc:
                log.warning(
                    "could not settle the interrupted job",
                    extra=fields(worker=self.index, job_id=claim.job_id, error=str(exc)),
                )
            self.orphan = None
        try:
            strays = queue.release_owner(self.conn, self.owner)
        except StatementError as exc:
            log.warning("could not settle unknown jobs", extra=fields(error=str(exc)))
            strays = []
        self.unsettled = False
        for stray in strays:
            log.warning(
                "job released: claimed by this worker but its reply was lost",
                extra=fields(worker=self.index, job_id=stray.job_id),
            )

    def run_job(self, claim: Claim) -> None:
        """Run one claimed job to its end; any failure is recorded on the job."""
        log.info(
            "job claimed",
            extra=fields(job_id=claim.job_id, attempt=claim.attempt, worker=self.index),
        )
        self._beat(WorkerState.BUSY, job_id=str(claim.job_id), progress=0)
        self._title(f"busy job={claim.job_id} 0%")
        try:
            self.wakeup.busy()
            settled = self.runner.run(claim)
        except DatabaseError:
            self.orphan = claim
            self.table.update_slot(self.index, state=WorkerState.IDLE, job_id=None, progress=0)
            raise
        self.table.update_slot(
            self.index,
            state=WorkerState.IDLE,
            job_id=None,
            progress=0,
            completed_delta=int(settled is Settled.COMPLETED),
            failed_delta=int(settled is Settled.FAILED),
        )
        self._title("idle")

    # --- the provider's faults ---------------------------------------------------

    def _provider_fault(self, error: GenerationError) -> None:
        if self.breaker.trip(redact(str(error))):  # shown by /health and `status`
            log.error(
                "the provider is at fault; every worker pauses until a probe passes",
                extra=fields(worker=self.index, error=str(error)),
            )

    def _paused(self) -> None:
        """Claim nothing while the breaker is open; probe when it is this one's turn."""
        if self.runner.next_claim is not None:
            self.runner.release(self.runner.next_claim)
            self.runner.next_claim = None
        self._beat(WorkerState.PAUSED, job_id=None, progress=0)
        self._title("paused (provider at fault)")
        if self.breaker.take_probe(os.getpid()):
            self._probe()
        else:
            self._idle_sleep(PAUSE_SLICE_SECONDS)

    def _probe(self) -> None:
        try:
            self.provider.check()
        except GenerationError as exc:
            wait = self.breaker.probe_failed(redact(str(exc)) if exc.provider_wide else "")
            log.info(
                "the provider is still at fault",
                extra=fields(worker=self.index, next_probe_in_s=round(wait), error=str(exc)),
            )
            return
        except Exception:  # a bug in the probe must not wedge the pool open
            self.breaker.probe_failed("")
            raise
        was = self.breaker.probe_passed()
        log.warning(
            "the provider is available again; resuming",
            extra=fields(worker=self.index, paused_s=round(time.time() - was.opened_at)),
        )

    # --- small helpers -----------------------------------------------------------

    def _hooks_for(self, provider: str) -> ProviderHooks:
        return ProviderHooks(
            before_request=lambda: self._before_request(provider), on_call=self._on_call
        )

    def _before_request(self, provider: str) -> None:
        self._beat(None)
        self.watch.begin(self.call_timeout)
        self.before_request(provider)

    def _alive(self) -> None:
        """Text is streaming: the request is alive, and its deadline moves on."""
        self._beat(None)
        self.watch.begin(self.call_timeout)

    def _on_call(self, record: CallRecord) -> None:
        self.watch.end()
        metrics.record_call(record)
        self.tally.add(record)

    def _progress(self, claim: Claim, progress: int) -> None:
        self._beat(WorkerState.BUSY, progress=progress)
        self._title(f"busy job={claim.job_id} {progress}%")

    def _beat(self, state: WorkerState | None, **changes: object) -> None:
        # The call watch beats from its own thread: one writer at a time per slot.
        with self._beat_lock:
            self.table.update_slot(
                self.index, state=state, rss_bytes=current_rss_bytes(), **changes
            )

    def _title(self, what: str) -> None:
        setproctitle(f"storyworker: worker {self.index} {what}")

    def _check_parent(self) -> None:
        if os.getppid() != self.parent:
            log.warning("supervisor is gone; exiting", extra=fields(worker=self.index))
            self.stopping = True
            raise Abandon

    def _idle_sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            self._beat(None)
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def _close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                log.debug("closing a broken connection failed", exc_info=True)
        self.conn = None


def call_timeout_seconds(settings: Settings) -> float:
    """How long one provider request may block: its per-request timeout; with a
    fallback, one call may go to any of them, so the longest bounds it."""
    return max(
        providers.entry(name).call_timeout(settings.options(name))
        for name in settings.providers_in_use
    )


def worker_main(
    index: int, settings: Settings, table: HeartbeatTable, breaker: Breaker, wake: Wake = None
) -> NoReturn:
    """Entry point in the forked child; never returns. `wake`: the host listener's pipe."""
    code = exitcodes.OK
    worker = Worker(index, settings, table, breaker, wakeups_for(wake, table, index))
    try:
        try:
            worker.boot()
        except Abandon:
            raise
        except GenerationError as exc:  # the provider says no: one line says why
            log.critical("worker cannot boot", extra=fields(worker=index, error=str(exc)))
            code = exitcodes.CANNOT_BOOT
        except Exception:
            log.critical("worker cannot boot", exc_info=True, extra=fields(worker=index))
            code = exitcodes.CANNOT_BOOT
        else:
            worker.run()
    except Abandon:
        log.info("worker abandoned its work", extra=fields(worker=index))
    except Exception:
        log.critical("worker crashed", exc_info=True, extra=fields(worker=index))
        code = exitcodes.FAILURE
    table.update_slot(
        index, state=WorkerState.STOPPING if code == 0 else WorkerState.DEAD, job_id=None
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
