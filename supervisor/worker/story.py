"""The story so far, between the database and the writer: what a claim read of the
story becomes the request's `StoryContext`, and a finished chapter becomes the
story's memory after it (`StoryMemory`, stored with the chapter's `finish`)."""

from __future__ import annotations

from generation.story import Preferences
from generation.story.memory import (
    arc_entries,
    bible_entries,
    passages,
    search_config,
    update_arc,
    update_bible,
)
from generation.types import ChapterSummary, StoryContext
from supervisor.db.jobs import ChapterContext
from supervisor.db.memory import StoryMemory


def story_context(
    context: ChapterContext, preferences: Preferences, budget_tokens: int
) -> StoryContext:
    """What the claim read of the story, as the writer's StoryContext."""
    facts = context.facts if isinstance(context.facts, list) else []
    return StoryContext(
        chapter_title=context.chapter_title,
        chapter_count=context.chapter_count,
        arc=tuple(ChapterSummary(e.chapter, e.gist) for e in arc_entries(context.arc)),
        summaries=tuple(ChapterSummary(n, text) for n, text in context.recent_summaries),
        written=context.written,
        missing=context.missing,
        previous_ending=context.previous_ending,
        characters=tuple(_seeded(context, preferences)),
        facts=tuple(str(f) for f in facts if f),
        stale_after=context.stale_after,
        budget_tokens=budget_tokens,
    )


def _seeded(context: ChapterContext, preferences: Preferences):
    """The bible's characters, with the preferences' own merged in (a story's first
    chapter has only those)."""
    seeds = [(c.name, c.description) for c in preferences.characters]
    return update_bible(bible_entries(context.characters), seeds, 0, "")


def memory_after(
    context: ChapterContext, preferences: Preferences, text: str, summary: str
) -> StoryMemory:
    """The story's memory once this chapter is written: its passages, the arc and
    the bible updated from its summary, and staleness when it rewrote an earlier
    chapter than the latest written one."""
    number = context.chapter_number
    arc = update_arc(arc_entries(context.arc), number, summary)
    seeds = [(c.name, c.description) for c in preferences.characters]
    bible = update_bible(bible_entries(context.characters), seeds, number, summary)
    stale_after = context.stale_after
    if context.later_written:
        stale_after = number if stale_after is None else min(stale_after, number)
    return StoryMemory(
        passages=passages(text),
        config=search_config(preferences.language),
        arc=[entry.to_json() for entry in arc],
        characters=[_entry_json(entry) for entry in bible],
        facts=context.facts if isinstance(context.facts, list) else [],
        stale_after=stale_after,
    )


def _entry_json(entry) -> dict[str, str]:
    return {"name": entry.name, "about": entry.about, "state": entry.state}
