"""The supervisor's own database work: renew its workers' leases, rescue jobs whose
holders died anywhere, and release or requeue the jobs of workers it reaped.

Its connection never crosses a fork: it is closed before each spawn and reopened on
the next tick. A database outage is logged once and retried with the reconnect
back-off (`db.backoff`, capped at the rescue interval); nothing here may stop the
supervisor's loop. A release or rescue that failed is owed, and retried on each
attempt until it goes through; the first statement that succeeds after an outage
renews the leases and rescues at once, not one interval later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import psycopg

from supervisor import metrics
from supervisor.arbiter.registration import Registration
from supervisor.config import Settings
from supervisor.db import queue
from supervisor.db.backoff import Backoff
from supervisor.db.connection import connect_for, translated
from supervisor.db.jobs import Outcome
from supervisor.errors import DatabaseError
from supervisor.logs import fields

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3


class Maintenance:
    def __init__(
        self, settings: Callable[[], Settings], registration: Registration | None = None
    ) -> None:
        self._settings = settings
        #: This supervisor's row in the process registry, beaten with each renewal.
        self.registration = registration
        self._conn: psycopg.Connection | None = None
        self._last_renew = float("-inf")
        self._last_rescue = float("-inf")
        self.outage = False
        #: The latest tick's time; nothing is tried before `_retry_at` after a failure.
        self._now = float("-inf")
        self._retry_at = float("-inf")
        self._backoff = Backoff(cap=rescue_interval(settings()))
        #: Workers whose jobs are still to be given back: owner -> the rescue's reason,
        #: or None for a release (the worker was stopped on purpose).
        self.owed: dict[str, str | None] = {}

    def before_fork(self) -> None:
        """Close the connection so no socket is inherited by a child."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def tick(self, now: float, held: Sequence[tuple[str, str]]) -> None:
        """Settle what is owed, renew the leases of `held` ((owner, job id) pairs) and
        rescue expired leases, each when it is due."""
        self._now = now
        if now < self._retry_at or not self._settle_owed():
            return
        settings = self._settings()
        renew_due = now - self._last_renew >= min(settings.lease_seconds / 3, 10.0)
        if renew_due and self._run("renew leases", lambda c: self._renew(c, held)) is not None:
            self._last_renew = now
        elif self.registration is not None and self.registration.changed(now):
            self._run("process registry", self.registration.beat)
        if now - self._last_rescue >= rescue_interval(settings) and now >= self._retry_at:
            rescued = self._run(
                "rescue",
                lambda c: queue.rescue(
                    c, lease_seconds=settings.lease_seconds, max_retries=settings.max_retries
                ),
            )
            if rescued is not None:
                self._last_rescue = now
                self._report(rescued, "lease expired")

    def _renew(self, conn: psycopg.Connection, held: Sequence[tuple[str, str]]) -> int:
        """Renew the leases and beat in the process registry: one transaction."""
        if self.registration is None:
            return queue.renew_leases(conn, held)
        with translated("renew leases", conn), conn.transaction():
            renewed = queue.renew_leases(conn, held)
            self.registration.beat(conn)
        return renewed

    def leave_registry(self) -> None:
        """A clean exit: take this supervisor out of the process registry."""
        if self.registration is not None:
            self._run("process registry", self.registration.leave)

    def release(self, owner: str) -> None:
        """Give back the jobs of a worker stopped on purpose, now or once the
        database answers."""
        self.owed[owner] = None
        self._settle_owed()

    def rescue(self, owner: str, reason: str) -> None:
        """Take back the jobs of a worker that died, now or once the database answers."""
        self.owed[owner] = reason
        self._settle_owed()

    def _settle_owed(self) -> bool:
        """Try each owed release and rescue; True once none is left."""
        max_retries = self._settings().max_retries
        for owner, reason in list(self.owed.items()):
            if self._now < self._retry_at:
                return False
            if reason is None:
                found = self._run("release", lambda c, o=owner: queue.release_owner(c, o))
            else:
                found = self._run(
                    "rescue",
                    lambda c, o=owner, r=reason: queue.rescue_owner(
                        c, o, r, max_retries=max_retries
                    ),
                )
            if found is None:
                return False
            del self.owed[owner]
            if reason is not None:
                self._report(found, "worker died")
            for outcome in found if reason is None else ():
                log.info("job released", extra=fields(job_id=outcome.job_id, owner=owner))
        return True

    def _report(self, outcomes: list[Outcome], reason: str) -> None:
        for outcome in outcomes:
            metrics.RESCUES.labels(reason).inc()
            log.warning(
                "job rescued",
                extra=fields(job_id=outcome.job_id, status=outcome.status.value, reason=reason),
            )

    def _run(self, what: str, action: Callable[[psycopg.Connection], object]) -> object | None:
        """Run `action` on a (re)opened connection; None when the database is
        unavailable (then nothing is tried again before the back-off's wait)."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect_for(
                    self._settings(), "supervisor", connect_timeout=CONNECT_TIMEOUT_SECONDS
                )
            result = action(self._conn)
        except DatabaseError as exc:
            self._failed(what, exc)
            return None
        self._backoff.succeeded()
        if self.outage:
            log.info("database available again")
            self.outage = False
            # What waited for the database is due now, not one interval later.
            self._last_renew = self._last_rescue = float("-inf")
        return result

    def _failed(self, what: str, exc: DatabaseError) -> None:
        delay = self._backoff.failed()
        self._retry_at = self._now + delay
        level = logging.DEBUG if self.outage else logging.ERROR
        log.log(
            level,
            "database unavailable",
            extra=fields(
                action=what,
                attempt=self._backoff.failures,
                retry_in_s=round(delay, 2),
                error=str(exc),
            ),
        )
        self.outage = True
        self.before_fork()


def rescue_interval(settings: Settings) -> float:
    """How often expired leases are looked for; also the longest wait between two
    attempts to reach the database."""
    return min(settings.lease_seconds / 4, 5.0)
