"""The story so far, between the database and the writer: what a claim read of the
story becomes the request's `StoryContext`, and a finished chapter becomes the
story's memory after it (`StoryMemory`, stored with the chapter's `finish`)."""

from __future__ import annotations

from dataclasses import asdict

from generation.story import Preferences
from generation.story.memory import (
    arc_entries,
    bible_entries,
    fact_entries,
    merge_bible,
    merge_facts,
    search_config,
    update_arc,
    update_bible,
)
from generation.story.writer import ChapterResult
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
        facts=tuple(f.shown() for f in fact_entries(context.facts)),
        stale_after=context.stale_after,
        budget_tokens=budget_tokens,
    )


def _bible(
    context: ChapterContext, preferences: Preferences, chapter: int = 0, summary: str = ""
) -> list[BibleEntry]:
    """The stored characters with the preferences' own merged in (a story's first
    chapter has only those), their state updated from `chapter`'s `summary` if given."""
    return update_bible(bible_entries(context.characters), _seeds(preferences), chapter, summary)


def _seeds(preferences: Preferences) -> list[tuple[str, str]]:
    return [(c.name, c.description) for c in preferences.characters]


def memory_after(
    context: ChapterContext, preferences: Preferences, result: ChapterResult
) -> StoryMemory:
    """The story's memory once this chapter is written: its passages (with their
    embeddings), the arc and the bible as the model updated them (merged with the
    stored bible and the preferences' characters; the extractive rules from the summary
    when the model's update failed), and staleness when it rewrote an earlier chapter
    than the latest written one."""
    number, model = context.chapter_number, result.memory
    facts = fact_entries(context.facts)
    if model is None:
        arc = update_arc(arc_entries(context.arc), number, result.summary)
        bible = _bible(context, preferences, number, result.summary)
    else:
        arc = list(model.arc)
        bible = merge_bible(bible_entries(context.characters), _seeds(preferences), number,
                            model.characters)  # fmt: skip
        facts = merge_facts(facts, number, model.facts)
    stale_after = context.stale_after
    if context.later_written:
        stale_after = number if stale_after is None else min(stale_after, number)
    embedded = bool(result.embedding_model) and len(result.passage_vectors) == len(result.passages)
    return StoryMemory(
        passages=result.passages,
        config=search_config(preferences.language),
        arc=[entry.to_json() for entry in arc],
        characters=[asdict(e) for e in bible],
        facts=[fact.to_json() for fact in facts],
        stale_after=stale_after,
        vectors=result.passage_vectors if embedded else (),
        embedding_model=result.embedding_model if embedded else "",
    )
