"""Where a claimed job resumes: its checkpoint, validated and checked against the chapter.

A checkpoint is what the last committed section left behind: the outline, how many
sections are done, how long the chapter was then (`content_length`) and a digest of
that text (`content_sha256`). It is trusted only when it has that shape and the chapter
still begins with exactly that text. A malformed one (JSON of another shape) means a
fresh start; a chapter that no longer matches it (cleared or edited by someone, then
retried) is written again from its first section, keeping the outline when it still
fits the preferences. Either is said once in the log. Checkpoints written before the
digest existed are checked by length alone.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from generation.story import Preferences
from generation.types import Checkpoint, Outline
from supervisor.db.jobs import Claim
from supervisor.logs import fields

log = logging.getLogger(__name__)

#: The checkpoint key holding `content_digest` of the committed text.
DIGEST_KEY = "content_sha256"


def content_digest(text: str) -> str:
    """The digest a checkpoint stores of the chapter text it commits."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def new_digest(text: str = "") -> Any:
    """A running digest of `text`, to be fed what is appended after it."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass"))


class MalformedCheckpoint(ValueError):
    """The stored checkpoint is not of the shape storyworker writes."""


@dataclass(frozen=True)
class SavedCheckpoint:
    """A well-formed stored checkpoint that has an outline."""

    outline: Outline
    sections_done: int
    content_length: int
    digest: str | None


@dataclass(frozen=True)
class ResumePoint:
    """Where to go on from: the checkpoint for the writer, how many characters of the
    chapter are committed, and whether the chapter must be emptied and the kept
    outline saved again before writing (`restart`)."""

    checkpoint: Checkpoint
    length: int
    restart: bool = False


FRESH = ResumePoint(Checkpoint(), 0)


def _count(value: Any, name: str, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedCheckpoint(f"{name} is {value!r}, not a count")
    if upper is not None and value > upper:
        raise MalformedCheckpoint(f"{name} is {value}, more than the outline's {upper}")
    return value


def parse_checkpoint(saved: Any) -> SavedCheckpoint | None:
    """The stored checkpoint, or None when there is none or it has no outline yet.
    Raises MalformedCheckpoint, saying what is wrong, for any other shape."""
    if saved is None or saved == {}:
        return None
    if not isinstance(saved, Mapping):
        raise MalformedCheckpoint(f"it is a JSON {type(saved).__name__}, not an object")
    raw = saved.get("outline")
    if raw is None:
        return None
    bullets = raw.get("bullets") if isinstance(raw, Mapping) else None
    if (
        not isinstance(raw, Mapping)
        or not isinstance(raw.get("title"), str)
        or not isinstance(bullets, list)
        or not bullets
        or not all(isinstance(b, str) for b in bullets)
    ):
        raise MalformedCheckpoint("its outline is not a title and a list of bullets")
    digest = saved.get(DIGEST_KEY)
    if digest is not None and not isinstance(digest, str):
        raise MalformedCheckpoint(f"{DIGEST_KEY} is {digest!r}, not a string")
    done = _count(saved.get("sections_done", 0), "sections_done", len(bullets))
    length = _count(saved.get("content_length", 0), "content_length")
    if done and not length:  # the writer never commits an empty section
        raise MalformedCheckpoint(f"{done} sections are done but none has any text")
    return SavedCheckpoint(Outline(raw["title"], tuple(bullets)), done, length, digest)


def resume_point(claim: Claim, prefs: Preferences, content: str) -> ResumePoint:
    """Where `claim` goes on from, given the chapter's `content` now."""
    try:
        saved = parse_checkpoint(claim.checkpoint)
    except MalformedCheckpoint as exc:
        log.warning(
            "checkpoint is malformed; starting the chapter over",
            extra=fields(job_id=claim.job_id, reason=str(exc)),
        )
        return FRESH
    if saved is None or len(saved.outline.bullets) != prefs.bullet_count:
        # No outline yet, or the preferences changed since it was written.
        return FRESH
    length = saved.content_length
    committed = content[:length]
    if len(committed) == length and (
        saved.digest is None or content_digest(committed) == saved.digest
    ):
        return ResumePoint(Checkpoint(saved.outline, saved.sections_done), length)
    log.warning(
        "chapter does not match its checkpoint; starting the chapter over, outline kept",
        extra=fields(
            job_id=claim.job_id,
            sections_done=saved.sections_done,
            checkpoint_length=length,
            chapter_length=len(content),
        ),
    )
    return ResumePoint(Checkpoint(saved.outline, 0), 0, restart=True)
