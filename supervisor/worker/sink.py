"""Between a claimed job and the chapter writer: `prepare` checks the job and finds
where to resume; `ChapterSink` persists what the writer hands back.

The writer knows nothing of SQL; the sink is the bridge: each callback becomes one
fenced queue call. Live text goes to readers through a strategy chosen at boot
(`live`: appended to the row, or broadcast over Supabase Realtime), at most once per
interval, so database load does not grow with the number of streamed chunks; each
finished section is committed whole with its checkpoint. Each checkpoint carries
the length and a digest of the text committed so far, which `prepare` checks the
chapter against before resuming (`resume`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from generation.errors import PermanentError
from generation.story import Preferences, SectionStats, resolve_preferences
from generation.types import DEFAULT_BUDGET_TOKENS, ChapterRequest, Checkpoint, Outline
from supervisor.db.jobs import ChapterContext, Claim
from supervisor.db.seam import JobQueue
from supervisor.logs import fields
from supervisor.worker.live import FLUSH_INTERVAL_SECONDS, LiveText, RowText
from supervisor.worker.resume import DIGEST_KEY, new_digest, resume_point
from supervisor.worker.story import story_context

log = logging.getLogger(__name__)

__all__ = ["FLUSH_INTERVAL_SECONDS", "ChapterSink", "JobRejected", "PreparedJob", "prepare"]

OUTLINE_PROGRESS = 10


class JobRejected(PermanentError):
    """The job cannot be run as it stands."""


def progress_after(sections_done: int, total: int) -> int:
    """10% for the outline, then 80% spread over the sections: 30/50/70/90 for four."""
    return OUTLINE_PROGRESS + (80 * sections_done) // total


@dataclass(frozen=True)
class PreparedJob:
    """A checked job: what to write and where it stands. `restart`: the chapter no
    longer matches its checkpoint and is written again from its first section with the
    checkpoint's outline, saved again as a new outline is (`ChapterSink.on_outline`,
    which empties the chapter) before any section is written."""

    request: ChapterRequest
    checkpoint: Checkpoint
    written_text: str
    content_length: int
    restart: bool = False


def prepare(
    queue: JobQueue, claim: Claim, budget_tokens: int = DEFAULT_BUDGET_TOKENS
) -> PreparedJob:
    """Check ownership and preferences, find where to resume (a checkpoint the chapter
    does not match, or a malformed one, is not trusted), and cut back a half-written
    section.

    Raises JobRejected (permanent) with a message that says why; the chapter is not
    touched in that case.
    """
    if claim.chapter_id is None:
        raise JobRejected("job has no chapter_id")
    context = claim.context
    if context is None:
        raise JobRejected(f"chapter {claim.chapter_id} does not exist")
    if context.sequence_id != claim.sequence_id:
        raise JobRejected(
            f"chapter {claim.chapter_id} does not belong to sequence {claim.sequence_id}"
        )
    if context.user_id != claim.user_id:
        raise JobRejected(f"sequence {claim.sequence_id} does not belong to user {claim.user_id}")
    preferences = _preferences(queue, claim, context)
    point = resume_point(claim, preferences, context.content)
    checkpoint, length = point.checkpoint, point.length
    if length < len(context.content) and checkpoint.outline is not None and not point.restart:
        queue.cut_back(claim, length)
    request = ChapterRequest(
        chapter_number=context.chapter_number,
        preferences=preferences,
        sequence_title=context.sequence_title,
        premise=context.premise,
        story=story_context(context, preferences, budget_tokens),
    )
    written = context.content[:length] if checkpoint.outline is not None else ""
    return PreparedJob(request, checkpoint, written, len(written), point.restart)


def _preferences(queue: JobQueue, claim: Claim, context: ChapterContext) -> Preferences:
    """The job's preferences over its story's defaults; keys no field reads are named
    on the job, and logged the first time they are."""
    resolved = resolve_preferences(claim.user_preferences, context.story_preferences)
    if resolved.unknown and queue.note_unknown_preferences(claim, resolved.unknown):
        log.warning(
            "user_preferences has keys no field reads; they are recorded on the job",
            extra=fields(job_id=claim.job_id, keys=",".join(resolved.unknown)),
        )
    return resolved.preferences


@dataclass
class ChapterSink:
    """The writer's callbacks, persisted through fenced queue calls."""

    queue: JobQueue
    claim: Claim
    total_sections: int
    content_length: int
    outline: Outline | None
    on_progress: Callable[[int], None]
    #: Called every FLUSH_INTERVAL_SECONDS while text streams: a long section keeps the
    #: worker's heartbeat fresh between checkpoints.
    on_alive: Callable[[], None] = lambda: None
    #: Called once a finished section is committed (for logs and metrics).
    on_section: Callable[[int, SectionStats], None] = lambda index, stats: None
    #: What the job spent so far, stored with each checkpoint (None: leave it).
    usage: Callable[[], Any] = lambda: None
    clock: Callable[[], float] = time.monotonic
    #: The committed text the chapter already holds (`content_length` characters).
    written_text: str = ""
    #: How live text reaches readers (None: appended to the row, as LIVE_TEXT=row).
    live: LiveText | None = None
    #: The text streamed since the last checkpoint.
    section: list[str] = field(default_factory=list)
    last_alive: float = float("-inf")
    #: Running digest of the chapter's text: what the checkpoint's digest is taken of.
    digest: Any = field(init=False, repr=False)
    #: Who wrote each finished section ({"provider", "model"}), kept in the checkpoint.
    sources: list[dict[str, str]] = field(init=False, repr=False)
    #: The outline's title is the app's own (kept over the model's on a rewrite).
    app_title: bool = False
    #: What each step's prompt held of the story so far, by step; kept in the
    #: checkpoint (a resumed job keeps its earlier steps') and stored on the job.
    context: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.digest = new_digest(self.written_text)
        self.sources = _saved_sources(self.claim) if self.outline is not None else []
        checkpoint = self.claim.checkpoint
        saved = checkpoint.get("context") if isinstance(checkpoint, Mapping) else None
        self.context = dict(saved) if isinstance(saved, Mapping) else {}
        self._live: LiveText = self.live or RowText(self.queue, self.claim)

    @property
    def flushes(self) -> int:
        """Live text writes so far (appends, or events sent)."""
        return self._live.flushes

    def begin(self) -> None:
        """The attempt begins where the chapter stands (`content_length`)."""
        self._live.begin(self.content_length)

    def on_context(self, step: str, manifest: Mapping[str, Any]) -> None:
        self.context[step] = dict(manifest)

    def on_outline(self, outline: Outline) -> None:
        self.outline = outline
        self.content_length = 0
        self.digest = new_digest()
        self.sources = []
        stored = outline.to_json()
        if self.app_title:
            stored["title_source"] = "app"
        self.section.clear()
        self.queue.start_chapter(
            self.claim,
            outline=stored,
            title=outline.title or None,
            checkpoint=self._checkpoint(0),
            progress=OUTLINE_PROGRESS,
            usage=self.usage(),
        )
        self._live.begin(0)
        self.on_progress(OUTLINE_PROGRESS)

    def on_chunk(self, text: str) -> None:
        # PostgreSQL text cannot hold NUL; a model that emits one must not fail the job.
        text = text.replace("\x00", "")
        self.section.append(text)
        now = self.clock()
        self._live.add(text, now)
        if now - self.last_alive >= FLUSH_INTERVAL_SECONDS:
            self.last_alive = now
            self.on_alive()

    def on_section_done(self, index: int, stats: SectionStats) -> None:
        done = index + 1
        self.sources[index:] = [stats.source.to_json() if stats.source else {}]
        progress = progress_after(done, self.total_sections)
        owed = self._live.owed(self._take())
        self.queue.checkpoint(
            self.claim,
            text=owed,
            progress=progress,
            step=f"section {done} of {self.total_sections}",
            checkpoint=self._checkpoint(done),
            usage=self.usage(),
        )
        self._live.committed(self.content_length)
        self.on_progress(progress)
        self.on_section(index, stats)

    def on_section_restart(self, index: int, why: str) -> None:
        """The section is written again: what was streamed of it is taken back, from
        the chapter (row mode) and from readers (a reset event in broadcast mode)."""
        self.section.clear()
        self._live.owed("")  # live text not yet sent: dropped with the rest
        self.queue.cut_back(self.claim, self.content_length)
        self._live.begin(self.content_length)
        log.info(
            "section written again",
            extra=fields(job_id=self.claim.job_id, section=index + 1, why=why),
        )

    def checkpoint_json(self) -> dict[str, Any]:
        return self._checkpoint(self.total_sections)

    def _take(self) -> str:
        """The section streamed since the last checkpoint, now counted as committed."""
        text = "".join(self.section)
        self.section.clear()
        self.content_length += len(text)
        self.digest.update(text.encode("utf-8", "surrogatepass"))
        return text

    def _checkpoint(self, sections_done: int) -> dict[str, Any]:
        assert self.outline is not None
        checkpoint = {
            "outline": self.outline.to_json(),
            "sections_done": sections_done,
            "content_length": self.content_length,
            DIGEST_KEY: self.digest.hexdigest(),
        }
        sources = self.sources[:sections_done]
        if any(sources):  # providers that do not say who served them record nothing
            checkpoint["sections"] = sources
        if self.context:
            checkpoint["context"] = self.context
        return checkpoint


def _saved_sources(claim: Claim) -> list[dict[str, str]]:
    """Who wrote the sections the claim's checkpoint says are done (a resumed job keeps
    their record); [] when it says nothing usable."""
    saved = claim.checkpoint.get("sections") if isinstance(claim.checkpoint, Mapping) else None
    if not isinstance(saved, list):
        return []
    return [dict(entry) if isinstance(entry, dict) else {} for entry in saved]
