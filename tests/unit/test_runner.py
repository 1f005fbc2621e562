"""Running one job, claim to settlement, against the in-memory queue: no database, no
processes. The same code runs against PostgreSQL in tests/integration and as a real
process in tests/acceptance."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from generation.errors import ModelUnavailableError, ProviderUnavailableError, RefusedError
from generation.providers.offline import OfflineProvider
from generation.types import ChapterRequest, Outline, ProviderHooks
from supervisor.db.jobs import Status
from supervisor.worker.runner import Abandon, JobRunner, Settled
from tests.fakes import MemoryQueue

PREFS = {"bullet_count": 4, "words_per_bullet": 60}
OWNER = "host/1"


class FailingProvider(OfflineProvider):
    """The offline provider, failing in section `at` with `error` after some text."""

    def __init__(self, at: int, error: BaseException, hooks: ProviderHooks | None = None) -> None:
        super().__init__(hooks=hooks or ProviderHooks())
        self.at, self.error = at, error

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        chunks = super().stream_section(request, outline, index, previous_text)
        if index == self.at:
            yield next(iter(chunks))
            raise self.error
        yield from chunks


def runner_for(queue: MemoryQueue, provider=None, **options) -> JobRunner:
    return JobRunner(
        queue=queue,
        provider=provider or OfflineProvider(),
        owner=OWNER,
        max_retries=3,
        backoff_seconds=1.0,
        **options,
    )


def fault_free_text(prefs=PREFS) -> str:
    queue = MemoryQueue()
    job = queue.add(prefs)
    runner_for(queue).run(queue.claim(OWNER))
    return job.content


def test_a_job_runs_to_completion_with_progress_after_each_step():
    queue = MemoryQueue()
    job = queue.add(PREFS)
    progress: list[int] = []
    runner = runner_for(queue, on_progress=lambda claim, p: progress.append(p))
    assert runner.run(queue.claim(OWNER)) is Settled.COMPLETED
    assert job.status is Status.COMPLETED and job.progress == 100
    assert progress == [10, 30, 50, 70, 90]
    assert job.content.count("\n\n") == 3  # four sections, each once
    assert job.summary and len(job.embedding) > 0
    assert job.checkpoint["sections_done"] == 4
    assert job.checkpoint["content_length"] == len(job.content)


def test_invalid_preferences_fail_at_once_and_leave_the_chapter_untouched():
    queue = MemoryQueue()
    job = queue.add({"bullet_count": 99}, content="the user's own text")
    assert runner_for(queue).run(queue.claim(OWNER)) is Settled.FAILED
    assert job.status is Status.FAILED and "bullet_count" in job.error
    assert job.content == "the user's own text"
    assert [name for name, _ in job.writes] == ["fail"]


def test_a_passing_provider_failure_is_retried_and_a_refusal_is_not():
    queue = MemoryQueue()
    passing = queue.add(PREFS)
    runner = runner_for(queue, FailingProvider(1, ProviderUnavailableError("HTTP 503")))
    assert runner.run(queue.claim(OWNER)) is Settled.RETRIED
    assert passing.status is Status.PENDING and "HTTP 503" in passing.error

    refused = queue.add(PREFS)
    passing.status = Status.COMPLETED  # out of the way
    runner = runner_for(queue, FailingProvider(0, RefusedError("the model refused")))
    assert runner.run(queue.claim(OWNER)) is Settled.FAILED
    assert refused.status is Status.FAILED and refused.error == "the model refused"


def test_an_unexpected_exception_is_an_internal_error_that_is_retried():
    queue = MemoryQueue()
    job = queue.add(PREFS)
    runner = runner_for(queue, FailingProvider(2, KeyError("surprise")))
    assert runner.run(queue.claim(OWNER)) is Settled.RETRIED
    assert job.error.startswith("internal error: KeyError")


def test_a_job_lost_mid_way_stops_writing_and_settles_nothing():
    queue = MemoryQueue()
    job = queue.add(PREFS)

    def cancel_at_section_2(claim, progress):
        if progress == 50:
            job.status = Status.CANCELLED

    runner = runner_for(queue, on_progress=cancel_at_section_2)
    assert runner.run(queue.claim(OWNER)) is Settled.LOST
    assert job.status is Status.CANCELLED
    assert job.writes[-1] == ("checkpoint", "section 2 of 4")


def test_abandon_releases_the_job_without_using_an_attempt():
    queue = MemoryQueue()
    job = queue.add(PREFS)
    runner = runner_for(queue, FailingProvider(1, Abandon()))
    with pytest.raises(Abandon):
        runner.run(queue.claim(OWNER))
    assert job.status is Status.PENDING and job.attempts == 0
    assert job.checkpoint["sections_done"] == 1  # resumes after section 1


def test_a_resumed_job_cuts_back_the_half_written_section_and_matches_a_fresh_run():
    queue = MemoryQueue()
    job = queue.add(PREFS)
    runner = runner_for(queue, FailingProvider(2, ProviderUnavailableError("cut")))
    assert runner.run(queue.claim(OWNER)) is Settled.RETRIED
    committed = job.checkpoint["content_length"]
    job.content += " and half a sentence the dead attempt left"
    assert len(job.content) > committed

    assert runner_for(queue).run(queue.claim(OWNER)) is Settled.COMPLETED
    assert ("cut_back", committed) in job.writes
    assert "start_chapter" not in [name for name, _ in job.writes[1:]]  # outline kept
    assert job.content == fault_free_text()


def test_finishing_claims_the_next_job_unless_asked_to_stop():
    queue = MemoryQueue()
    first, second = queue.add(PREFS), queue.add(PREFS)
    runner = runner_for(queue)
    runner.run(queue.claim(OWNER))
    assert runner.next_claim is not None and runner.next_claim.job_id == second.id

    stopping = runner_for(queue, should_stop=lambda: True)
    stopping.run(runner.next_claim)
    assert stopping.next_claim is None
    assert first.status is second.status is Status.COMPLETED


def test_usage_is_stored_with_each_checkpoint_and_summed_over_attempts():
    from supervisor.worker.runner import Tally

    queue, tally = MemoryQueue(), Tally()
    job = queue.add(PREFS)
    failing = FailingProvider(2, ProviderUnavailableError("cut"), ProviderHooks(on_call=tally.add))
    runner_for(queue, failing, tally=tally).run(queue.claim(OWNER))
    first = dict(job.usage)
    assert first["provider"] == "offline" and first["calls"] == 3  # outline, 2 sections
    assert first["input_tokens"] > 0 and first["output_tokens"] > 0

    fresh = OfflineProvider(hooks=ProviderHooks(on_call=tally.add))
    runner_for(queue, fresh, tally=tally).run(queue.claim(OWNER))
    text, embedding = job.usage  # one entry per model: the embedding model is another
    assert text["model"] == first["model"] and embedding["model"] != first["model"]
    # sections 3 and 4 (the cut one again) and the summary: three more calls
    assert text["calls"] == first["calls"] + 3
    assert text["input_tokens"] > first["input_tokens"]
    assert embedding["calls"] == 1 and embedding["embedding_tokens"] > 0


class RefusingQueue(MemoryQueue):
    """A queue whose database refuses the chapter text with `error`."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def append_text(self, claim, text: str) -> None:
        raise self.error


