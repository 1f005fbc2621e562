"""The host listener: the supervisor's one LISTEN for new jobs, for all its workers.

It LISTENs on a session-capable connection: DATABASE_LISTEN_URL when set (Supabase's
direct connection or session pooler), else DATABASE_URL. Either is first proven
with a probe NOTIFY sent through DATABASE_URL, the way the app's inserts arrive:
a transaction-mode pooler accepts LISTEN and never delivers, so unproven means
workers poll. Each job's NOTIFY then wakes one idle worker through the shared pipe
(`wakeups.WakeChannel`), so the workers need no LISTEN and may run through a
transaction pooler themselves.

It lives inside the supervisor's loop: `wait` is the loop's wait, on the signal
self-pipe and this connection's socket together, and turns notifications into
wake-ups as they arrive; `tick` (re)connects when due. The connection never crosses
a fork: `before_fork` closes it and the next tick reopens it, waking one worker in
case a job was announced meanwhile. A lost connection is said once in the log, idle
workers poll until it is back, and it is retried with the reconnect back-off
(`db.backoff`), which starts over only once LISTEN (and its proof) went through.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

import psycopg

from supervisor.arbiter.procs import SignalQueue
from supervisor.config import Settings
from supervisor.db import sql
from supervisor.db.backoff import Backoff
from supervisor.db.connection import connect, connect_for, translated
from supervisor.db.listen import CHANNEL, PROBE_PREFIX, probe_payload, probe_returns
from supervisor.errors import DatabaseError
from supervisor.logs import fields
from supervisor.redact import redact_dsn
from supervisor.wakeups import WakeChannel

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3.0


class State(enum.Enum):
    STARTING = "starting"  # not connected yet, or reopening after a fork
    LISTENING = "listening"
    LOST = "lost"  # the connection broke; retrying
    UNAVAILABLE = "unavailable"  # LISTEN is not delivered there: workers poll for good


class HostListener:
    def __init__(
        self,
        settings: Callable[[], Settings],
        channel: WakeChannel,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self.channel = channel
        self._clock = clock
        self._conn: psycopg.Connection | None = None
        self.state = State.STARTING
        #: Where LISTEN was proven to be delivered (a HUP may point elsewhere).
        self._proven: str | None = None
        self._announced = False
        self._retry_at = float("-inf")
        self._backoff = Backoff()
        #: The latest wait before reconnecting.
        self._delay = 0.0
        self.wakeups = 0

    # --- the loop's steps -------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Connect, LISTEN (and prove it the first time) when not listening and due."""
        if self._conn is not None or self.state is State.UNAVAILABLE or now < self._retry_at:
            return
        try:
            self._open()
        except DatabaseError as exc:
            self._lost(exc, now)

    def wait(self, signals: SignalQueue, timeout: float) -> None:
        """The loop's wait: return on a signal or after `timeout`; notifications that
        arrive meanwhile become wake-ups at once."""
        deadline = self._clock() + timeout
        while True:
            sockets = [self._conn.fileno()] if self._conn is not None else []
            ready = signals.wait(max(0.0, deadline - self._clock()), sockets)
            if sockets and sockets[0] in ready:
                self.pump()
            if signals.fileno() in ready or not ready or self._clock() >= deadline:
                return

    def pump(self) -> int:
        """Wake one worker per job NOTIFY received; the number woken."""
        if self._conn is None:
            return 0
        woken = 0
        try:
            while notes := self._read():
                woken += sum(self._wake() for n in notes if not n.startswith(PROBE_PREFIX))
        except DatabaseError as exc:
            self._lost(exc, self._clock())
        return woken

    def before_fork(self) -> None:
        """Close the connection so no child inherits its socket; the next tick
        reopens it. Workers keep their pick-up mode: this is a blip, not an outage."""
        self._close()
        if self.state is State.LISTENING:
            self.state = State.STARTING

    def close(self) -> None:
        self._close()
        self.channel.set_listening(False)

    # --- inside -----------------------------------------------------------------------

    def _read(self) -> list[str]:
        assert self._conn is not None
        with translated("reading notifications", self._conn):
            return [n.payload for n in self._conn.notifies(timeout=0)]

    def _wake(self) -> bool:
        woke = self.channel.wake(most=max(1, self._settings().concurrency))
        self.wakeups += woke
        return woke

    def _dsn(self) -> str:
        settings = self._settings()
        return settings.database_listen_url or settings.require_database()

    def _open(self) -> None:
        dsn = self._dsn()
        self._conn = connect(
            dsn,
            application_name="storyworker listener",
            prepared_statements=False,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
        )
        sql.run(self._conn, "listen_jobs")
        if self._proven != dsn and not self._prove():
            self._unavailable()
            return
        self._proven = dsn
        was, self.state = self.state, State.LISTENING
        self._backoff.succeeded()
        self.channel.set_listening(True)
        self.pump()  # what arrived with the LISTEN's reply
        self._wake()  # a job announced while nobody listened: one claim finds it
        if was is State.LOST:
            log.warning("host listener is back; idle workers are woken by NOTIFY again")
        elif not self._announced:  # reopening after a fork goes unsaid
            log.info("host listener up", extra=fields(database=redact_dsn(self._dsn())))
        self._announced = True

    def _prove(self) -> bool:
        """A probe NOTIFY through DATABASE_URL comes back on this connection."""
        assert self._conn is not None
        probe = probe_payload()
        settings = self._settings()
        with connect_for(settings, "listener probe", short_lived=True) as other:
            sql.one(other, "notify", {"channel": CHANNEL, "payload": probe})
        return probe_returns(self._conn, probe)

    def _unavailable(self) -> None:
        self._close()
        self.state = State.UNAVAILABLE
        self.channel.set_listening(False)
        where = "DATABASE_LISTEN_URL" if self._settings().database_listen_url else "DATABASE_URL"
        log.warning(
            f"LISTEN is not delivered on {where} (a transaction-mode pooler?); workers"
            " poll: set DATABASE_LISTEN_URL to a direct or session-pooled connection",
            extra=fields(poll_interval_ms=self._settings().poll_interval_ms),
        )

    def _lost(self, exc: DatabaseError, now: float) -> None:
        self._close()
        if self.state is not State.LOST:
            log.warning(
                "host listener lost; idle workers poll until it is back",
                extra=fields(error=str(exc), poll_interval_ms=self._settings().poll_interval_ms),
            )
        self.state = State.LOST
        self.channel.set_listening(False)
        self._delay = self._backoff.failed()
        self._retry_at = now + self._delay

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                log.debug("closing the listener's connection failed", exc_info=True)
            self._conn = None


def for_host(
    settings: Callable[[], Settings],
) -> tuple[WakeChannel | None, HostListener | NoListener]:
    """The wake-up pipe and the host's one LISTEN, to be made before the first fork;
    neither with DATABASE_LISTEN=false (every worker polls)."""
    if not settings().listen:
        return None, NoListener()
    wake = WakeChannel()
    return wake, HostListener(settings, wake)


class NoListener:
    """DATABASE_LISTEN=false, or a supervisor driven by tests: the loop's plain wait."""

    def tick(self, now: float) -> None: ...
    def before_fork(self) -> None: ...
    def close(self) -> None: ...

    def wait(self, signals: SignalQueue, timeout: float) -> None:
        signals.wait(timeout)
