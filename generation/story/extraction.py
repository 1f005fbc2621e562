"""A finished chapter's memory, written by the model in one call: the chapter's
summary, the rolling arc updated from the previous one, and the story bible's entries
for the characters it shows and the facts it establishes, as one JSON object
(`Provider.structured`). That one call takes the place of the plain summary call, so a
chapter costs no more calls than before, only the longer answer.

It is bounded: the answer's output limit follows from its parts' bounds (BOUNDS), its
request is tried at most MEMORY_ATTEMPTS times, and what comes back is checked and cut
to the bounds (`read_memory`). Its failure never fails the
chapter: any provider error or malformed answer falls back to the plain summary call
and the extractive memory (generation/story/memory.py), and the step's manifest says
why (`Remembered.note`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from generation.errors import GenerationError, MalformedOutputError
from generation.story import prompts, schemas
from generation.story.guards import clean
from generation.story.memory import (
    ABOUT_MAX_CHARS,
    ARC_MAX_WORDS,
    NAME_MAX_CHARS,
    STATE_MAX_CHARS,
    ArcEntry,
    bound_arc,
    gist_of,
    names,
)
from generation.types import BibleEntry, ChapterRequest, Outline, Provider

log = logging.getLogger(__name__)

#: What one chapter's memory may hold.
BOUNDS = prompts.Bounds(arc_words=ARC_MAX_WORDS, characters=12, facts=8)
#: The newest known facts the model is shown (so it does not say them again).
KNOWN_FACTS_SHOWN = 20
#: Longest gist of one chapter in the arc, in characters.
GIST_MAX_CHARS = 600
#: Attempts at the memory call's request: its failure costs the chapter only the plain
#: summary call, which then has the provider's full retries.
MEMORY_ATTEMPTS = 2
#: Words per bible entry, fact and arc entry's wrapping, for the output limit.
_WORDS_PER_CHARACTER, _WORDS_PER_FACT, _WORDS_PER_ARC_ENTRY = 60, 25, 6


@dataclass(frozen=True)
class ModelMemory:
    """What the model made of a finished chapter for the story's memory."""

    #: The whole rolling arc after the chapter, bounded (bound_arc).
    arc: tuple[ArcEntry, ...]
    #: The characters the chapter shows, as the model describes them (not yet merged).
    characters: tuple[BibleEntry, ...]
    #: The facts the chapter establishes.
    facts: tuple[str, ...]


@dataclass(frozen=True)
class Remembered:
    """The chapter's summary; its memory as the model wrote it (None: the extractive
    one stands in); and `note`, what the job's manifest records of the step."""

    summary: str
    memory: ModelMemory | None
    note: dict[str, Any] = field(default_factory=dict)


def remember(
    request: ChapterRequest, provider: Provider, outline: Outline, text: str
) -> Remembered:
    """The chapter's summary and memory from one model call; on any provider error or
    malformed answer, the plain summary (whose own failure fails the chapter, as
    before) and no model memory, the note saying why."""
    started = time.monotonic()
    try:
        summary, memory = _ask(request, provider, outline, text)
    except GenerationError as exc:
        log.warning(
            "the model's chapter memory failed; the extractive memory stands in",
            extra={"sw_fields": {"chapter": request.chapter_number, "error": str(exc)}},
        )
        summary = clean(provider.summarize(request, outline, text))
        if not summary:
            raise MalformedOutputError("the provider returned an empty chapter summary") from None
        note = {"by": "extractive", "error": str(exc)[:300], "elapsed_ms": _ms(started)}
        return Remembered(summary, None, note)
    note = {
        "by": "model",
        "elapsed_ms": _ms(started),
        "characters": [c.name for c in memory.characters],
        "facts": len(memory.facts),
        "arc_chapters": [e.chapter for e in memory.arc],
        "arc_words": sum(len(e.gist.split()) for e in memory.arc),
    }
    return Remembered(summary, memory, note)


