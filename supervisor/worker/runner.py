"""Runs one claimed job from its claim to its end: check it, write the chapter
through the generation package, and settle it (completed, retried, failed, lost).

It talks to the queue only through `JobQueue` (`supervisor.db.seam`), the worker's
statements bound to its connection, so it can be driven in unit tests by an in-memory
queue. A statement the
database refused (StatementError: a constraint, bad data, a deadlock) is the job's
failure and is settled here; a lost connection (any other DatabaseError) and Abandon
(SIGQUIT) are not: they belong to the process, which reconnects or exits.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from generation.errors import GenerationError, ProviderUnavailableError
from generation.story import SectionStats, write_chapter
from generation.story.memory import search_config
from generation.story.writer import ChapterResult
from generation.types import (
    DEFAULT_BUDGET_TOKENS,
    CallRecord,
    ChapterRequest,
    Provider,
)
from supervisor import metrics
from supervisor.db.jobs import Claim
from supervisor.db.seam import JobQueue
from supervisor.errors import DatabaseError, LeaseLostError, StatementError
from supervisor.logs import fields
from supervisor.worker.live import LiveTextFactory, RowText
from supervisor.worker.recall import Recaller
from supervisor.worker.sink import ChapterSink, prepare
from supervisor.worker.story import memory_after
from supervisor.worker.usage import JobUsage

log = logging.getLogger(__name__)


class Abandon(BaseException):
    """SIGQUIT: drop the current job back to the queue and exit now."""


def outage(error: GenerationError) -> bool:
    """5xx answers or timeouts that outlasted the retries inside the call: the
    provider is down, not just one stream cut."""
    return isinstance(error, ProviderUnavailableError) and error.attempts > 1


class Settled(enum.StrEnum):
    """How one attempt at a job ended (the `outcome` label of the jobs metric)."""

    COMPLETED = "completed"
    RETRIED = "retried"
    FAILED = "failed"
    LOST = "lost"
    #: Given back untouched: the provider, not the job, is at fault.
    PAUSED = "paused"


def verdict(exc: Exception) -> tuple[str, bool]:
    """The job's error message for `exc`, and whether another attempt may succeed."""
    if isinstance(exc, GenerationError):
        return str(exc), exc.retryable
    if isinstance(exc, StatementError):
        return f"database error: {exc}", exc.retryable
    # Unknown errors are retried too (they may be passing), within MAX_RETRIES.
    return f"internal error: {type(exc).__name__}: {exc}", True


@dataclass
class Tally:
    """What the worker's provider calls spent: tokens since the last section was
    logged, and the usage of the job in hand (`job`, set while one runs)."""

    input_tokens: int = 0
    output_tokens: int = 0
    job: JobUsage | None = None
    #: The last chapter-memory call's record (its tokens go to the log and manifest).
    memory: CallRecord | None = None

    def add(self, record: CallRecord) -> None:
        self.input_tokens += record.input_tokens
        self.output_tokens += record.output_tokens
        if record.kind == "memory":
            self.memory = record
        if self.job is not None:
            self.job.add(record)

    def usage(self) -> Any:
        """The job in hand's usage as stored, or None."""
        return None if self.job is None else self.job.to_json()

    def take(self) -> tuple[int, int]:
        spent = (self.input_tokens, self.output_tokens)
        self.input_tokens = self.output_tokens = 0
        return spent


