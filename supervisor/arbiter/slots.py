"""One child the supervisor keeps alive, and its restart policy: a child that dies
young is replaced at once the first time, then after growing delays; one that lived
long enough starts the count over."""

from __future__ import annotations

from dataclasses import dataclass

#: A child that lived this long resets its slot's crash backoff.
STABLE_SECONDS = 30.0
MAX_RESPAWN_DELAY = 30.0


@dataclass
class Slot:
    index: int
    pid: int | None = None
    started: float = 0.0
    booted: bool = False
    restarts: int = 0
    crashes: int = 0
    not_before: float = 0.0
    aborted_at: float | None = None
    quitting: bool = False  # we asked it to go (shutdown, reload, scale down)
    #: The last child went because we asked: its successor is not a restart.
    planned: bool = False

    def due(self, now: float) -> bool:
        """Empty, and its backoff (if any) is over: time to start a child."""
        return self.pid is None and now >= self.not_before

    def spawned(self, pid: int, now: float) -> None:
        self.pid, self.started, self.booted = pid, now, False

    def ended(self, now: float) -> None:
        """The child is gone: empty the slot and set when the next may start."""
        lived = now - self.started
        self.crashes = 0 if self.quitting or lived >= STABLE_SECONDS else self.crashes + 1
        delay = 0.0 if self.crashes <= 1 else min(2.0 ** (self.crashes - 2), MAX_RESPAWN_DELAY)
        self.not_before = now + delay
        self.planned = self.quitting
        self.pid, self.aborted_at, self.quitting = None, None, False
