"""The chapter sink: what the writer hands over becomes fenced queue calls, with live
text flushed at most once per interval and each section committed whole."""

from __future__ import annotations

import pytest

from generation.story.writer import SectionStats
from generation.types import Outline
from supervisor.errors import LeaseLostError
from supervisor.worker.resume import content_digest
from supervisor.worker.sink import FLUSH_INTERVAL_SECONDS, ChapterSink, prepare
from tests.fakes import Clock, MemoryQueue

OUTLINE = Outline("A Title", ("one", "two"))


def sink_for(queue: MemoryQueue, clock: Clock, **options) -> tuple[ChapterSink, object]:
    job = queue.add({"bullet_count": 2})
    claim = queue.claim("host/1")
    sink = ChapterSink(
        queue=queue,
        claim=claim,
        total_sections=2,
        content_length=0,
        outline=None,
        on_progress=lambda p: None,
        clock=clock,
        **options,
    )
    return sink, job


def test_live_text_is_flushed_at_most_once_per_interval():
    clock, queue = Clock(), MemoryQueue()
    alive: list[float] = []
    sink, job = sink_for(queue, clock, on_alive=lambda: alive.append(clock.now))
    sink.on_outline(OUTLINE)
    sink.on_chunk("a")  # the first chunk flushes at once
    for piece in "bcd":
        clock.now += FLUSH_INTERVAL_SECONDS / 4
        sink.on_chunk(piece)
    assert job.content == "a" and sink.flushes == 1
    clock.now += FLUSH_INTERVAL_SECONDS
    sink.on_chunk("e")
    assert job.content == "abcde" and sink.flushes == 2
    assert alive == [1000.0, clock.now]


def test_a_finished_section_is_committed_whole_before_it_is_reported():
    clock, queue = Clock(), MemoryQueue()
    seen: list[tuple[int, str]] = []
    progress: list[int] = []
    sink, job = sink_for(queue, clock, on_section=lambda i, stats: seen.append((i, job.content)))
    sink.on_progress = progress.append
    sink.on_outline(OUTLINE)
    sink.on_chunk("first ")
    clock.now += 0.01
    sink.on_chunk("section")  # buffered: inside the flush interval
    sink.on_section_done(0, SectionStats(0, 0.1, 13, 2))
    assert seen == [(0, "first section")]
    assert job.step == "section 1 of 2" and progress == [10, 50]
    assert job.checkpoint == {
        "outline": OUTLINE.to_json(),
        "sections_done": 1,
        "content_length": len("first section"),
        "content_sha256": content_digest("first section"),
    }


def test_a_sink_whose_job_was_taken_away_raises_lease_lost():
    clock, queue = Clock(), MemoryQueue()
    sink, job = sink_for(queue, clock)
    sink.on_outline(OUTLINE)
    job.attempts += 1  # rescued and re-claimed by the same owner
    with pytest.raises(LeaseLostError):
        sink.on_section_done(0, SectionStats(0, 0.1, 0, 0))


def test_prepare_cuts_back_only_past_the_checkpoint():
    queue = MemoryQueue()
    checkpoint = {"outline": OUTLINE.to_json(), "sections_done": 1, "content_length": 5}
    job = queue.add({"bullet_count": 2}, content="12345 half", checkpoint=checkpoint)
    prepared = prepare(queue, queue.claim("host/1"))
    assert job.content == "12345" and prepared.written_text == "12345"
    assert prepared.checkpoint.sections_done == 1

    clean = queue.add({"bullet_count": 2}, content="12345", checkpoint=checkpoint)
    job.status = clean.status  # let the second job be claimed next
    del queue.jobs[job.id]
    prepare(queue, queue.claim("host/1"))
    assert ("cut_back", 5) not in clean.writes


def test_each_checkpoint_carries_the_digest_of_the_whole_committed_chapter():
    clock, queue = Clock(), MemoryQueue()
    job = queue.add({"bullet_count": 2}, content="first section")
    sink = ChapterSink(
        queue=queue,
        claim=queue.claim("host/1"),
        total_sections=2,
        content_length=len("first section"),
        outline=OUTLINE,
        on_progress=lambda p: None,
        clock=clock,
        written_text="first section",
    )
    sink.on_chunk(" and the second")  # flushed as live text, then committed
    sink.on_section_done(1, SectionStats(1, 0.1, 3, 1))
    assert job.content == "first section and the second"
    assert job.checkpoint["content_length"] == len(job.content)
    assert job.checkpoint["content_sha256"] == content_digest(job.content)
