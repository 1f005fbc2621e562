"""How live text reaches readers while a section streams (`LIVE_TEXT`), chosen once at
boot; the chapter sink holds one strategy per attempt.

`row` (the default): every FLUSH_INTERVAL_SECONDS the text streamed since the last flush
is appended to `chapters.content`; readers follow the row (Supabase Realtime's
`postgres_changes` sends each of them the whole row again at every flush).

`broadcast`: numbered events on the chapter's private Realtime topic `chapter:<id>`,
each sent with `realtime.send` in one small fenced transaction, at most every
LIVE_TEXT_INTERVAL_MS; `chapters.content` is written only at each section's checkpoint.
Every payload has `chapter_id`, `job_id`, `attempt` and `seq` (the event's number within
its attempt, from 0: order events by attempt, then seq), and:
- event `reset`, `offset`: text from `offset` on is void and attempt `attempt` writes on
  from there. Sent when an attempt begins (after a resume cut the chapter back to its
  last checkpoint) and when the chapter starts over.
- event `delta`, `offset` and `text`: `text` goes at `offset`. Offsets count Unicode code
  points, as PostgreSQL's length() does. `committed: true` on the last delta of a
  section: `chapters.content` now holds everything up to the end of it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from supervisor.config import Settings
from supervisor.db import realtime
from supervisor.db.connection import connect_for
from supervisor.db.jobs import Claim
from supervisor.db.seam import JobQueue
from supervisor.errors import StatementError
from supervisor.logs import fields

log = logging.getLogger(__name__)

#: Row mode: live text is appended to the chapter at most this often.
FLUSH_INTERVAL_SECONDS = 0.5
#: Broadcast mode: a delta waits (within MAX_HOLD_SECONDS) until it carries at least
#: this many bytes of text, more than its envelope (ids, keys, seq and offset, the
#: topic, and the id Realtime adds: about 315 bytes as supabase-js receives it), so
#: what reaches a reader stays under twice the text itself.
MIN_DELTA_BYTES = 400
MAX_HOLD_SECONDS = 2.0
#: Most bytes of text (as JSON) in one delta: with its envelope, no message over 4 KB.
MAX_DELTA_TEXT_BYTES = 3000
#: A run of realtime.send warnings is logged once a minute at most (each is counted).
WARNING_LOG_SECONDS = 60.0


class LiveText(Protocol):
    """What the chapter sink asks of a live-text strategy."""

    flushes: int

    def begin(self, offset: int) -> None:
        """An attempt begins, or the chapter starts over, at `offset` characters."""

    def add(self, text: str, now: float) -> None:
        """Text streamed at `now`; passed on to readers when due."""

    def owed(self, section: str) -> str:
        """What of `section` (streamed since the last checkpoint) the checkpoint must
        append to chapters.content."""

    def committed(self, length: int) -> None:
        """The checkpoint committed: chapters.content is `length` characters long."""


LiveTextFactory = Callable[["JobQueue", Claim], LiveText]


@dataclass
class RowText:
    """LIVE_TEXT=row: flushes append to chapters.content (fenced, and renewing the lease)."""

    queue: JobQueue
    claim: Claim
    interval: float = FLUSH_INTERVAL_SECONDS
    flushes: int = 0
    pending: list[str] = field(default_factory=list)
    last_flush: float = float("-inf")

    def begin(self, offset: int) -> None:
        """Readers see the chapter's own cut-back."""

    def add(self, text: str, now: float) -> None:
        self.pending.append(text)
        if now - self.last_flush >= self.interval:
            pending = self.owed("")
            if pending:
                self.queue.append_text(self.claim, pending)
                self.flushes += 1
            self.last_flush = now

    def owed(self, section: str) -> str:
        text = "".join(self.pending)
        self.pending.clear()
        return text

    def committed(self, length: int) -> None:
        """Readers saw the rest with the checkpoint's own write."""


