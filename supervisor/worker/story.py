"""The story so far, between the database and the writer: what a claim read of the
story becomes the request's `StoryContext`, and a finished chapter becomes the
story's memory after it (`StoryMemory`, stored with the chapter's `finish`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from generation.story import Preferences
from generation.story.memory import (
    arc_entries,
    bible_entries,
    passages,
    search_config,
    update_arc,
    update_bible,
)
from generation.types import BibleEntry, ChapterSummary, StoryContext
from supervisor.db.jobs import ChapterContext
from supervisor.db.memory import StoryMemory


def story_context(
    context: ChapterContext, preferences: Preferences, budget_tokens: int
) -> StoryContext:
    """What the claim read of the story, as the writer's StoryContext."""
    return StoryContext(
        chapter_title=context.chapter_title,
        chapter_count=context.chapter_count,
        arc=tuple(ChapterSummary(e.chapter, e.gist) for e in arc_entries(context.arc)),
        summaries=tuple(ChapterSummary(n, text) for n, text in context.recent_summaries),
        written=context.written,
        missing=context.missing,
        previous_ending=context.previous_ending,
        characters=tuple(_bible(context, preferences)),
        facts=tuple(str(f) for f in _facts(context) if f),
        stale_after=context.stale_after,
        budget_tokens=budget_tokens,
    )


def _bible(
    context: ChapterContext, preferences: Preferences, chapter: int = 0, summary: str = ""
) -> list[BibleEntry]:
    """The stored characters with the preferences' own merged in (a story's first
    chapter has only those), their state updated from `chapter`'s `summary` if given."""
    seeds = [(c.name, c.description) for c in preferences.characters]
    return update_bible(bible_entries(context.characters), seeds, chapter, summary)


def _facts(context: ChapterContext) -> list[Any]:
    return context.facts if isinstance(context.facts, list) else []


def memory_after(
    context: ChapterContext, preferences: Preferences, text: str, summary: str
) -> StoryMemory:
    """The story's memory once this chapter is written: its passages, the arc and
    the bible updated from its summary, and staleness when it rewrote an earlier
    chapter than the latest written one."""
    number = context.chapter_number
    arc = update_arc(arc_entries(context.arc), number, summary)
    stale_after = context.stale_after
    if context.later_written:
        stale_after = number if stale_after is None else min(stale_after, number)
    return StoryMemory(
        passages=passages(text),
        config=search_config(preferences.language),
        arc=[entry.to_json() for entry in arc],
        characters=[asdict(e) for e in _bible(context, preferences, number, summary)],
        facts=_facts(context),
        stale_after=stale_after,
    )