def test_a_refused_statement_fails_the_job_with_its_reason_not_as_a_lost_connection():
    from supervisor.errors import ConstraintViolation, StatementError

    refusal = ConstraintViolation(
        'append_text failed: violates check constraint "app_limit"', constraint="app_limit"
    )
    queue = RefusingQueue(refusal)
    job = queue.add(PREFS)
    assert runner_for(queue).run(queue.claim(OWNER)) is Settled.FAILED
    assert job.status is Status.FAILED and "app_limit" in job.error

    queue = RefusingQueue(StatementError("deadlock detected", sqlstate="40P01", retryable=True))
    job = queue.add(PREFS)
    assert runner_for(queue).run(queue.claim(OWNER)) is Settled.RETRIED
    assert job.status is Status.PENDING and "deadlock detected" in job.error


class CountingProvider(OfflineProvider):
    """The offline provider, counting the outlines it is asked for."""

    outlines = 0

    def outline(self, request: ChapterRequest) -> Outline:
        self.outlines += 1
        return super().outline(request)


def interrupted_after_two_sections(queue: MemoryQueue):
    """A job whose first attempt committed two sections, then failed (retryable)."""
    job = queue.add(PREFS)
    runner = runner_for(queue, FailingProvider(2, ProviderUnavailableError("cut")))
    assert runner.run(queue.claim(OWNER)) is Settled.RETRIED
    assert job.checkpoint["sections_done"] == 2
    return job


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda text: "", id="cleared"),
        pytest.param(lambda text: text[: len(text) // 2], id="cut short"),
        pytest.param(lambda text: "x" * len(text), id="edited, same length"),
    ],
)
def test_a_chapter_that_no_longer_matches_its_checkpoint_is_written_again_whole(tamper, caplog):
    queue = MemoryQueue()
    job = interrupted_after_two_sections(queue)
    outline = job.outline
    job.content = tamper(job.content[: job.checkpoint["content_length"]])
    provider = CountingProvider()
    assert runner_for(queue, provider).run(queue.claim(OWNER)) is Settled.COMPLETED
    assert job.content == fault_free_text()  # every section once, in order
    assert provider.outlines == 0 and job.outline == outline  # the outline is kept
    assert [name for name, _ in job.writes].count("start_chapter") == 2
    assert caplog.text.count("does not match its checkpoint") == 1


