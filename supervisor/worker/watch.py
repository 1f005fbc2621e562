"""Tells a worker waiting on its provider from a worker that is stuck.

While the main thread is inside a provider request, a small thread keeps the worker's
heartbeat fresh, but only until that request's own deadline (its per-request timeout,
renewed by every chunk that streams in). So the supervisor's WORKER_TIMEOUT_SECONDS
can be short and independent of the provider's timeout: a worker frozen (SIGSTOP
freezes this thread too), deadlocked outside a call, or stuck in a call past its
deadline stops beating and is replaced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: How often the thread beats while a call is in flight.
BEAT_SECONDS = 1.0
#: Slack past a request's timeout before its beats stop (connect, TLS, scheduling).
DEADLINE_GRACE_SECONDS = 5.0


class CallWatch:
    """`begin(seconds)` when a request starts (or a chunk arrives), `end()` when the
    operation is over; in between, `beat()` runs every BEAT_SECONDS from a daemon
    thread until the deadline passes."""

    def __init__(
        self,
        beat: Callable[[], None],
        *,
        interval: float = BEAT_SECONDS,
        grace: float = DEADLINE_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._beat = beat
        self._interval, self._grace = interval, grace
        self._clock = clock
        self._deadline: float | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="call-watch", daemon=True)
        self._thread.start()

    def begin(self, seconds: float) -> None:
        with self._lock:
            self._deadline = self._clock() + seconds + self._grace

    def end(self) -> None:
        with self._lock:
            self._deadline = None

    def in_flight(self) -> bool:
        """A request is running and its deadline has not passed."""
        with self._lock:
            return self._deadline is not None and self._clock() < self._deadline

    def _run(self) -> None:
        while not self._wake.wait(self._interval):
            if self.in_flight():
                self._beat()
