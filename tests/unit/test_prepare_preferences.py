"""What `prepare` makes of a job's preferences, against the in-memory queue: the story's
defaults under the job's own, and unknown keys recorded on the job and logged once."""

from __future__ import annotations

import logging

import pytest

from generation.providers.offline import OfflineProvider
from supervisor.db.jobs import Status
from supervisor.worker.runner import JobRunner, Settled
from supervisor.worker.sink import prepare
from tests.fakes import MemoryQueue

OWNER = "host/1"
UNKNOWN_LOG = "user_preferences has keys no field reads"


def test_a_job_sent_with_nothing_takes_its_storys_defaults():
    queue = MemoryQueue()
    queue.story_preferences = {"language": "French", "pov": "first person"}
    queue.add({})
    prefs = prepare(queue, queue.claim(OWNER)).request.preferences
    assert (prefs.language, prefs.pov, prefs.tense) == ("French", "first person", "past")


def test_unknown_keys_are_recorded_and_logged_once_a_job(caplog: pytest.LogCaptureFixture):
    queue = MemoryQueue()
    queue.story_preferences = {"house_style": "terse"}
    job = queue.add({"mood": "dark"})
    with caplog.at_level(logging.WARNING):
        claim = queue.claim(OWNER)
        prepare(queue, claim)
        prepare(queue, claim)  # the same keys again (as a later attempt would find them)
    assert job.context == {"unknown_preferences": ["house_style", "mood"]}
    assert [r.getMessage() for r in caplog.records].count(
        "user_preferences has keys no field reads; they are recorded on the job"
    ) == 1
    (record,) = [r for r in caplog.records if r.getMessage().startswith(UNKNOWN_LOG)]
    assert record.sw_fields == {"job_id": job.id, "keys": "house_style,mood"}


def test_a_job_with_only_known_keys_records_and_logs_nothing(caplog: pytest.LogCaptureFixture):
    queue = MemoryQueue()
    job = queue.add({"genre": "noir"})
    with caplog.at_level(logging.WARNING):
        prepare(queue, queue.claim(OWNER))
    assert job.context is None
    assert not [r for r in caplog.records if r.getMessage().startswith(UNKNOWN_LOG)]


def test_a_finished_job_keeps_its_unknown_keys_beside_its_steps():
    queue = MemoryQueue()
    job = queue.add({"bullet_count": 2, "words_per_bullet": 60, "mood": "dark"})
    runner = JobRunner(
        queue=queue, provider=OfflineProvider(), owner=OWNER, max_retries=3, backoff_seconds=1
    )
    assert runner.run(queue.claim(OWNER)) is Settled.COMPLETED
    assert job.status is Status.COMPLETED
    assert job.context["unknown_preferences"] == ["mood"]
    assert {"outline", "section 1", "section 2"} <= set(job.context)


def test_a_bad_story_default_fails_the_job_naming_the_storys_field():
    queue = MemoryQueue()
    queue.story_preferences = {"language": "Klingonese"}
    job = queue.add({}, content="the user's own text")
    runner = JobRunner(
        queue=queue, provider=OfflineProvider(), owner=OWNER, max_retries=3, backoff_seconds=1
    )
    assert runner.run(queue.claim(OWNER)) is Settled.FAILED
    assert job.status is Status.FAILED
    assert job.error.startswith("sequences.preferences.language must be a language name")
    assert job.content == "the user's own text"
