"""Fakes shared by unit tests: a settable clock, processes that are never forked, and
an in-memory job queue that fences writes exactly as the SQL does (procrastinate's
InMemoryConnector is the model)."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from generation.story.retrieval import nearest
from generation.types import Passage
from supervisor.arbiter.procs import Exit
from supervisor.db.jobs import ChapterContext, Claim, Outcome, Status
from supervisor.db.memory import StoryMemory
from supervisor.db.retries import failed_attempt
from supervisor.errors import LeaseLostError


class Clock:
    """A clock that moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeProcesses:
    """`Processes` that hands out pids and records what it was asked to do."""

    next_pid: int = 100
    spawned: list[int] = field(default_factory=list)
    killed: list[tuple[int, int]] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)

    def spawn(self, child, before_child) -> int:
        self.next_pid += 1
        self.spawned.append(self.next_pid)
        return self.next_pid

    def kill(self, pid: int, sig: int) -> bool:
        self.killed.append((pid, sig))
        return True

    def reap(self) -> list[Exit]:
        ended, self.exits = self.exits, []
        return ended


@dataclass
class MemoryJob:
    """One job and its chapter, as the database would hold them."""

    preferences: Any
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    status: Status = Status.PENDING
    attempts: int = 0
    owner: str | None = None
    checkpoint: Mapping[str, Any] | None = None
    progress: int = 0
    step: str | None = None
    error: str | None = None
    content: str = ""
    outline: Mapping[str, Any] | None = None
    summary: str | None = None
    embedding: list[float] | None = None
    usage: Any = None
    context: Mapping[str, Any] | None = None
    memory: Any = None
    #: Its story (its own unless given), owner, chapter number and priority: what the
    #: claim orders by, as the SQL does.
    sequence_id: uuid.UUID = field(default_factory=uuid.uuid4)
    user_id: uuid.UUID | None = None
    chapter_number: int = 1
    priority: int = 0
    #: The writes that changed something, in order: (statement, detail).
    writes: list[tuple[str, Any]] = field(default_factory=list)
    #: Live text events sent on the chapter's topic: (event, payload).
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.status in (Status.PENDING, Status.PROCESSING)