@dataclass
class JobRunner:
    """Runs claimed jobs for `owner` with `provider`, settling each through `queue`."""

    queue: JobQueue
    provider: Provider
    owner: str
    max_retries: int
    backoff_seconds: float
    #: Progress (percent) of the job in hand, for the heartbeat table and the title.
    on_progress: Callable[[Claim, int], None] = lambda claim, progress: None
    #: Called while text streams: the worker is alive between checkpoints.
    on_alive: Callable[[], None] = lambda: None
    #: True once the worker was asked to stop: claim nothing more.
    should_stop: Callable[[], bool] = lambda: False
    #: Told of a fault that is the provider's (the job was given back meanwhile).
    on_provider_fault: Callable[[GenerationError], None] = lambda error: None
    #: Whether a fault that looks like the provider's (provider-wide, or an outage) is
    #: to be taken as such; False when it is the same fault again right after the
    #: provider passed its probe: then the job takes it and the pool keeps working.
    blame_provider: Callable[[GenerationError], bool] = lambda error: True
    tally: Tally = field(default_factory=Tally)
    #: How live text reaches readers: one strategy per attempt (LIVE_TEXT).
    live_text: LiveTextFactory = RowText
    #: The next job, claimed in the same transaction as the last one's finish.
    next_claim: Claim | None = None
    #: CONTEXT_BUDGET_TOKENS: what a prompt may hold of the story so far.
    budget_tokens: int = DEFAULT_BUDGET_TOKENS
    #: The sink of the job in hand (its committed length is where a failure cuts back).
    _sink: ChapterSink | None = field(default=None, init=False, repr=False)

    def run(self, claim: Claim) -> Settled:
        """Run `claim` to its end and record how it ended on the job. Raises only
        DatabaseError when the connection broke (never a StatementError, which fails
        the job) and Abandon (after releasing the job)."""
        started = time.monotonic()
        self.tally.job = JobUsage(claim.usage)
        try:
            settled = self._write(claim)
        except LeaseLostError as exc:
            settled = Settled.LOST
            log.info("job lost", extra=fields(job_id=claim.job_id, reason=str(exc)))
        except Abandon:
            self.release(claim)
            raise
        except StatementError as exc:
            settled = self.fail(claim, exc)
        except DatabaseError:
            raise
        except GenerationError as exc:
            settled = self._settle(claim, exc)
        except Exception as exc:  # noqa: BLE001 - the one catch-all: a failing job never stops a worker
            settled = self.fail(claim, exc)
        finally:
            self.tally.job = self.tally.memory = None
            self._sink = None
        metrics.JOBS.labels(settled.value).inc()
        metrics.JOB_SECONDS.observe(time.monotonic() - started)
        return settled

    def _settle(self, claim: Claim, exc: GenerationError) -> Settled:
        """Record how a provider error ended this attempt: a fault of the provider's
        gives the job back (provider-wide) or costs it one attempt (an outage) and
        pauses the pool; any other error, or one the provider is not to blame for
        (`blame_provider`), is the job's."""
        if not (exc.provider_wide or outage(exc)):
            return self.fail(claim, exc)
        if not self.blame_provider(exc):
            log.warning(
                "the same fault again although the provider passed its probe: "
                "the job's, not an outage; the pool keeps working",
                extra=fields(job_id=claim.job_id, error=str(exc)),
            )
            return self.fail(claim, exc)
        if exc.provider_wide:
            return self.pause(claim, exc)
        settled = self.fail(claim, exc)
        # The job pays one attempt; the pool then waits out the outage instead of every
        # queued job spending its retries against a failing provider.
        self.on_provider_fault(exc)
        return settled

    def _write(self, claim: Claim) -> Settled:
        prepared = prepare(self.queue, claim, self.budget_tokens)
        sink = ChapterSink(
            queue=self.queue,
            claim=claim,
            total_sections=prepared.request.preferences.bullet_count,
            content_length=prepared.content_length,
            outline=prepared.checkpoint.outline,
            on_progress=lambda p: self.on_progress(claim, p),
            on_alive=self.on_alive,
            on_section=lambda index, stats: self._section_written(claim, index, stats),
            usage=self.tally.usage,
            written_text=prepared.written_text,
            app_title=prepared.request.story.chapter_title is not None,
            live=self.live_text(self.queue, claim),
        )
        sink.begin()
        self._sink = sink
        if prepared.restart:  # the chapter does not match its checkpoint
            sink.on_outline(prepared.checkpoint.outline)
        result = write_chapter(
            prepared.request,
            self.provider,
            prepared.checkpoint,
            sink,
            written_text=prepared.written_text,
            recall=self._recall(claim, prepared.request, sink),
        )
        assert claim.context is not None  # prepare() rejects a claim without its chapter
        self._remembered(claim, sink, result)
        self.next_claim = self.queue.finish(
            claim,
            summary=result.summary,
            embedding=result.embedding,
            embedding_model=result.embedding_model,
            word_count=result.word_count,
            checkpoint=sink.checkpoint_json(),
            next_owner=None if self.should_stop() else self.owner,
            usage=self.tally.usage(),
            context=sink.context,
            memory=memory_after(claim.context, prepared.request.preferences, result),
        )
        log.info(
            "job completed",
            extra=fields(
                job_id=claim.job_id,
                attempt=claim.attempt,
                words=result.word_count,
                flushes=sink.flushes,
            ),
        )
        return Settled.COMPLETED

    def _recall(self, claim: Claim, request: ChapterRequest, sink: ChapterSink) -> Recaller:
        """Passages of the story's earlier chapters, by full-text search in the story's
        language and by embedding similarity (supervisor/worker/recall.py); none (and
        no query) when no earlier chapter is written."""

        def record(note: Any) -> None:
            sink.context["retrieval"] = dict(note)

        return Recaller(
            queue=self.queue,
            provider=self.provider,
            claim=claim,
            config=search_config(request.preferences.language),
            written=bool(request.story.written),
            record=record,
        )

    def _remembered(self, claim: Claim, sink: ChapterSink, result: ChapterResult) -> None:
        """Log what the chapter's memory took (the model's call: its time and tokens),
        and put its tokens in the job's manifest."""
        note = sink.context.setdefault("memory", {})
        spent = self.tally.memory
        if spent is not None:
            note.update(input_tokens=spent.input_tokens, output_tokens=spent.output_tokens)
        log.info(
            "chapter memory",
            extra=fields(
                job_id=claim.job_id,
                by=note.get("by"),
                elapsed_ms=note.get("elapsed_ms"),
                input_tokens=note.get("input_tokens"),
                output_tokens=note.get("output_tokens"),
                characters=len(note.get("characters") or []),
                facts=note.get("facts"),
                passages=len(result.passages),
                passage_vectors=len(result.passage_vectors),
                error=note.get("error"),
            ),
        )

    def _section_written(self, claim: Claim, index: int, stats: SectionStats) -> None:
        metrics.SECTION_SECONDS.observe(stats.elapsed_seconds)
        input_tokens, output_tokens = self.tally.take()
        log.info(
            "section written",
            extra=fields(
                job_id=claim.job_id,
                section=index + 1,
                elapsed_ms=round(stats.elapsed_seconds * 1000),
                words=stats.words,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            ),
        )

    def fail(self, claim: Claim, exc: Exception) -> Settled:
        """Record a failed attempt of `claim` caused by `exc`: retried while retries
        remain and the error may pass, else failed with a message that says why."""
        message, retryable = verdict(exc)
        if not isinstance(exc, (GenerationError, StatementError)):
            log.error("job crashed", exc_info=True, extra=fields(job_id=claim.job_id))
        try:
            result = self.queue.fail(
                claim,
                message,
                retryable=retryable,
                max_retries=self.max_retries,
                backoff_base=self.backoff_seconds,
                retry_after=getattr(exc, "retry_after", None),
                usage=self.tally.usage(),
                cut_to=self._committed_length(),
            )
        except LeaseLostError as lost:
            log.info("job lost", extra=fields(job_id=claim.job_id, reason=str(lost)))
            return Settled.LOST
        log.warning(
            "job failed",
            extra=fields(
                job_id=claim.job_id,
                attempt=claim.attempt,
                status=result.status.value,
                retry_in_s=None
                if result.retry_in_seconds is None
                else round(result.retry_in_seconds, 1),
                error=message,
            ),
        )
        return Settled.RETRIED if result.status.value == "pending" else Settled.FAILED

    def _committed_length(self) -> int | None:
        """Where the chapter stands at its last checkpoint, once the job has written
        an outline (None before: the chapter is not touched)."""
        sink = self._sink
        return None if sink is None or sink.outline is None else sink.content_length

    def pause(self, claim: Claim, exc: GenerationError) -> Settled:
        """The provider is at fault, not the job: give the job back with its checkpoint
        and without using up an attempt, and say so."""
        log.info(
            "job given back: the provider is at fault",
            extra=fields(job_id=claim.job_id, attempt=claim.attempt, error=str(exc)),
        )
        self.release(claim)
        self.on_provider_fault(exc)
        return Settled.PAUSED

    def release(self, claim: Claim) -> None:
        """Give `claim` back to the queue without using up a retry, if still ours."""
        try:
            if self.queue.release(claim, self.tally.usage()):
                log.info("job released", extra=fields(job_id=claim.job_id, attempt=claim.attempt))
        except DatabaseError as exc:
            log.warning(
                "could not release job; the supervisor will",
                extra=fields(job_id=claim.job_id, error=str(exc)),
            )