def _ask(
    request: ChapterRequest, provider: Provider, outline: Outline, text: str
) -> tuple[str, ModelMemory]:
    structured = getattr(provider, "structured", None)
    if structured is None:
        raise MalformedOutputError(f"the {provider.name} provider writes no answers in JSON")
    answer = structured(request, memory_ask(request, outline, text))
    return read_memory(answer, request)


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def memory_ask(request: ChapterRequest, outline: Outline, text: str) -> schemas.JsonAsk:
    """The request for chapter `request.chapter_number`'s memory, finished as `text`."""
    story = request.story
    arc = [e for e in story.arc if e.chapter != request.chapter_number]
    shown = [c for c in story.characters if names(text, c.name)]
    memory = {
        "previous_arc": [{"chapter": e.chapter, "gist": e.text} for e in arc],
        "known_characters": [c.to_json() for c in shown],
        "other_known_names": [c.name for c in story.characters if c not in shown],
        "known_facts": list(story.facts[-KNOWN_FACTS_SHOWN:]),
    }
    words = (
        prompts.SUMMARY_TARGET_WORDS
        + BOUNDS.arc_words
        + _WORDS_PER_ARC_ENTRY * (len(arc) + 1)
        + _WORDS_PER_CHARACTER * BOUNDS.characters
        + _WORDS_PER_FACT * BOUNDS.facts
    )
    return schemas.JsonAsk(
        prompt=prompts.memory_prompt(request, outline, text, memory, BOUNDS),
        name=schemas.MEMORY,
        schema=schemas.memory_schema(len(arc) + 1, BOUNDS.characters, BOUNDS.facts),
        words=words,
        kind="memory",
        attempts=MEMORY_ATTEMPTS,
    )


def read_memory(answer: Mapping[str, Any], request: ChapterRequest) -> tuple[str, ModelMemory]:
    """The summary and memory in the model's `answer`, checked and cut to BOUNDS:
    MalformedOutputError when the summary is missing or a part is not of its type;
    entries without a name or text are left out, and an arc entry for a chapter the
    story does not have is ignored (the chapter's own gist comes from its summary
    when the model left it out; an earlier one left out keeps its gist)."""
    summary = clean(_typed(answer, "summary", str))
    if not summary:
        raise MalformedOutputError("the chapter memory has no summary")
    arc = _arc(_typed(answer, "arc", list), request, summary)
    characters = [
        BibleEntry(
            _text(item, "name", NAME_MAX_CHARS),
            _text(item, "about", ABOUT_MAX_CHARS),
            _text(item, "state", STATE_MAX_CHARS),
        )
        for item in _typed(answer, "characters", list)
        if isinstance(item, Mapping)
    ]
    facts = [" ".join(f.split()) for f in _typed(answer, "facts", list) if isinstance(f, str)]
    return summary, ModelMemory(
        arc=tuple(arc),
        characters=tuple(c for c in characters if c.name)[: BOUNDS.characters],
        facts=tuple(f for f in facts if f)[: BOUNDS.facts],
    )


def _arc(items: Sequence[Any], request: ChapterRequest, summary: str) -> list[ArcEntry]:
    """The previous arc with the model's gists in place of those it rewrote (one it
    left out keeps its gist: only bound_arc drops chapters), and this chapter's."""
    number = request.chapter_number
    arc = {e.chapter: ArcEntry(e.chapter, e.text) for e in request.story.arc}
    arc.pop(number, None)
    written: dict[int, ArcEntry] = {}
    for item in items:
        chapter = item.get("chapter") if isinstance(item, Mapping) else None
        gist = _text(item, "gist", GIST_MAX_CHARS) if chapter in {*arc, number} else ""
        if gist:
            written.setdefault(chapter, ArcEntry(chapter, gist))
    arc.update(written)
    arc.setdefault(number, ArcEntry(number, gist_of(summary)))
    return bound_arc(list(arc.values()))


def _typed(answer: Mapping[str, Any], key: str, kind: type) -> Any:
    value = answer.get(key)
    if not isinstance(value, kind):
        raise MalformedOutputError(f"the chapter memory's {key!r} is not a {kind.__name__}")
    return value


def _text(item: Mapping[str, Any], key: str, limit: int) -> str:
    value = item.get(key)
    return " ".join(value.split())[:limit] if isinstance(value, str) else ""
