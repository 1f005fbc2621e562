"""This supervisor's entry in the process registry (supervisor.db.registry).

`Maintenance` beats with every lease renewal, in the renewal's own transaction, and
in between publishes a change of its workers' state at most every PUBLISH_SECONDS.
What it publishes comes from what the supervisor already keeps: the heartbeat table
(its state, its workers) and the provider breaker (paused, and why). A registry write
the database refuses is logged once and never stops the lease renewal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg

from health.breaker import Breaker
from health.checks import safe_detail
from health.heartbeat import HeartbeatTable
from supervisor.config import Settings
from supervisor.db import registry
from supervisor.db.connection import translated
from supervisor.errors import ConnectionLostError, StatementError
from supervisor.logs import fields
from supervisor.redact import redact

log = logging.getLogger(__name__)

#: A change of the workers' state is published at most this often.
PUBLISH_SECONDS = 2.0


class Registration:
    def __init__(
        self,
        table: HeartbeatTable,
        breaker: Breaker | None,
        settings: Callable[[], Settings],
        identity: registry.Identity | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.breaker = breaker
        self.settings = settings
        self.identity = identity or registry.Identity()
        self.clock = clock
        self._published: registry.Report | None = None
        self._published_at = float("-inf")
        self._refused = False

    def report(self) -> registry.Report:
        """What to publish now."""
        settings = self.settings()
        paused = self.breaker.state() if self.breaker is not None else None
        workers = tuple(
            {
                "index": w.index,
                "pid": w.pid,
                "state": w.state.label,
                "job_id": w.job_id,
                "progress": w.progress if w.job_id else 0,
                # LIVE_TEXT=broadcast: realtime.send calls that warned (events lost).
                **({"live_text_warnings": w.live_warnings} if w.live_warnings else {}),
            }
            for w in self.table.workers()
        )
        return registry.Report(
            state=self.table.supervisor().state.label,
            lease_seconds=settings.lease_seconds,
            concurrency=settings.concurrency,
            provider=settings.provider,
            paused=bool(paused and paused.open),
            paused_reason=safe_detail(redact(paused.reason)) if paused and paused.open else None,
            workers=workers,
        )

    def changed(self, now: float) -> bool:
        """The supervisor's own state changed since the last beat (published at once:
        `status` must not say `running` while it drains), or its workers' state did
        and the last beat is old enough."""
        report = self.report()
        if self._published is not None and report.state != self._published.state:
            return True
        return now - self._published_at >= PUBLISH_SECONDS and report != self._published

    def beat(self, conn: psycopg.Connection) -> None:
        """Publish; inside a caller's transaction this is a savepoint, so a refused
        write undoes only itself. A lost connection is the caller's to handle."""
        report = self.report()
        try:
            with translated("process registry", conn), conn.transaction():
                registry.beat(conn, self.identity, report)
        except ConnectionLostError:
            raise
        except StatementError as exc:
            if not self._refused:
                log.error("process registry write refused", extra=fields(error=str(exc)))
            self._refused = True
            return
        self._refused = False
        self._published, self._published_at = report, self.clock()

    def leave(self, conn: psycopg.Connection) -> None:
        registry.leave(conn, self.identity)
