"""Readiness checks: timed, exception-safe, and cacheable for the expensive ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Check = Callable[[], "CheckResult"]


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    latency_seconds: float = 0.0


def run_check(check: Check) -> CheckResult:
    """Run `check`, timing it; an exception becomes a failed result naming it.

    Checks bound their own time (connect and statement timeouts): this function
    cannot interrupt a call that hangs.
    """
    started = time.monotonic()
    try:
        result = check()
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        result = CheckResult(ok=False, detail=detail)
    return CheckResult(result.ok, result.detail, round(time.monotonic() - started, 6))


class CachedCheck:
    """Runs `check` at most once per `ttl_seconds` and answers from the cache between
    (success and failure alike), so probes never hammer what they check."""

    def __init__(
        self, check: Check, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._check = check
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._result: CheckResult | None = None
        self._at = 0.0

    def __call__(self) -> CheckResult:
        with self._lock:
            now = self._clock()
            if self._result is None or now - self._at >= self._ttl:
                self._result = run_check(self._check)
                self._at = now
            age = now - self._at
            return CheckResult(
                self._result.ok,
                f"{self._result.detail} (checked {age:.0f}s ago)",
                self._result.latency_seconds,
            )
