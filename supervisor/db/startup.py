"""`run`'s start-up check of the database: reachable, its role one storyworker can
work as, every migration applied.

A database that cannot be reached, refuses logins, or fails the first statement (a
transaction pooler whose server is restarting answers `server login has been
failing`) is waited for: with the reconnect back-off, a log line every
LOG_EVERY_SECONDS, up to DATABASE_WAIT_SECONDS; then one DatabaseError saying the
database is unavailable (exit 69). Only a database that answers and lacks migrations
is told to run `storyworker migrate`, and a role storyworker cannot work as is a
ConfigError (78), both at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from supervisor.config import Settings
from supervisor.db.backoff import Backoff
from supervisor.db.connection import connect_for
from supervisor.db.migrate import require_migrated
from supervisor.db.trust import require_worker_role
from supervisor.errors import DatabaseError, NotMigratedError
from supervisor.logs import fields

log = logging.getLogger(__name__)

#: While waiting, a line in the log this often (and at the first failure).
LOG_EVERY_SECONDS = 10.0
#: The longest wait between two attempts at start.
MAX_WAIT_SECONDS = 5.0


def check(settings: Settings) -> None:
    """One attempt: raise on the first problem (DatabaseError when unavailable)."""
    with connect_for(settings, "run") as conn:
        require_worker_role(conn)
        require_migrated(conn)


def wait_until_ready(
    settings: Settings,
    stop_requested: Callable[[float], bool],
    *,
    attempt: Callable[[Settings], None] = check,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Check the database until it passes (True), or until `stop_requested(seconds)`,
    which sleeps up to `seconds`, says TERM or INT arrived (False). Raises DatabaseError
    once DATABASE_WAIT_SECONDS have passed, and at once what waiting cannot fix."""
    backoff = Backoff(cap=MAX_WAIT_SECONDS)
    started = clock()
    said_at: float | None = None
    while True:
        try:
            attempt(settings)
        except NotMigratedError:
            raise
        except DatabaseError as exc:
            waited = clock() - started
            left = settings.database_wait_seconds - waited
            if left <= 0:
                raise DatabaseError(
                    f"the database is unavailable: {exc}"
                    + (f" (waited {waited:.0f} s: DATABASE_WAIT_SECONDS)" if waited >= 1 else "")
                ) from exc
            if said_at is None or clock() - said_at >= LOG_EVERY_SECONDS:
                said_at = clock()
                log.warning(
                    "database unavailable; waiting for it",
                    extra=fields(
                        waited_s=round(waited), give_up_in_s=round(left), error=str(exc)
                    ),
                )
            if stop_requested(min(backoff.failed(), left)):
                return False
            continue
        if said_at is not None:
            log.info("database available", extra=fields(waited_s=round(clock() - started, 1)))
        return True
