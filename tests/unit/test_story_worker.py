"""The story so far between the claim and the writer (supervisor/worker/story.py): what a
claim read becomes the request's context, and what a finished chapter leaves behind."""

from __future__ import annotations

import re
import uuid

from generation.providers.offline import OfflineProvider
from generation.story import write_chapter
from generation.story.extraction import ModelMemory
from generation.story.memory import ArcEntry, passages
from generation.story.preferences import parse_preferences
from generation.story.writer import ChapterResult
from generation.types import BibleEntry, ChapterRequest, Checkpoint, Outline
from supervisor.db.jobs import ChapterContext
from supervisor.worker.story import memory_after, story_context

STAND_INS = ("Mara", "Ilya", "Wren", "Tomas", "Odile", "Kasimir")
PREFS = parse_preferences({"characters": [{"name": "Mara", "description": "the keeper"}]})


def context(number: int, **fields) -> ChapterContext:
    return ChapterContext(uuid.uuid4(), uuid.uuid4(), number, "", "Story", None, **fields)


def written(
    text: str, summary: str, memory: ModelMemory | None = None, vectors: int = 0
) -> ChapterResult:
    """A finished chapter as the writer returns it (`vectors`: embedded, of that size)."""
    pieces = tuple(passages(text))
    return ChapterResult(
        outline=Outline("T", ("a",)),
        text=text,
        summary=summary,
        embedding=[1.0] * vectors,
        embedding_model="m-embed" if vectors else "",
        word_count=len(text.split()),
        memory=memory,
        passages=pieces,
        passage_vectors=tuple([0.5] * vectors for _ in pieces) if vectors else (),
    )


def test_a_rewrite_of_an_earlier_chapter_marks_the_memory_stale_after_it():
    later = context(2, later_written=True, first_chapter=1)
    assert memory_after(later, PREFS, written("Text.", "Mara left.")).stale_after == 2
    already = context(2, later_written=True, stale_after=1)
    assert memory_after(already, PREFS, written("Text.", "Mara left.")).stale_after == 1
    latest = context(4, later_written=False, stale_after=2)
    assert memory_after(latest, PREFS, written("Text.", "Mara left.")).stale_after == 2


def test_the_memory_after_a_chapter_holds_its_passages_arc_and_bible():
    remembered = memory_after(
        context(3), PREFS, written("One.\n\nTwo.", "Mara climbed. She slept.")
    )
    assert remembered.passages == (((0, "One.\n\nTwo.")),)
    assert remembered.arc == [{"chapter": 3, "gist": "Mara climbed. She slept."}]
    assert remembered.characters == [
        {"name": "Mara", "about": "the keeper", "state": "(chapter 3) Mara climbed.", "seen": 3}
    ]
    assert remembered.config == "english"
    assert remembered.vectors == () and remembered.embedding_model == ""


def test_the_models_memory_is_merged_with_the_stored_bible_and_the_authors_characters():
    read = context(
        3,
        arc=[{"chapter": 1, "gist": "One."}, {"chapter": 2, "gist": "Two."}],
        characters=[
            {"name": "Mara", "about": "the keeper", "state": "(chapter 1) old", "seen": 1},
            {"name": "Ilya", "about": "a smuggler", "state": "(chapter 2) hiding", "seen": 2},
        ],
        facts=[{"chapter": 1, "text": "The key is brass."}],
    )
    model = ModelMemory(
        arc=(ArcEntry(1, "One, shorter."), ArcEntry(2, "Two."), ArcEntry(3, "Three.")),
        characters=(
            BibleEntry("mara", "a thief", "on the roof"),  # the author's description stands
            BibleEntry("Wren", "the harbourmaster", "asleep"),  # new to the story
        ),
        facts=("Ilya owes Wren money.", "the key is BRASS."),  # the second is known
    )
    remembered = memory_after(read, PREFS, written("Text.", "Summary.", model, vectors=4))
    assert remembered.arc == [
        {"chapter": 1, "gist": "One, shorter."},
        {"chapter": 2, "gist": "Two."},
        {"chapter": 3, "gist": "Three."},
    ]
    assert remembered.characters == [
        {"name": "Mara", "about": "the keeper", "state": "(chapter 3) on the roof", "seen": 3},
        {"name": "Ilya", "about": "a smuggler", "state": "(chapter 2) hiding", "seen": 2},
        {"name": "Wren", "about": "the harbourmaster", "state": "(chapter 3) asleep", "seen": 3},
    ]
    assert remembered.facts == [
        {"chapter": 1, "text": "The key is brass."},
        {"chapter": 3, "text": "Ilya owes Wren money."},
    ]
    assert remembered.embedding_model == "m-embed" and len(remembered.vectors) == 1


def test_the_stored_facts_reach_the_prompt_with_their_chapter():
    read = context(2, facts=[{"chapter": 1, "text": "The key is brass."}, "An old one."])
    assert story_context(read, PREFS, 5000).facts == (
        "The key is brass. (chapter 1)",
        "An old one.",
    )


def test_what_a_claim_read_becomes_the_requests_story_context():
    read = context(
        4,
        recent_summaries=((2, "Two."), (3, "Three.")),
        written=(2, 3),
        first_chapter=1,
        previous_ending="The end of three.",
        arc=[{"chapter": 2, "gist": "Two."}, {"chapter": 3, "gist": "Three."}],
        characters=[{"name": "Ilya", "about": "a smuggler", "state": ""}],
    )
    story = story_context(read, PREFS, 5000)
    assert [s.chapter for s in story.summaries] == [2, 3] and story.missing == (1,)
    assert [c.name for c in story.characters] == ["Ilya", "Mara"]
    assert story.previous_ending == "The end of three." and story.budget_tokens == 5000


class Quiet:
    """Chapter callbacks that keep nothing."""

    def on_context(self, step, manifest): ...
    def on_outline(self, outline): ...
    def on_section_restart(self, index, why): ...
    def on_chunk(self, text): ...
    def on_section_done(self, index, stats): ...


def test_the_offline_provider_keeps_its_characters_through_the_bible_it_extracts():
    # What `storyworker demo` shows without a key: the names chapter 1 used are in the
    # bible the offline provider extracted, and chapters 2 and 3 are told them and use
    # them, as the worker carries the memory from one chapter's finish to the next claim.
    prefs = parse_preferences({"bullet_count": 2, "words_per_bullet": 60})
    provider, stored, used = OfflineProvider(), {}, []
    for number in (1, 2, 3):
        read = context(number, written=tuple(range(1, number)), **stored)
        story = story_context(read, prefs, 6000)
        request = ChapterRequest(number, prefs, "The Keeper", "A lighthouse.", story=story)
        result = write_chapter(request, provider, Checkpoint(), Quiet())
        names = {c.name for c in story.characters}
        used.append({n for n in STAND_INS if re.search(rf"\b{n}\b", result.text)})
        if number > 1:
            assert names == used[0]  # told the characters chapter 1 introduced
        assert result.memory is not None and used[-1] == used[0]
        remembered = memory_after(read, prefs, result)
        stored = {"arc": remembered.arc, "characters": remembered.characters,
                  "facts": remembered.facts}  # fmt: skip
    assert [c["name"] for c in stored["characters"]] == sorted(used[0], key=list(STAND_INS).index)
