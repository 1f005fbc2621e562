"""A worker process: claims jobs one at a time and writes their chapters.

It is forked by the pool with nothing but configuration and the heartbeat table; it
opens its own database connection and provider after the fork. It exits when asked
(SIGTERM: after the current job; SIGQUIT: at once, releasing its job), when its
supervisor dies, or with CANNOT_BOOT when it cannot even start.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

import psycopg
from setproctitle import setproctitle

from generation.errors import AuthenticationError, GenerationError
from generation.types import CallRecord, ProviderHooks
from generation.writer import SectionStats, write_chapter
from health.heartbeat import HeartbeatTable, WorkerState, current_rss_bytes
from supervisor import exitcodes, metrics
from supervisor.arbiter.procs import unblock_signals
from supervisor.config import Settings
from supervisor.db import queue
from supervisor.db.connection import connect
from supervisor.db.jobs import Claim
from supervisor.db.ratelimit import build_hook
from supervisor.errors import DatabaseError, LeaseLostError
from supervisor.logs import fields
from supervisor.worker.listener import Waiter
from supervisor.worker.providers import build_provider
from supervisor.worker.sink import ChapterSink, prepare

log = logging.getLogger("supervisor.worker.process")

PR_SET_PDEATHSIG = 1
RECONNECT_MAX_SECONDS = 30.0


class ConnectionLost(GenerationError):
    """lost the database connection while writing; will resume from the checkpoint"""

    retryable = True


class Abandon(BaseException):
    """SIGQUIT: drop the current job back to the queue and exit now."""


def owner_name(pid: int) -> str:
    """`locked_by` for the worker process `pid` on this host."""
    return f"{socket.gethostname()}/{pid}"


class Worker:
    def __init__(self, index: int, settings: Settings, table: HeartbeatTable) -> None:
        self.index = index
        self.settings = settings
        self.table = table
        self.owner = owner_name(os.getpid())
        self.parent = os.getppid()
        self.stopping = False
        self.conn: psycopg.Connection | None = None
        self.before_request: Callable[[], None] = lambda: None
        #: A job held when the database connection broke; settled after reconnecting.
        self.orphan: Claim | None = None
        #: The next job, claimed in the same transaction as the last one's finish.
        self.next_claim: Claim | None = None
        self.tokens = [0, 0]

    # --- boot --------------------------------------------------------------------

    def boot(self) -> None:
        """Signals, title, provider, database, listener. Raises on a fatal problem."""
        self._install_signals()
        self._title("starting")
        self.table.update_slot(
            self.index, state=WorkerState.STARTING, rss_bytes=current_rss_bytes()
        )
        hooks = ProviderHooks(before_request=self._before_request, on_call=self._on_call)
        self.provider = build_provider(self.settings, hooks)
        self._check_provider()
        self._connect()

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(-1)  # the supervisor's self-pipe is not ours
        signal.signal(signal.SIGTERM, self._handle_term)
        signal.signal(signal.SIGQUIT, self._handle_quit)
        for ignored in (
            signal.SIGINT,
            signal.SIGHUP,
            signal.SIGTTIN,
            signal.SIGTTOU,
            signal.SIGCHLD,
        ):
            signal.signal(ignored, signal.SIG_IGN if ignored != signal.SIGCHLD else signal.SIG_DFL)
        faulthandler.enable()  # SIGABRT from a supervisor that found us stuck: traceback
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
        unblock_signals()  # a TERM sent while we were starting lands in _handle_term now
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)
        if os.getppid() != self.parent:  # the supervisor died before prctl took effect
            raise Abandon

    def _handle_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _handle_quit(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        raise Abandon

    def _check_provider(self) -> None:
        try:
            self.provider.check()
        except AuthenticationError:
            raise
        except GenerationError as exc:
            # Unreachable now is not fatal: jobs will retry. A bad key is.
            log.warning("provider check failed; continuing", extra=fields(error=str(exc)))

    def _connect(self) -> None:
        """Connect (again), retrying with capped exponential backoff and jitter."""
        delay = 0.5
        while not self.stopping:
            try:
                self.conn = connect(
                    self.settings.require_database(),
                    application_name=f"storyworker worker {self.index}",
                    prepared_statements=self.settings.prepared_statements,
                )
                self.waiter = Waiter(self.conn, self.settings.poll_interval_ms / 1000, self._notify)
                mode = self.waiter.start(self.settings.listen)
                self.table.update_slot(self.index, pickup=mode.value)
                self.before_request = build_hook(self.conn, self.settings.ai_requests_per_minute)
                log.info("worker connected", extra=fields(worker=self.index, pickup=mode.value))
                return
            except DatabaseError as exc:
                log.warning(
                    "database unavailable; retrying",
                    extra=fields(worker=self.index, retry_in_s=round(delay, 1), error=str(exc)),
                )
                self._idle_sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS) * random.uniform(0.75, 1.0)

    def _notify(self, channel: str, payload: str) -> None:
        """NOTIFY from a short-lived connection of its own (the LISTEN probe)."""
        with connect(
            self.settings.require_database(),
            application_name=f"storyworker worker {self.index} probe",
            prepared_statements=False,
        ) as conn:
            conn.execute("select pg_notify(%s, %s)", (channel, payload))

    # --- loop --------------------------------------------------------------------

    def run(self) -> None:
        """Claim and run jobs until asked to stop."""
        try:
            while not self.stopping:
                self._check_parent()
                self._beat(WorkerState.IDLE)
                self._run_once()
        finally:
            # A job claimed together with the last one's finish, never started.
            if self.next_claim is not None:
                self._release(self.next_claim)

    def _run_once(self) -> None:
        try:
            claim, self.next_claim = self.next_claim or queue.claim(self.conn, self.owner), None
            if claim is None:
                self.waiter.wait(lambda: self.stopping, lambda: self._beat(WorkerState.IDLE))
                return
            self.run_job(claim)
        except DatabaseError as exc:
            log.warning("database connection lost", extra=fields(worker=self.index, error=str(exc)))
            self._reconnect()
            self._settle_orphan()

    def _settle_orphan(self) -> None:
        """Requeue the job that was running when the connection broke (if still ours)."""
        claim, self.orphan = self.orphan, None
        if claim is not None and self.conn is not None:
            self._fail(claim, ConnectionLost())

    def run_job(self, claim: Claim) -> None:
        """Run one claimed job to its end; any failure is recorded on the job."""
        started = time.monotonic()
        log.info(
            "job claimed",
            extra=fields(job_id=claim.job_id, attempt=claim.attempt, worker=self.index),
        )
        self._beat(WorkerState.BUSY, job_id=str(claim.job_id), progress=0)
        self._title(f"busy job={claim.job_id} 0%")
        try:
            self.waiter.busy()
            outcome = self._write(claim)
        except LeaseLostError as exc:
            outcome = "lost"
            log.info("job lost", extra=fields(job_id=claim.job_id, reason=str(exc)))
        except Abandon:
            self._release(claim)
            raise
        except DatabaseError:
            self.orphan = claim
            self.table.update_slot(self.index, state=WorkerState.IDLE, job_id=None, progress=0)
            raise
        except Exception as exc:  # noqa: BLE001 - the one catch-all: a failing job never stops a worker
            outcome = self._fail(claim, exc)
        elapsed = time.monotonic() - started
        metrics.JOBS.labels(outcome).inc()
        metrics.JOB_SECONDS.observe(elapsed)
        self.table.update_slot(
            self.index,
            state=WorkerState.IDLE,
            job_id=None,
            progress=0,
            completed_delta=int(outcome == "completed"),
            failed_delta=int(outcome == "failed"),
        )
        self._title("idle")

    def _write(self, claim: Claim) -> str:
        prepared = prepare(self.conn, claim)
        prefs = prepared.request.preferences
        sink = ChapterSink(
            conn=self.conn,
            claim=claim,
            total_sections=prefs.bullet_count,
            content_length=prepared.content_length,
            outline=prepared.checkpoint.outline,
            on_progress=lambda p: self._progress(claim, p),
            on_alive=lambda: self._beat(None),
        )
        sink.on_section_done = self._timed(sink.on_section_done, claim)  # type: ignore[method-assign]
        result = write_chapter(
            prepared.request,
            self.provider,
            prepared.checkpoint,
            sink,
            written_text=prepared.written_text,
        )
        self.next_claim = queue.finish(
            self.conn,
            claim,
            summary=result.summary,
            embedding=result.embedding,
            embedding_model=result.embedding_model,
            word_count=result.word_count,
            checkpoint=sink.checkpoint_json(),
            next_owner=None if self.stopping else self.owner,
        )
        log.info(
            "job completed",
            extra=fields(
                job_id=claim.job_id,
                attempt=claim.attempt,
                words=result.word_count,
                flushes=sink.flushes,
            ),
        )
        return "completed"

    def _timed(
        self, on_section_done: Callable[[int, SectionStats], None], claim: Claim
    ) -> Callable[[int, SectionStats], None]:
        def wrapped(index: int, stats: SectionStats) -> None:
            on_section_done(index, stats)
            metrics.SECTION_SECONDS.observe(stats.elapsed_seconds)
            log.info(
                "section written",
                extra=fields(
                    job_id=claim.job_id,
                    section=index + 1,
                    elapsed_ms=round(stats.elapsed_seconds * 1000),
                    words=stats.words,
                    input_tokens=self.tokens[0],
                    output_tokens=self.tokens[1],
                ),
            )
            self.tokens = [0, 0]

        return wrapped

    def _fail(self, claim: Claim, exc: Exception) -> str:
        # Unknown errors are retried too (they may be passing), within MAX_RETRIES.
        retryable = exc.retryable if isinstance(exc, GenerationError) else True
        message = (
            str(exc)
            if isinstance(exc, GenerationError)
            else f"internal error: {type(exc).__name__}: {exc}"
        )
        if not isinstance(exc, GenerationError):
            log.error("job crashed", exc_info=True, extra=fields(job_id=claim.job_id))
        try:
            result = queue.fail(
                self.conn,
                claim,
                message,
                retryable=retryable,
                max_retries=self.settings.max_retries,
                backoff_base=self.settings.retry_backoff_seconds,
                retry_after=getattr(exc, "retry_after", None),
            )
        except LeaseLostError as lost:
            log.info("job lost", extra=fields(job_id=claim.job_id, reason=str(lost)))
            return "lost"
        log.warning(
            "job failed",
            extra=fields(
                job_id=claim.job_id,
                attempt=claim.attempt,
                status=result.status.value,
                retry_in_s=None
                if result.retry_in_seconds is None
                else round(result.retry_in_seconds, 1),
                error=message,
            ),
        )
        return "retried" if result.status.value == "pending" else "failed"

    def _release(self, claim: Claim) -> None:
        try:
            if self.conn is not None and queue.release(self.conn, claim):
                log.info("job released", extra=fields(job_id=claim.job_id, attempt=claim.attempt))
        except DatabaseError as exc:
            log.warning(
                "could not release job; the supervisor will",
                extra=fields(job_id=claim.job_id, error=str(exc)),
            )

    # --- small helpers -----------------------------------------------------------

    def _before_request(self) -> None:
        self._beat(None)
        self.before_request()

    def _on_call(self, record: CallRecord) -> None:
        metrics.record_call(record)
        self.tokens[0] += record.input_tokens
        self.tokens[1] += record.output_tokens

    def _progress(self, claim: Claim, progress: int) -> None:
        self._beat(WorkerState.BUSY, progress=progress)
        self._title(f"busy job={claim.job_id} {progress}%")

    def _beat(self, state: WorkerState | None, **changes: object) -> None:
        self.table.update_slot(self.index, state=state, rss_bytes=current_rss_bytes(), **changes)

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

    def _reconnect(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                log.debug("closing a broken connection failed", exc_info=True)
        self.conn = None
        self._connect()


def worker_main(index: int, settings: Settings, table: HeartbeatTable) -> NoReturn:
    """Entry point in the forked child; never returns."""
    code = exitcodes.OK
    worker = Worker(index, settings, table)
    try:
        try:
            worker.boot()
        except Abandon:
            raise
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
