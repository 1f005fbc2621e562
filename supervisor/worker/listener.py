"""How an idle worker waits for work: LISTEN/NOTIFY, or polling when LISTEN cannot work.

Behind a transaction-mode pooler (PgBouncer, Supabase's pooler on port 6543) LISTEN
may be refused or, worse, accepted and never delivered: between transactions the
worker holds no server connection, so notifications for it are dropped. So LISTEN is
proven at start with a probe NOTIFY sent from another connection while this one
waits idle, exactly as a new job's NOTIFY would arrive; if the probe does not come
back, the worker polls instead and says so once.

Only an idle worker listens. PostgreSQL wakes every listening backend of the database
for every NOTIFY, whatever its channel, and each wake-up costs that backend a
transaction: a busy worker listening would pay one for each progress NOTIFY of every
running job. So the worker UNLISTENs when it claims a job, and LISTENs again when it
next finds the queue empty.

Under `storyworker run` with LISTEN on, workers do not LISTEN at all: the supervisor
holds one LISTEN for the host (`supervisor.arbiter.listener`) and wakes one idle
worker per new job through a pipe (`HostWakeup` here, `WakeChannel` for the pipe).
`Waiter` is the per-connection wait: polling with DATABASE_LISTEN=false, and LISTEN
for a process of its own.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

import psycopg

from health.heartbeat import HeartbeatTable
from supervisor.db import sql
from supervisor.db.connection import translated
from supervisor.db.listen import CHANNEL, probe_payload, probe_returns
from supervisor.errors import DatabaseError
from supervisor.logs import fields
from supervisor.wakeups import WakeChannel

log = logging.getLogger(__name__)


class Mode(enum.Enum):
    LISTEN = "listen"
    POLL = "poll"


class Waiter:
    """Blocks until a job may be runnable: a NOTIFY on `generation_jobs`, or the poll
    interval passing. Wakes at least every `slice_seconds` so the caller can beat its
    heartbeat and notice a stop request."""

    def __init__(
        self,
        conn: psycopg.Connection,
        poll_interval: float,
        send_probe: Callable[[str, str], None],
        slice_seconds: float = 1.0,
    ):
        """`send_probe(channel, payload)` must NOTIFY from a connection other than `conn`."""
        self._conn = conn
        self._send_probe = send_probe
        self._poll_interval = poll_interval
        self._slice = slice_seconds
        self.mode = Mode.POLL
        self._listening = False

    def start(self, listen: bool = True) -> Mode:
        """LISTEN and prove it works; fall back to polling otherwise. Returns the mode.
        `listen=False` (DATABASE_LISTEN=false) goes straight to polling."""
        if not listen:
            self.mode = Mode.POLL
            return self.mode
        probe = probe_payload()
        try:
            sql.run(self._conn, "listen_jobs")
            self._send_probe(CHANNEL, probe)
            got = self._probe_returns(probe)
        except (psycopg.Error, DatabaseError) as exc:
            log.warning("LISTEN failed; polling instead", extra=fields(error=str(exc).strip()))
            got = False
        else:
            if not got:
                log.warning(
                    "LISTEN is not delivered on this connection (a transaction-mode pooler?);"
                    " polling instead",
                    extra=fields(poll_interval_ms=round(self._poll_interval * 1000)),
                )
                # A polling worker must not stay listening: every NOTIFY would cost it
                # a transaction, and they would pile up in the driver unread.
                sql.run(self._conn, "unlisten_jobs")
        self.mode = Mode.LISTEN if got else Mode.POLL
        self._listening = got
        return self.mode

    def _probe_returns(self, probe: str) -> bool:
        return probe_returns(self._conn, probe)

    def busy(self) -> None:
        """A job was claimed: stop listening until the queue is next found empty."""
        if self._listening:
            sql.run(self._conn, "unlisten_jobs")
            with translated("UNLISTEN"):
                for _ in self._conn.notifies(timeout=0):  # what came while we listened
                    pass
            self._listening = False

    def wait(self, should_stop: Callable[[], bool], on_slice: Callable[[], None]) -> None:
        """Return when work may be there, the poll interval passed, or `should_stop()`."""
        if self.mode is Mode.LISTEN and not self._listening:
            # A job inserted since the caller's last claim sent its NOTIFY to nobody:
            # listen, then return at once so that the caller claims once more.
            sql.run(self._conn, "listen_jobs")
            self._listening = True
            return
        deadline = time.monotonic() + self._poll_interval
        while not should_stop():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            timeout = min(remaining, self._slice)
            if self.mode is Mode.LISTEN:
                with translated("waiting for NOTIFY"):
                    if any(True for _ in self._conn.notifies(timeout=timeout, stop_after=1)):
                        # A burst of inserts sends one NOTIFY each: drop the rest of what
                        # is already here, or each would cost an empty claim later.
                        for _ in self._conn.notifies(timeout=0):
                            pass
                        return
            else:
                time.sleep(timeout)
            on_slice()


class HostWakeup:
    """An idle worker's wait when the supervisor holds the host's one LISTEN: the
    worker itself never LISTENs (so it runs through a transaction pooler), and waits
    for a wake-up byte on the shared pipe, or the poll interval, whichever is first.
    While the host listener is down no bytes come and this is plain polling."""

    def __init__(
        self,
        channel: WakeChannel,
        poll_interval: float,
        on_mode: Callable[[Mode], None] = lambda mode: None,
        slice_seconds: float = 1.0,
        announce: bool = True,
    ):
        """`on_mode` hears the pick-up mode whenever the host listener goes up or down;
        `announce=False` (a reconnect) does not log that this worker polls."""
        self._channel = channel
        self._announce = announce
        self._poll_interval = poll_interval
        self._on_mode = on_mode
        self._slice = slice_seconds
        self.mode = Mode.POLL
        self.wakeups = 0

    def start(self, listen: bool = True) -> Mode:
        self.mode = Mode.LISTEN if self._channel.listening else Mode.POLL
        if self.mode is Mode.POLL and self._announce:
            log.warning(
                "the host listener is not up; polling instead",
                extra=fields(poll_interval_ms=round(self._poll_interval * 1000)),
            )
        return self.mode

    def busy(self) -> None:
        """Nothing to undo: a wake-up written while this worker is busy waits in the
        pipe for whichever worker is idle next."""

    def wait(self, should_stop: Callable[[], bool], on_slice: Callable[[], None]) -> None:
        """Return when woken, the poll interval passed, or `should_stop()`."""
        deadline = time.monotonic() + self._poll_interval
        while not should_stop():
            self._follow_listener()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._channel.take(min(remaining, self._slice)):
                self.wakeups += 1
                log.debug("woken by the host listener")
                return
            on_slice()

    def _follow_listener(self) -> None:
        mode = Mode.LISTEN if self._channel.listening else Mode.POLL
        if mode is not self.mode:
            self.mode = mode
            self._on_mode(mode)


#: The host listener's pipe as a worker is given it (None: DATABASE_LISTEN=false).
Wake = WakeChannel | None


def wakeups_for(
    channel: Wake, table: HeartbeatTable, index: int
) -> Callable[[psycopg.Connection, float, Callable[[str, str], None]], Waiter | HostWakeup]:
    """Worker `index`'s `make_wakeup`, in its process: woken by the host listener
    through `channel` (whose write end it closes: it only reads), showing the pick-up
    mode in its heartbeat slot; or `Waiter` when there is no host listener."""
    if channel is None:
        return Waiter
    channel.in_worker()

    def on_mode(mode: Mode) -> None:
        table.update_slot(index, pickup=mode.value)

    starts = 0

    def make(conn: object, poll_interval: float, send_probe: object) -> HostWakeup:
        nonlocal starts
        starts += 1  # "polling instead" is said once per worker, not on each reconnect
        return HostWakeup(channel, poll_interval, on_mode, announce=starts == 1)

    return make
