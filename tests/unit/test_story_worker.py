"""The story so far between the claim and the writer (supervisor/worker/story.py): what a
claim read becomes the request's context, and what a finished chapter leaves behind."""

from __future__ import annotations

import uuid

from generation.story.preferences import parse_preferences
from supervisor.db.jobs import ChapterContext
from supervisor.worker.story import memory_after, story_context

PREFS = parse_preferences({"characters": [{"name": "Mara", "description": "the keeper"}]})


def context(number: int, **fields) -> ChapterContext:
    return ChapterContext(uuid.uuid4(), uuid.uuid4(), number, "", "Story", None, **fields)


def test_a_rewrite_of_an_earlier_chapter_marks_the_memory_stale_after_it():
    later = context(2, later_written=True, first_chapter=1)
    assert memory_after(later, PREFS, "Text.", "Mara left.").stale_after == 2
    already = context(2, later_written=True, stale_after=1)
    assert memory_after(already, PREFS, "Text.", "Mara left.").stale_after == 1
    latest = context(4, later_written=False, stale_after=2)
    assert memory_after(latest, PREFS, "Text.", "Mara left.").stale_after == 2


def test_the_memory_after_a_chapter_holds_its_passages_arc_and_bible():
    remembered = memory_after(context(3), PREFS, "One.\n\nTwo.", "Mara climbed. She slept.")
    assert remembered.passages == [(0, "One.\n\nTwo.")]
    assert remembered.arc == [{"chapter": 3, "gist": "Mara climbed. She slept."}]
    assert remembered.characters == [
        {"name": "Mara", "about": "the keeper", "state": "(chapter 3) Mara climbed."}
    ]
    assert remembered.config == "english"


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
