"""The provider circuit breaker that one supervisor's workers share.

A small file-backed mmap, created by the supervisor before it forks (beside the
heartbeat table) and read by the health server, like the table. Closed, workers claim
as usual. A worker that meets a fault that is the provider's and not its job's (the
key rejected, the model withdrawn, a daily quota or billing) gives its job back and
trips it open: from then on no worker of this supervisor claims anything. One worker
at a time probes the provider when the backoff says so (15 s, doubling to 5 minutes by
default); the first probe that passes closes it and the pool resumes by itself.

A fault that comes back right after a probe passed is not an outage: the provider
answers its probe, and something about the jobs (a request this server refuses, a
model that lists but will not write) fails them. The breaker keeps the reason a
passing probe cleared; `repeats(reason)` says when the same fault (digits aside) is
seen again within `repeat_window_seconds` of that probe or of its last repeat, and the
worker then lets the job take the fault instead of pausing the pool again, so a pool
cannot cycle between paused and resumed for ever.

Every access holds an exclusive flock on the file: accesses are rare (one per claim,
one per probe, one per health request) and the record is tiny, so a lock is simpler
and safer than a seqlock here.

Layout (little-endian): magic "SWBREAK1", version u32, open u32, opened_at f64 (wall),
next_probe f64 (monotonic), probes u32, prober pid i32, cleared_at f64 (monotonic, 0
until a probe passes), reason length u32, reason bytes (UTF-8, at most REASON_BYTES;
while closed, the reason the last passing probe cleared).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import mmap
import os
import re
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from health.lifecycle import process_alive

MAGIC = b"SWBREAK1"
VERSION = 2
REASON_BYTES = 400
_RECORD = struct.Struct(f"<8sIIddIidI{REASON_BYTES}s")
PROBE_BASE_SECONDS = 15.0
PROBE_MAX_SECONDS = 300.0
#: How long after a passing probe (or the last repeat) the same fault is the jobs'.
REPEAT_WINDOW_SECONDS = 600.0
#: How much of two reasons is compared, digits aside.
_COMPARED_CHARS = 300
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class BreakerState:
    """What the breaker says now."""

    open: bool
    reason: str = ""
    #: Wall-clock time it opened (0 when closed).
    opened_at: float = 0.0
    #: Monotonic time of the next probe.
    next_probe: float = 0.0
    #: Probes that failed since it opened.
    probes: int = 0
    prober: int = 0
    #: Monotonic time the last probe passed (or its fault last repeated); 0: never.
    cleared_at: float = 0.0


class Breaker:
    """The breaker in the file at `path`; see the module docstring."""

    def __init__(
        self,
        path: str,
        *,
        probe_base_seconds: float = PROBE_BASE_SECONDS,
        probe_max_seconds: float = PROBE_MAX_SECONDS,
        repeat_window_seconds: float = REPEAT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.probe_base_seconds = probe_base_seconds
        self.probe_max_seconds = probe_max_seconds
        self.repeat_window_seconds = repeat_window_seconds
        self._clock = clock
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, _RECORD.size)

    @classmethod
    def create(cls, directory: str | None = None, **options: float) -> Breaker:
        """A new, closed breaker in a fresh file under `directory`."""
        fd, path = tempfile.mkstemp(prefix="storyworker-breaker-", dir=directory)
        try:
            os.write(fd, _RECORD.pack(MAGIC, VERSION, 0, 0.0, 0.0, 0, 0, 0.0, 0, b""))
        finally:
            os.close(fd)
        return cls(path, **options)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # --- reading and writing ------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _load(self) -> BreakerState:
        magic, version, is_open, opened, probe_at, probes, prober, cleared, size, raw = (
            _RECORD.unpack(self._map[: _RECORD.size])
        )
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"{self.path} is not a storyworker breaker (version {VERSION})")
        reason = raw[:size].decode("utf-8", errors="replace")
        return BreakerState(bool(is_open), reason, opened, probe_at, probes, prober, cleared)

    def _store(self, state: BreakerState) -> None:
        raw = state.reason.encode("utf-8")[:REASON_BYTES]
        self._map[: _RECORD.size] = _RECORD.pack(
            MAGIC, VERSION, int(state.open), state.opened_at, state.next_probe,
            state.probes, state.prober, state.cleared_at, len(raw), raw,
        )  # fmt: skip

    def state(self) -> BreakerState:
        with self._locked():
            return self._load()

    # --- the state machine --------------------------------------------------------

    def trip(self, reason: str) -> bool:
        """Open the breaker because of `reason`; True when this call opened it (the
        caller then says so in the log, once for the whole pool). An open breaker keeps
        its first reason."""
        with self._locked():
            if self._load().open:
                return False
            first_probe = self._clock() + self.probe_base_seconds
            self._store(BreakerState(True, reason, time.time(), first_probe))
            return True

    def take_probe(self, pid: int) -> bool:
        """True when the breaker is open, a probe is due and nobody else is probing:
        the caller (`pid`) now probes and must report `probe_passed` or
        `probe_failed`. A prober that died is replaced once its probe is overdue."""
        with self._locked():
            state = self._load()
            now = self._clock()
            if not state.open or now < state.next_probe:
                return False
            if state.prober and state.prober != pid and process_alive(state.prober):
                return False
            self._store(dataclasses.replace(state, prober=pid))
            return True

    def probe_failed(self, reason: str) -> float:
        """The provider is still at fault; returns the seconds until the next probe."""
        with self._locked():
            state = self._load()
            wait = min(self.probe_base_seconds * 2 ** (state.probes + 1), self.probe_max_seconds)
            reason = reason or state.reason
            self._store(
                dataclasses.replace(state, reason=reason, next_probe=self._clock() + wait,
                         probes=state.probes + 1, prober=0)
            )  # fmt: skip
            return wait

    def probe_passed(self) -> BreakerState:
        """Close the breaker; returns how it was while open (for the log). Its reason is
        kept, as the fault this probe cleared (see `repeats`)."""
        with self._locked():
            state = self._load()
            self._store(BreakerState(False, state.reason, cleared_at=self._clock()))
            return state

    def repeats(self, reason: str) -> bool:
        """True when the breaker is closed and `reason` is the fault its last passing
        probe cleared (digits aside), within `repeat_window_seconds` of that probe or
        of the fault's last repeat (which renews the window): the provider passes its
        probe, so this fault is the jobs', not an outage, and the pool should not pause
        for it again."""
        with self._locked():
            state = self._load()
            now = self._clock()
            if state.open or not state.cleared_at:
                return False
            if now - state.cleared_at > self.repeat_window_seconds:
                return False
            if _gist(state.reason) != _gist(reason):
                return False
            self._store(dataclasses.replace(state, cleared_at=now))
            return True


def _gist(reason: str) -> str:
    """What two reasons must share to be the same fault: the text, digits aside (counts
    of attempts, ports, ids), as far as the breaker keeps it."""
    kept = reason.encode("utf-8")[:REASON_BYTES].decode("utf-8", errors="replace")
    return _DIGITS.sub("#", kept)[:_COMPARED_CHARS]
