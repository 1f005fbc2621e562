"""LIVE_TEXT=broadcast in the chapter sink, over the in-memory queue: the events rebuild
the chapter, each is small, a resumed attempt announces where it starts, the chapter is
written only at checkpoints, and warnings are counted, never fatal."""

from __future__ import annotations

import json

import pytest

from generation.story.writer import SectionStats
from generation.types import Outline
from supervisor.db.jobs import Status
from supervisor.errors import LeaseLostError, StatementError
from supervisor.worker.live import (
    MAX_DELTA_TEXT_BYTES,
    MAX_HOLD_SECONDS,
    MIN_DELTA_BYTES,
    BroadcastText,
    json_bytes,
    split,
)
from supervisor.worker.sink import ChapterSink
from tests.fakes import Clock, MemoryQueue
from tests.realtime import rebuild

OUTLINE = Outline("A Title", ("one", "two"))
INTERVAL = 0.25
STATS = SectionStats(0, 0.1, 0, 0)


def broadcast_sink(queue: MemoryQueue, clock: Clock, warnings: list[str] | None = None):
    job = queue.add({"bullet_count": 2})
    claim = queue.claim("host/1")
    live = BroadcastText(
        queue, claim, INTERVAL, on_warning=(warnings if warnings is not None else []).append
    )
    sink = ChapterSink(
        queue=queue,
        claim=claim,
        total_sections=2,
        content_length=0,
        outline=None,
        on_progress=lambda p: None,
        clock=clock,
        live=live,
    )
    return sink, job


def stream(sink: ChapterSink, clock: Clock, pieces: list[str], step: float) -> None:
    for piece in pieces:
        sink.on_chunk(piece)
        clock.now += step


def test_deltas_rebuild_the_chapter_which_is_written_only_at_checkpoints():
    clock, queue = Clock(), MemoryQueue()
    sink, job = broadcast_sink(queue, clock)
    sink.begin()
    sink.on_outline(OUTLINE)
    words = [f"word{n} " * 6 for n in range(120)]
    stream(sink, clock, words[:60], 0.05)
    assert job.content == "" and not [w for w in job.writes if w[0] == "append_text"]
    sink.on_section_done(0, STATS)
    assert job.content == "".join(words[:60])
    stream(sink, clock, words[60:], 0.05)
    sink.on_section_done(1, STATS)
    assert rebuild(job.events) == job.content == "".join(words)
    deltas = [p for e, p in job.events if e == "delta"]
    assert [e for e, _ in job.events].count("reset") == 1  # begin and on_outline: one
    assert [p["seq"] for _, p in job.events] == list(range(len(job.events)))
    assert [p["committed"] for p in deltas if "committed" in p] == [True, True]
    # Sent at most every interval, and (but for the last of a section) never tiny.
    assert all(json_bytes(p["text"]) >= MIN_DELTA_BYTES for p in deltas if "committed" not in p)
    # The in-memory queue's chapter has its job's id.
    assert {(p["chapter_id"], p["job_id"]) for _, p in job.events} == {(str(job.id),) * 2}


def test_a_delta_waits_for_enough_text_but_not_for_ever():
    clock, queue = Clock(), MemoryQueue()
    sink, job = broadcast_sink(queue, clock)
    sink.begin()
    sink.on_outline(OUTLINE)
    sink.on_chunk("slow ")
    clock.now += INTERVAL
    sink.on_chunk("model ")
    assert [e for e, _ in job.events] == ["reset"]  # held: far less than an envelope
    clock.now += MAX_HOLD_SECONDS
    sink.on_chunk("here")
    assert job.events[-1][1]["text"] == "slow model here"


def test_a_burst_goes_out_in_pieces_under_the_message_limit():
    text = 'é"' * 4000  # escapes and multi-byte characters
    pieces = split(text)
    assert "".join(pieces) == text and len(pieces) > 1
    assert all(json_bytes(p) <= MAX_DELTA_TEXT_BYTES for p in pieces)
    clock, queue = Clock(), MemoryQueue()
    sink, job = broadcast_sink(queue, clock)
    sink.begin()
    sink.on_outline(OUTLINE)
    sink.on_chunk(text)
    sink.on_section_done(0, STATS)
    payloads = [p for _, p in job.events]
    assert all(len(json.dumps(p, ensure_ascii=False).encode()) < 4096 for p in payloads)
    assert rebuild(job.events) == job.content == text


def test_a_resumed_attempt_announces_the_offset_it_writes_from():
    clock, queue = Clock(), MemoryQueue()
    job = queue.add({"bullet_count": 2})
    first = queue.claim("host/1")
    live = BroadcastText(queue, first, INTERVAL)
    live.begin(0)
    live.add("kept " * 80, clock.now)
    job.status, job.owner = Status.PENDING, None  # rescued mid-section: it resumes at 0
    second = queue.claim("host/2")
    again = BroadcastText(queue, second, INTERVAL)
    again.begin(0)
    again.add("new text", clock.now)
    again.committed(len("new text"))
    reset = [p for e, p in job.events if e == "reset"][-1]
    assert (reset["attempt"], reset["offset"], reset["seq"]) == (second.attempt, 0, 0)
    assert rebuild(job.events) == "new text"


def test_warnings_are_counted_and_the_chapter_is_still_committed():
    clock, queue = Clock(), MemoryQueue()
    queue.live_warnings = ["WarnSendingBroadcastMessage: no partition of relation"]
    warnings: list[str] = []
    sink, job = broadcast_sink(queue, clock, warnings)
    sink.begin()
    sink.on_outline(OUTLINE)
    stream(sink, clock, ["text " * 100], 1.0)
    sink.on_section_done(0, STATS)
    assert job.content == "text " * 100 and job.step == "section 1 of 2"
    assert len(warnings) == len(job.events) >= 3


def test_a_refused_send_is_a_lost_event_not_a_failed_job():
    class Refusing(MemoryQueue):
        def send_live(self, claim, event, payload):
            raise StatementError("function realtime.send(jsonb, ...) does not exist")

    clock, queue = Clock(), Refusing()
    warnings: list[str] = []
    sink, job = broadcast_sink(queue, clock, warnings)
    sink.begin()
    sink.on_outline(OUTLINE)
    sink.on_chunk("still written")
    sink.on_section_done(0, STATS)
    assert job.content == "still written" and "does not exist" in warnings[-1]


def test_a_worker_that_lost_its_claim_sends_nothing():
    clock, queue = Clock(), MemoryQueue()
    sink, job = broadcast_sink(queue, clock)
    sink.begin()
    sink.on_outline(OUTLINE)
    sent = len(job.events)
    job.attempts += 1  # rescued and re-claimed
    with pytest.raises(LeaseLostError):
        sink.on_chunk("x" * 1000)
    assert len(job.events) == sent
