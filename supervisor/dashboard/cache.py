"""A little memory for figures that are costly and change slowly (the day's charts and
tokens, the backlog, the jobs waiting on an earlier chapter): each is computed at most
once per `ttl` seconds in a process, however many browsers poll the Overview."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class TtlCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, float, Any]] = {}

    def get(self, key: str, compute: Callable[[], Any]) -> tuple[Any, float]:
        """The value of `key` and the wall time it was computed, computed now when it is
        older than the ttl (one caller computes; the others wait for it)."""
        with self._lock:
            found = self._values.get(key)
            if found is not None and self._clock() - found[0] < self.ttl:
                return found[2], found[1]
            self._values[key] = (self._clock(), time.time(), compute())
            _, wall, value = self._values[key]
            return value, wall
