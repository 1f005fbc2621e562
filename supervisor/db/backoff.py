"""The one reconnect schedule: workers, the supervisor's maintenance, the host listener
and the start-up wait all back off from an unavailable database the same way.

A reconnect cycle is over only when a statement succeeds on the new connection, not
when connecting does: behind a transaction pooler (PgBouncer, Supabase's port 6543)
connecting always succeeds, and it is the first statement that fails while the
server is down or refusing logins (`server login has been failing`). So each failed
attempt, whether the connect or a statement after it, asks `failed()` for the next
wait, and only `succeeded()`, called after a statement did its work, starts over.
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: The first wait after a failure (before jitter).
FIRST_SECONDS = 0.5
#: No wait is longer than this.
MAX_SECONDS = 30.0


class Backoff:
    """Exponential back-off with jitter, capped; reset after a statement succeeds."""

    def __init__(
        self,
        first: float = FIRST_SECONDS,
        cap: float = MAX_SECONDS,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.first = first
        self.cap = cap
        self._rng = rng
        #: Failed attempts since the last success.
        self.failures = 0

    def failed(self) -> float:
        """Count a failed attempt; return the seconds to wait before the next one:
        doubling from `first` up to `cap`, each cut by up to a quarter at random so
        that workers that failed together do not retry together."""
        ceiling = min(self.cap, self.first * 2 ** min(self.failures, 32))
        self.failures += 1
        return ceiling * (0.75 + 0.25 * self._rng())

    def succeeded(self) -> None:
        """A statement succeeded: the next failure starts from `first` again."""
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0
