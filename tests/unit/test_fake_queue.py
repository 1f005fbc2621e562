"""The in-memory queue the unit tests use keeps the claim's rules (issue 21): a story's
chapters one at a time and in order, fewest jobs in flight first, the cap."""

from __future__ import annotations

import uuid

from supervisor.db.jobs import Status
from tests.fakes import MemoryQueue


def test_a_story_is_claimed_in_chapter_order_one_at_a_time() -> None:
    queue, story = MemoryQueue(), uuid.uuid4()
    third, first = (queue.add(sequence_id=story, chapter_number=n) for n in (3, 1))
    claim = queue.claim("w1")
    assert claim.job_id == first.id and queue.claim("w2") is None
    first.status, first.summary = Status.COMPLETED, "one"
    claim = queue.claim("w2")
    assert claim.job_id == third.id
    assert claim.context.recent_summaries == ((1, "one"),)
    assert claim.context.missing == (2,)


def test_fewest_in_flight_first_and_the_cap() -> None:
    queue = MemoryQueue(max_per_user=1)
    a, b = uuid.uuid4(), uuid.uuid4()
    a_jobs = [queue.add(user_id=a) for _ in range(3)]
    b_job = queue.add(user_id=b)
    assert queue.claim("w1").job_id == a_jobs[0].id
    assert queue.claim("w2").job_id == b_job.id
    assert queue.claim("w3") is None  # a is at the cap
    queue.max_per_user = None
    assert queue.claim("w3").job_id == a_jobs[1].id
