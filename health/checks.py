"""Readiness checks: timed, exception-safe, and cacheable for the expensive ones.

A check is a zero-argument callable returning a CheckResult (or raising). It bounds
its own time (connect and statement timeouts, an HTTP timeout): nothing here can
interrupt a call that hangs, and a gunicorn sync worker serves one request at a time.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Check = Callable[[], "CheckResult"]
MAX_DETAIL = 300

# Exception messages can quote a DSN or URL: keep credentials out of /ready.
_SECRETS = (
    (re.compile(r"(://[^:/@\s]*:)[^@\s]+@"), r"\1***@"),
    (re.compile(r"(password\s*=\s*)('[^']*'|[^\s&]+)", re.I), r"\1***"),
    (re.compile(r"([?&](?:key|api_key|token)=)[^&\s]+", re.I), r"\1***"),
    (re.compile(r"AIza[0-9A-Za-z_\-]{8,}"), "***"),
)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    latency_seconds: float = 0.0


def mask_secrets(text: str) -> str:
    """`text` with every credential it may quote masked: a URL's password, a
    `password=` pair in any libpq spelling (spaces, quotes, a query parameter), an API
    key parameter, a Google API key."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def safe_detail(text: str) -> str:
    """`text` on one line, credentials masked, at most MAX_DETAIL characters."""
    text = mask_secrets(" ".join(text.split()))
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def run_check(check: Check) -> CheckResult:
    """Run `check` and time it. It never raises: an exception becomes a failed result
    whose detail is the exception's class name and message (credentials masked), and
    a return value that is not a CheckResult is a failure too. It cannot stop a check
    that hangs: each check bounds its own time."""
    started = time.monotonic()
    try:
        result = check()
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        result = CheckResult(ok=False, detail=safe_detail(f"{type(exc).__name__}: {exc}"))
    if not isinstance(result, CheckResult):
        result = CheckResult(ok=False, detail=f"check returned {type(result).__name__}")
    return CheckResult(result.ok, safe_detail(result.detail), time.monotonic() - started)


class CachedCheck:
    """A check run at most once per `ttl_seconds`; between runs it answers from the
    cache, so probes never hammer what they check (an API key's validity, say). A
    failure is kept only `failure_ttl_seconds` (default: as long as a success), so a
    fault that was mended (a key restored, a model back) stops failing readiness soon.
    Thread-safe: concurrent callers wait for one run. The detail says how old the
    answer is; latency_seconds is that of the run that produced it."""

    def __init__(
        self,
        check: Check,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        failure_ttl_seconds: float | None = None,
    ) -> None:
        if ttl_seconds < 0 or (failure_ttl_seconds or 0) < 0:
            raise ValueError("ttl_seconds must not be negative")
        self._check = check
        self._ttl = ttl_seconds
        self._failure_ttl = ttl_seconds if failure_ttl_seconds is None else failure_ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._result: CheckResult | None = None
        self._at = 0.0

    def __call__(self) -> CheckResult:
        with self._lock:
            now = self._clock()
            ttl = self._ttl if self._result is None or self._result.ok else self._failure_ttl
            if self._result is None or now - self._at >= ttl:
                self._result = run_check(self._check)
                self._at = now
            age = now - self._at
            return CheckResult(
                self._result.ok,
                f"{self._result.detail} (checked {age:.0f}s ago)",
                self._result.latency_seconds,
            )

    def invalidate(self) -> None:
        """Forget the cached answer: the next call runs the check."""
        with self._lock:
            self._result = None
