"""Value objects for jobs, built from rows. A claimed job never has an optional id."""

from __future__ import annotations

import enum
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


def owner_name(pid: int) -> str:
    """`locked_by` for the worker process `pid` on this host."""
    return f"{socket.gethostname()}/{pid}"


class Status(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Job:
    """A row of generation_jobs, as admin commands show it."""

    id: UUID
    sequence_id: UUID
    chapter_id: UUID | None
    user_id: UUID
    user_preferences: Any
    status: Status
    current_step: str | None
    progress: int
    error_message: str | None
    attempts: int
    run_after: datetime | None
    locked_by: str | None
    heartbeat_at: datetime | None
    checkpoint: Mapping[str, Any] | None
    usage: Any
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime | None
    #: What each step's prompt held of the story so far (the context manifest).
    context: Any = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        return cls(
            **{name: row.get(name) for name in cls.__dataclass_fields__ if name != "status"},
            status=Status(row["status"]),
        )


@dataclass(frozen=True)
class ChapterContext:
    """The chapter a claimed job writes, with what its prompts need of the story."""

    sequence_id: UUID
    user_id: UUID
    chapter_number: int
    content: str
    sequence_title: str
    premise: str | None
    #: The latest earlier chapters' summaries as (chapter number, summary), oldest first.
    recent_summaries: tuple[tuple[int, str], ...] = ()
    #: Every earlier chapter with a summary, by number.
    written: tuple[int, ...] = ()
    #: The app's own title for the chapter (None: the model titles it).
    chapter_title: str | None = None
    chapter_count: int = 0
    #: The story's lowest chapter number (chapters before it are not counted missing).
    first_chapter: int = 1
    #: A later chapter of the story is already written (this one is a rewrite).
    later_written: bool = False
    previous_ending: str = ""
    #: The story's memory as stored (storyworker.story_memory), raw.
    arc: Any = None
    characters: Any = None
    facts: Any = None
    stale_after: int | None = None
    #: The story's default preferences (sequences.preferences) as stored, raw; None
    #: when it has none.
    story_preferences: Any = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChapterContext:
        recent = data.get("recent_summaries") or []
        return cls(
            sequence_id=UUID(data["sequence_id"]),
            user_id=UUID(data["user_id"]),
            chapter_number=data["chapter_number"],
            content=data["content"],
            sequence_title=data["sequence_title"] or "",
            premise=data["premise"],
            recent_summaries=tuple((r["chapter"], r["summary"]) for r in reversed(recent)),
            written=tuple(data.get("written") or ()),
            chapter_title=data.get("chapter_title"),
            chapter_count=data.get("chapter_count") or 0,
            first_chapter=data.get("first_chapter") or data["chapter_number"],
            later_written=bool(data.get("later_written")),
            previous_ending=data.get("previous_ending") or "",
            arc=data.get("arc"),
            characters=data.get("characters"),
            facts=data.get("facts"),
            stale_after=data.get("stale_after"),
            story_preferences=data.get("story_preferences"),
        )

    @property
    def missing(self) -> tuple[int, ...]:
        """Earlier chapters (from the story's first) with no summary: never written,
        failed or cancelled."""
        written = set(self.written)
        return tuple(
            n for n in range(self.first_chapter, self.chapter_number) if n not in written
        )


#: What every statement written on behalf of a claim matches on (queries.sql), so a
#: worker that lost its lease, or whose job was cancelled, changes nothing.
FENCE = (
    "id = %(job_id)s and locked_by = %(owner)s and attempts = %(attempt)s and status = 'processing'"
)


@dataclass(frozen=True)
class Claim:
    """A job this worker holds. Every write on its behalf is fenced by
    (`job_id`, `owner`, `attempt`) and by the job still being `processing`."""

    job_id: UUID
    owner: str
    attempt: int
    chapter_id: UUID | None
    sequence_id: UUID
    user_id: UUID
    user_preferences: Any
    checkpoint: Mapping[str, Any] | None
    #: None when the chapter does not exist (deleted, or a bad chapter_id).
    context: ChapterContext | None = None
    #: What earlier attempts spent (generation_jobs.usage).
    usage: Any = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Claim:
        return cls(
            job_id=row["id"],
            owner=row["locked_by"],
            attempt=row["attempts"],
            chapter_id=row["chapter_id"],
            sequence_id=row["sequence_id"],
            user_id=row["user_id"],
            user_preferences=row["user_preferences"],
            checkpoint=row["checkpoint"],
            context=ChapterContext.from_json(row["chapter_context"])
            if row.get("chapter_context")
            else None,
            usage=row.get("usage"),
        )

    @property
    def fence(self) -> dict[str, Any]:
        """The query parameters every fenced statement matches on (`FENCE`)."""
        return {"job_id": self.job_id, "owner": self.owner, "attempt": self.attempt}

    def holds(self, job_id: UUID, status: Status, locked_by: str | None, attempts: int) -> bool:
        """Whether a job in this state is still this claim's: `FENCE`, in Python."""
        return (job_id, status, locked_by, attempts) == (
            self.job_id,
            Status.PROCESSING,
            self.owner,
            self.attempt,
        )


@dataclass(frozen=True)
class Outcome:
    """What a fail/rescue did to a job: its new status and, if requeued, the delay."""

    job_id: UUID
    status: Status
    retry_in_seconds: float | None = None