@dataclass
class BroadcastText:
    """LIVE_TEXT=broadcast: deltas and resets through realtime.send (see the module)."""

    queue: JobQueue
    claim: Claim
    interval: float
    #: Told each WARNING realtime.send raised instead of sending (the event is lost).
    on_warning: Callable[[str], None] = lambda message: None
    flushes: int = 0
    #: Where the next delta's text goes, and the next event's number.
    offset: int = 0
    seq: int = 0
    unsent: list[str] = field(default_factory=list)
    held_since: float | None = None
    last_sent: float = float("-inf")
    announced: bool = False

    def begin(self, offset: int) -> None:
        if self.announced and offset == self.offset:
            return  # already said: nothing was sent since
        self.unsent.clear()
        self.held_since, self.offset, self.announced = None, offset, True
        self._send("reset", {"offset": offset})

    def add(self, text: str, now: float) -> None:
        if not text:
            return
        self.unsent.append(text)
        self.held_since = now if self.held_since is None else self.held_since
        if now - self.last_sent < self.interval:
            return
        unsent = "".join(self.unsent)
        if json_bytes(unsent) < MIN_DELTA_BYTES and now - self.held_since < MAX_HOLD_SECONDS:
            return
        first, *rest = split(unsent)
        self.unsent[:] = ["".join(rest)] if rest else []
        self.held_since = now if rest else None
        self.last_sent = now
        self._delta(first)

    def owed(self, section: str) -> str:
        return section  # no live text reached the row

    def committed(self, length: int) -> None:
        pieces = split("".join(self.unsent)) or [""]
        self.unsent.clear()
        self.held_since = None
        for number, piece in enumerate(pieces, start=1):
            self._delta(piece, committed=number == len(pieces))
        self.offset = length

    def _delta(self, text: str, *, committed: bool = False) -> None:
        payload: dict[str, Any] = {"offset": self.offset, "text": text}
        if committed:
            payload["committed"] = True
        self._send("delta", payload)
        self.offset += len(text)
        self.flushes += 1

    def _send(self, event: str, body: dict[str, Any]) -> None:
        payload = {
            "chapter_id": str(self.claim.chapter_id),
            "job_id": str(self.claim.job_id),
            "attempt": self.claim.attempt,
            "seq": self.seq,
            **body,
        }
        self.seq += 1
        try:
            warnings = self.queue.send_live(self.claim, event, payload)
        except StatementError as exc:
            # Refused outright (realtime.send dropped, a privilege revoked): as lost as
            # a swallowed one, and no reason to fail the chapter, which the
            # checkpoints still write.
            warnings = [f"realtime.send failed: {exc}"]
        for message in warnings:
            self.on_warning(message)


def json_bytes(text: str) -> int:
    """Bytes of `text` as a JSON string's contents, as the payload carries it."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")) - 2


def split(text: str, limit: int = MAX_DELTA_TEXT_BYTES) -> list[str]:
    """`text` in pieces of at most `limit` JSON bytes each (none when it is empty)."""
    if json_bytes(text) <= limit:
        return [text] if text else []
    pieces, start, size = [], 0, 0
    for index, char in enumerate(text):
        width = json_bytes(char)
        if size + width > limit:
            pieces.append(text[start:index])
            start, size = index, 0
        size += width
    pieces.append(text[start:])
    return pieces


def warning_handler(
    count: Callable[[], None], clock: Callable[[], float] = time.monotonic
) -> Callable[[str], None]:
    """Counts each realtime.send warning with `count`; logs the first of a run, then at
    most one line a minute saying how many more there were."""
    state = {"logged_at": float("-inf"), "since": 0}

    def warned(message: str) -> None:
        count()
        state["since"] += 1
        now = clock()
        if now - state["logged_at"] >= WARNING_LOG_SECONDS:
            log.warning(
                "realtime.send swallowed an error: a live text event was lost",
                extra=fields(warning=message, events_lost=state["since"]),
            )
            state["logged_at"], state["since"] = now, 0

    return warned


def factory(settings: Settings, count_warning: Callable[[], None]) -> LiveTextFactory:
    """The strategy this worker uses for every job (`resolved` settings)."""
    if settings.live_text != "broadcast":
        return RowText
    interval = settings.live_text_interval_ms / 1000
    on_warning = warning_handler(count_warning)
    return lambda queue, claim: BroadcastText(queue, claim, interval, on_warning)


def resolved(settings: Settings) -> Settings:
    """`settings` with the LIVE_TEXT this database allows: broadcast only once
    realtime.send is found to work for this role, otherwise row; one line says which."""
    if settings.live_text != "broadcast":
        return settings
    with connect_for(settings, "live text check", short_lived=True) as conn:
        why = realtime.why_not(conn)
    if why is not None:
        log.warning(
            "LIVE_TEXT=broadcast cannot work here; live text is written to the row instead",
            extra=fields(live_text="row", reason=why),
        )
        return settings.with_overrides(live_text="row")
    log.info(
        "live text goes over Supabase Realtime Broadcast",
        extra=fields(live_text="broadcast", interval_ms=settings.live_text_interval_ms),
    )
    return settings