class MemoryQueue:
    """The worker's statements (`supervisor.db.seam.JobQueue`, every one of them:
    tests/unit/test_seam.py checks) over jobs held in memory. Every write on behalf of
    a claim matches only while `Claim.holds` (the SQL's fence) says so, else raises
    LeaseLostError; a failed attempt is settled by the queue's own rule
    (`retries.failed_attempt`)."""

    def __init__(self, max_per_user: int | None = None) -> None:
        self.jobs: dict[uuid.UUID, MemoryJob] = {}
        #: What every send_live answers: the WARNINGs realtime.send would raise.
        self.live_warnings: list[str] = []
        self.user_id = uuid.uuid4()
        self.max_per_user = max_per_user
        #: Earlier chapters' passages a test plants for `recall`, and their vectors by
        #: the model `embedded_by` for `recall_with_vectors`.
        self.passages: list[Passage] = []
        self.vectors_of: dict[Passage, list[float]] = {}
        self.embedded_by = ""
        #: The story's default preferences (sequences.preferences) every claim reads.
        self.story_preferences: Any = None

    def add(self, preferences: Any = None, **state: Any) -> MemoryJob:
        job = MemoryJob(preferences if preferences is not None else {}, **state)
        job.user_id = job.user_id or self.user_id
        self.jobs[job.id] = job
        return job

    def _runnable(self, job: MemoryJob) -> bool:
        """The claim's rule: pending, nothing else of its story processing, no earlier
        chapter of it live."""
        story = [o for o in self.jobs.values() if o.sequence_id == job.sequence_id and o is not job]
        return job.status is Status.PENDING and not any(
            o.status is Status.PROCESSING or (o.live and o.chapter_number < job.chapter_number)
            for o in story
        )

    def claim(self, owner: str, max_per_user: int | None = None) -> Claim | None:
        """The claim's order: priority, then the user's jobs in flight, then age
        (insertion order); MAX_JOBS_PER_USER (this queue's, or `max_per_user`) leaves
        out users at the cap."""
        running = Counter(j.user_id for j in self.jobs.values() if j.status is Status.PROCESSING)
        cap = self.max_per_user if max_per_user is None else max_per_user
        order = list(self.jobs.values())
        candidates = [
            j for j in order if self._runnable(j) and (cap is None or running[j.user_id] < cap)
        ]
        if not candidates:
            return None
        job = min(candidates, key=lambda j: (-j.priority, running[j.user_id], order.index(j)))
        job.status, job.owner, job.attempts = Status.PROCESSING, owner, job.attempts + 1
        earlier = sorted(
            (o for o in order if o.sequence_id == job.sequence_id and o.summary
             and o.chapter_number < job.chapter_number),
            key=lambda o: o.chapter_number,
        )  # fmt: skip
        context = ChapterContext(
            job.sequence_id, job.user_id, job.chapter_number, job.content, "The Keeper", None,
            recent_summaries=tuple((o.chapter_number, o.summary) for o in earlier),
            written=tuple(o.chapter_number for o in earlier),
            story_preferences=self.story_preferences,
        )  # fmt: skip
        return Claim(
            job.id, owner, job.attempts, job.id, job.sequence_id, job.user_id,
            job.preferences, job.checkpoint, context, job.usage,
        )  # fmt: skip

    def _held(self, claim: Claim) -> MemoryJob:
        job = self.jobs.get(claim.job_id)
        if job is None or not claim.holds(job.id, job.status, job.owner, job.attempts):
            raise LeaseLostError(f"job {claim.job_id} is no longer held by {claim.owner}")
        return job

    def start_chapter(
        self,
        claim: Claim,
        *,
        outline: Mapping[str, Any],
        title: str | None,
        checkpoint: Mapping[str, Any],
        progress: int,
        usage: Any = None,
    ) -> None:
        job = self._held(claim)
        job.usage = usage if usage is not None else job.usage
        job.outline, job.content, job.checkpoint = outline, "", checkpoint
        job.progress, job.step = progress, "outline"
        job.writes.append(("start_chapter", outline))

    def note_unknown_preferences(self, claim: Claim, keys: Sequence[str]) -> bool:
        job = self._held(claim)
        before = (job.context or {}).get("unknown_preferences")
        job.context = {**(job.context or {}), "unknown_preferences": list(keys)}
        job.writes.append(("note_unknown_preferences", list(keys)))
        return before != list(keys)

    def cut_back(self, claim: Claim, length: int) -> None:
        job = self._held(claim)
        job.content = job.content[:length]
        job.writes.append(("cut_back", length))

    def append_text(self, claim: Claim, text: str) -> None:
        job = self._held(claim)
        job.content += text
        job.writes.append(("append_text", text))

    def send_live(self, claim: Claim, event: str, payload: Mapping[str, Any]) -> list[str]:
        job = self._held(claim)
        job.events.append((event, dict(payload)))
        return list(self.live_warnings)

    def checkpoint(
        self,
        claim: Claim,
        *,
        text: str,
        progress: int,
        step: str,
        checkpoint: Mapping[str, Any],
        usage: Any = None,
    ) -> None:
        job = self._held(claim)
        job.usage = usage if usage is not None else job.usage
        job.content += text
        job.progress, job.step, job.checkpoint = progress, step, checkpoint
        job.writes.append(("checkpoint", step))

    def finish(
        self,
        claim: Claim,
        *,
        summary: str,
        embedding: Sequence[float],
        embedding_model: str,
        word_count: int,
        checkpoint: Mapping[str, Any],
        next_owner: str | None = None,
        usage: Any = None,
        context: Mapping[str, Any] | None = None,
        memory: StoryMemory | None = None,
        max_per_user: int | None = None,
    ) -> Claim | None:
        job = self._held(claim)
        job.usage = usage if usage is not None else job.usage
        job.status, job.progress, job.step = Status.COMPLETED, 100, "completed"
        job.summary, job.embedding, job.checkpoint = summary, list(embedding), checkpoint
        # As the statement does: the steps merged over what the job holds (its
        # unknown_preferences).
        if context is not None:
            job.context = {**(job.context or {}), **context}
        job.memory = memory
        job.writes.append(("finish", word_count))
        return None if next_owner is None else self.claim(next_owner, max_per_user)

    def fail(
        self,
        claim: Claim,
        message: str,
        *,
        retryable: bool,
        max_retries: int,
        backoff_base: float,
        retry_after: float | None = None,
        rng: random.Random | None = None,
        usage: Any = None,
        cut_to: int | None = None,
    ) -> Outcome:
        job = self._held(claim)
        failed = failed_attempt(
            claim,
            message,
            retryable=retryable,
            max_retries=max_retries,
            backoff_base=backoff_base,
            retry_after=retry_after,
            rng=rng,
        )
        job.usage = usage if usage is not None else job.usage
        if cut_to is not None:
            job.content = job.content[:cut_to]
        job.status = failed.status
        job.owner = None if failed.requeue else job.owner
        job.error = message  # what the caller said; the queue stores `failed.message`
        job.writes.append(("fail", message))
        return failed.outcome(job.id)

    def release(self, claim: Claim, usage: Any = None) -> bool:
        try:
            job = self._held(claim)
        except LeaseLostError:
            return False
        job.usage = usage if usage is not None else job.usage
        job.status, job.owner, job.attempts = Status.PENDING, None, job.attempts - 1
        job.writes.append(("release", None))
        return True

    def recall(
        self, claim: Claim, queries: Sequence[str], *, config: str, limit: int
    ) -> list[list[Passage]]:
        """What `passages` (a test's) hold for each query: every passage sharing a word
        with it, in the order given."""
        self._held(claim)
        found = []
        for query in queries:
            words = set(query.lower().split())
            found.append([p for p in self.passages if words & set(p.text.lower().split())][:limit])
        return found

    def recall_with_vectors(
        self,
        claim: Claim,
        queries: Sequence[str],
        vectors: Sequence[Sequence[float]],
        *,
        config: str,
        model: str,
        limit: int,
    ) -> tuple[list[list[Passage]], list[list[Passage]]]:
        """`recall`'s passages, and what `vectors_of` (a test's: passage -> its vector
        by `embedded_by`) ranks nearest to each query vector (nothing for another
        model)."""
        found = self.recall(claim, queries, config=config, limit=limit)
        if model != self.embedded_by:
            return found, [[] for _ in vectors]
        pool = [(p, self.vectors_of[p]) for p in self.passages if p in self.vectors_of]
        return found, nearest(vectors, pool, limit)