BULLETS = {"title": "T", "bullets": ["a", "b", "c", "d"]}


@pytest.mark.parametrize(
    "checkpoint",
    [
        ["not", "an", "object"],
        "a string",
        {"outline": "not an outline"},
        {"outline": {"title": "T", "bullets": "abcd"}},
        {"outline": {"bullets": ["a", "b", "c", "d"]}},
        {"outline": BULLETS, "sections_done": "2"},
        {"outline": BULLETS, "sections_done": 9},
        {"outline": BULLETS, "sections_done": 2, "content_length": -5},
        {"outline": BULLETS, "sections_done": 2, "content_sha256": 7},
        {"outline": BULLETS, "sections_done": 2, "content_length": 0},
    ],
)
def test_a_malformed_checkpoint_means_one_fresh_start_said_once(checkpoint, caplog):
    queue = MemoryQueue()
    job = queue.add(PREFS, checkpoint=checkpoint, content="left over")
    assert runner_for(queue).run(queue.claim(OWNER)) is Settled.COMPLETED
    assert job.attempts == 1 and job.error is None
    assert job.content == fault_free_text()
    assert caplog.text.count("checkpoint is malformed") == 1
    assert "job crashed" not in caplog.text


def test_a_checkpoint_without_a_digest_is_still_resumed_by_length():
    queue = MemoryQueue()
    job = interrupted_after_two_sections(queue)
    job.checkpoint = {k: v for k, v in job.checkpoint.items() if k != "content_sha256"}
    provider = CountingProvider()
    assert runner_for(queue, provider).run(queue.claim(OWNER)) is Settled.COMPLETED
    assert provider.outlines == 0 and "start_chapter" not in [n for n, _ in job.writes[1:]]
    assert job.content == fault_free_text()


def test_an_outage_beyond_the_in_call_retries_pauses_the_pool_and_a_cut_stream_does_not():
    faults: list[Exception] = []
    for attempts, pauses in ((5, 1), (1, 0)):
        queue = MemoryQueue()
        job = queue.add(PREFS)
        error = ProviderUnavailableError(f"Gemini returned HTTP 503 after {attempts} attempts")
        error.attempts = attempts
        runner = runner_for(queue, FailingProvider(1, error), on_provider_fault=faults.append)
        before = len(faults)
        assert runner.run(queue.claim(OWNER)) is Settled.RETRIED  # it pays one attempt
        assert job.status is Status.PENDING and len(faults) - before == pauses


def test_a_fault_the_provider_is_not_to_blame_for_is_the_jobs_and_pauses_nothing():
    # The same fault right after a passing probe (blame_provider says no): an outage
    # costs the job an attempt as usual, a provider-wide fault fails it, and neither
    # gives the job back nor pauses the pool.
    for error, settled, status in (
        (ProviderUnavailableError("HTTP 500 after 5 attempts"), Settled.RETRIED, Status.PENDING),
        (ModelUnavailableError("model x cannot chat"), Settled.FAILED, Status.FAILED),
    ):
        error.attempts = 5
        faults: list[Exception] = []
        asked: list[Exception] = []
        queue = MemoryQueue()
        job = queue.add(PREFS)
        runner = runner_for(
            queue,
            FailingProvider(1, error),
            on_provider_fault=faults.append,
            blame_provider=lambda exc, asked=asked: asked.append(exc) or False,
        )
        assert runner.run(queue.claim(OWNER)) is settled
        assert job.status is status and faults == [] and asked == [error]
        assert str(error) in job.error
