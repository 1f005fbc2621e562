"""The supervisor's own database work: renew its workers' leases, rescue jobs whose
holders died anywhere, and release or requeue the jobs of workers it reaped.

Its connection never crosses a fork: it is closed before each spawn and reopened on
the next tick. A database outage is logged once and retried on every tick; nothing
here may stop the supervisor's loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import psycopg

from supervisor import metrics
from supervisor.arbiter.registration import Registration
from supervisor.config import Settings
from supervisor.db import queue
from supervisor.db.connection import connect_for, translated
from supervisor.db.jobs import Outcome
from supervisor.errors import DatabaseError
from supervisor.logs import fields

log = logging.getLogger("supervisor.arbiter.loop")

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

    def before_fork(self) -> None:
        """Close the connection so no socket is inherited by a child."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def tick(self, now: float, held: Sequence[tuple[str, str]]) -> None:
        """Renew the leases of `held` ((owner, job id) pairs) and rescue expired
        leases, each when it is due."""
        settings = self._settings()
        renew_due = now - self._last_renew >= min(settings.lease_seconds / 3, 10.0)
        if renew_due and self._run("renew leases", lambda c: self._renew(c, held)) is not None:
            self._last_renew = now
        elif self.registration is not None and self.registration.changed(now):
            self._run("process registry", self.registration.beat)
        if now - self._last_rescue >= min(settings.lease_seconds / 4, 5.0):
            self._last_rescue = now
            rescued = self._run(
                "rescue",
                lambda c: queue.rescue(
                    c, lease_seconds=settings.lease_seconds, max_retries=settings.max_retries
                ),
            )
            self._report(rescued or [], "lease expired")

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
        released = self._run("release", lambda c: queue.release_owner(c, owner)) or []
        for outcome in released:
            log.info("job released", extra=fields(job_id=outcome.job_id, owner=owner))

    def rescue(self, owner: str, reason: str) -> None:
        max_retries = self._settings().max_retries
        found = self._run(
            "rescue", lambda c: queue.rescue_owner(c, owner, reason, max_retries=max_retries)
        )
        self._report(found or [], "worker died")

    def _report(self, outcomes: list[Outcome], reason: str) -> None:
        for outcome in outcomes:
            metrics.RESCUES.labels(reason).inc()
            log.warning(
                "job rescued",
                extra=fields(job_id=outcome.job_id, status=outcome.status.value, reason=reason),
            )

    def _run(self, what: str, action: Callable[[psycopg.Connection], object]) -> object | None:
        """Run `action` on a (re)opened connection; None when the database is unavailable."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect_for(
                    self._settings(), "supervisor", connect_timeout=CONNECT_TIMEOUT_SECONDS
                )
            result = action(self._conn)
        except DatabaseError as exc:
            if not self.outage:
                log.error("database unavailable", extra=fields(action=what, error=str(exc)))
            self.outage = True
            self.before_fork()
            return None
        if self.outage:
            log.info("database available again")
            self.outage = False
        return result
