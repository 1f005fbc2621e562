"""The shared rate limit on LLM calls (`AI_REQUESTS_PER_MINUTE`).

State lives in the database (`storyworker.rate_limits`, out of the app roles' reach)
so that every worker on every host shares one limit. A row that vanished is created
again and a time no worker could have set is started over (see queries.sql).
Calls are spaced evenly (GCRA with no burst): at 60 a minute, one a second, so no
60-second window ever holds more than the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from supervisor.db import sql

#: Longest single sleep, so a worker stays responsive to shutdown while it waits.
MAX_NAP_SECONDS = 1.0


class RateLimiter:
    """Blocks in `acquire()` until the shared limit allows one more call."""

    def __init__(
        self,
        conn: psycopg.Connection,
        requests_per_minute: int,
        *,
        name: str = "ai",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._conn = conn
        self._interval = 60.0 / requests_per_minute
        self._name = name
        self._sleep = sleep
        self._initialised = False

    def acquire(self) -> float:
        """Take one call from the shared budget; return the seconds spent waiting."""
        params = {"name": self._name, "interval": self._interval}
        waited = 0.0
        if not self._initialised:
            sql.run(self._conn, "rate_limit_init", params)
            self._initialised = True
        while sql.one(self._conn, "rate_limit_take", params) is None:
            row = sql.one(self._conn, "rate_limit_wait", params)
            if row is None:
                # The row vanished (deleted by hand): start the limiter over.
                sql.run(self._conn, "rate_limit_init", params)
                continue
            nap = min(max(row["wait"], 0.001), MAX_NAP_SECONDS)
            self._sleep(nap)
            waited += nap
        return waited


def build_hook(conn: psycopg.Connection, requests_per_minute: int) -> Callable[[], None]:
    """The `before_request` hook for providers: a no-op when the limit is off (0)."""
    if requests_per_minute <= 0:
        return lambda: None
    limiter = RateLimiter(conn, requests_per_minute)

    def before_request() -> None:
        limiter.acquire()

    return before_request
