"""The story so far: the context builder's budget, labels, cuts and counts, and the
story's memory (passages, arc, bible), with no database."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from generation.story import prompts
from generation.story.context import assemble, cut_to_tokens, estimate_tokens
from generation.story.memory import (
    ARC_MAX_WORDS,
    ArcEntry,
    passages,
    search_config,
    update_arc,
    update_bible,
)
from generation.story.preferences import parse_preferences
from generation.types import (
    BibleEntry,
    ChapterRequest,
    ChapterSummary,
    Outline,
    Passage,
    StoryContext,
)

SENTENCES = st.lists(
    st.text(st.characters(categories=["L"]), min_size=1, max_size=12), min_size=1, max_size=30
).map(lambda words: " ".join(words) + ".")
PARAGRAPHS = st.lists(SENTENCES, min_size=1, max_size=40).map(" ".join)


def story(**fields) -> StoryContext:
    return StoryContext(**fields)


@settings(max_examples=60, deadline=None)
@given(
    summaries=st.lists(PARAGRAPHS, max_size=12),
    ending=PARAGRAPHS,
    passages_=st.lists(PARAGRAPHS, max_size=6),
    names=st.lists(st.text(st.characters(categories=["L"]), min_size=1, max_size=20), max_size=8),
    budget=st.integers(min_value=500, max_value=8000),
)
def test_the_story_so_far_never_exceeds_its_budget(summaries, ending, passages_, names, budget):
    context = story(
        summaries=tuple(ChapterSummary(i + 1, s) for i, s in enumerate(summaries)),
        written=tuple(range(1, len(summaries) + 1)),
        arc=tuple(ChapterSummary(i + 1, s[:200]) for i, s in enumerate(summaries)),
        previous_ending=ending,
        passages=tuple(Passage(1, i * 100, p) for i, p in enumerate(passages_)),
        characters=tuple(BibleEntry(n, "who " + n) for n in names),
        budget_tokens=budget,
    )
    built = assemble(context, len(summaries) + 1, with_ending=True, focus="")
    counted = sum(built.manifest["tokens"].values())
    assert counted == built.manifest["used_tokens"] <= budget
    # What the counts say is what the prompt holds (the notes aside).
    data = built.data
    texts = [s["summary"] for s in data["recent_chapter_summaries"]]
    texts += [p["text"] for p in data.get("relevant_passages_from_earlier_chapters", [])]
    shown_tokens = sum(estimate_tokens(t) for t in texts)
    assert shown_tokens <= counted


@given(PARAGRAPHS, st.integers(min_value=1, max_value=400))
def test_a_cut_ends_at_a_sentence_or_a_whole_word(text, tokens):
    cut, was_cut = cut_to_tokens(text, tokens)
    assert estimate_tokens(cut) <= tokens
    assert text.startswith(cut)
    if was_cut and cut:
        following = text[len(cut) : len(cut) + 1]
        assert cut.endswith(".") or following in (" ", "")
    if not was_cut:
        assert cut == text
    tail, _ = cut_to_tokens(text, tokens, keep="end")
    assert text.endswith(tail) and estimate_tokens(tail) <= tokens


def test_summaries_are_labelled_by_chapter_and_what_is_hidden_is_counted_truly():
    summaries = tuple(ChapterSummary(n, f"Chapter {n} happened. " * 60) for n in range(17, 25))
    context = story(
        summaries=summaries,
        written=tuple(range(1, 25)),
        arc=tuple(ChapterSummary(n, f"Gist {n}.") for n in range(5, 25)),
        budget_tokens=3000,
    )
    built = assemble(context, 25, with_ending=False)
    shown = [s["chapter"] for s in built.data["recent_chapter_summaries"]]
    assert shown and shown == sorted(shown) and shown[-1] == 24
    first = shown[0]
    arc_chapters = built.manifest["arc"]["chapters"]
    assert arc_chapters == list(range(5, first))
    # Chapters 1-4 are condensed out of the arc: said, with their true numbers.
    assert built.manifest["not_shown"] == [1, 2, 3, 4]
    assert "chapters 1-4" in built.data["not_shown"]


def test_missing_chapters_are_named_never_counted_as_zero():
    context = story(summaries=(ChapterSummary(2, "Two."),), written=(2,), missing=(1, 3))
    built = assemble(context, 4, with_ending=False)
    assert built.manifest["missing"]["chapters"] == [1, 3]
    assert "Chapters 1, 3 of this story have not been written" in built.data["missing_chapters"]


def request_for(context: StoryContext, **prefs) -> ChapterRequest:
    return ChapterRequest(chapter_number=3, preferences=parse_preferences(prefs), story=context)


def story_data(prompt: prompts.Prompt) -> dict:
    import json

    start = prompt.user.index(prompts.DATA_OPEN) + len(prompts.DATA_OPEN)
    return json.loads(prompt.user[start : prompt.user.index(prompts.DATA_CLOSE)])


def test_how_the_last_chapter_ended_goes_to_the_outline_and_section_one_only():
    ending = "The door closed behind her. She did not look back at the harbour."
    request = request_for(story(previous_ending=ending, summaries=(ChapterSummary(2, "Two."),)))
    outline = Outline("T", ("one", "two"))
    key = "how_chapter_2_ended"
    assert story_data(prompts.outline_prompt(request))["story_so_far"][key] == ending
    first = story_data(prompts.section_prompt(request, outline, 0, ""))
    assert first["story_so_far"][key] == ending
    second = story_data(prompts.section_prompt(request, outline, 1, "Some prose."))
    assert key not in second["story_so_far"]
    resumed = story_data(prompts.section_prompt(request, outline, 0, "Half a section"))
    assert key not in resumed["story_so_far"] and resumed["chapter_so_far_tail"]


def test_the_apps_title_is_sent_and_characters_named_in_the_bullet_come_first():
    cast = tuple(BibleEntry(f"Extra{i}", "x " * 80) for i in range(30))
    context = story(
        chapter_title="The Drowned Bell", characters=(*cast, BibleEntry("Wren", "a thief"))
    )
    request = request_for(context)
    assert story_data(prompts.outline_prompt(request))["chapter_title"] == "The Drowned Bell"
    outline = Outline("T", ("Wren steals the bell",))
    data = story_data(prompts.section_prompt(request, outline, 0, ""))
    names = [c["name"] for c in data["story_so_far"]["story_bible"]["characters"]]
    assert names[0] == "Wren" and len(names) < 31


def test_the_facts_that_get_room_are_those_about_the_bullets_characters_then_the_newest():
    facts = tuple(
        f"Fact {n}: " + ("Ilya keeps the key. " if n == 3 else "the tide turns. ") + "x " * 40
        + f"(chapter {n})"
        for n in range(1, 31)
    )  # fmt: skip
    context = story(characters=(BibleEntry("Ilya", "a smuggler"),), facts=facts)
    built = assemble(context, 31, with_ending=False, focus="Mara asks Ilya for the key")
    shown = built.data["story_bible"]["facts"]
    assert facts[2] in shown  # about Ilya, whom the bullet names, though among the oldest
    assert facts[-1] in shown and facts[0] not in shown  # then the newest; the oldest go
    assert shown == [f for f in facts if f in shown]  # in the story's order
    assert built.manifest["bible"]["left_out"] == len(facts) - len(shown) > 0


def test_the_arc_stays_bounded_over_a_hundred_chapters():
    arc: list[ArcEntry] = []
    for n in range(1, 101):
        summary = f"In chapter {n} the keeper climbs the tower. " + "She remembers. " * 30
        arc = update_arc(arc, n, summary)
        assert sum(len(e.gist.split()) for e in arc) <= ARC_MAX_WORDS
    assert arc[-1].chapter == 100 and [e.chapter for e in arc] == sorted(e.chapter for e in arc)
    rewritten = update_arc(arc, 100, "A new ending. Then silence.")
    assert rewritten[-1].gist == "A new ending. Then silence." and len(rewritten) >= len(arc) - 1


def test_the_bible_merges_by_name_and_keeps_the_latest_state():
    known = [BibleEntry("Mara", "the keeper's daughter", "(chapter 1) Mara lit the lamp.")]
    seeds = [("mara", "ignored: already described"), ("Ilya", "a smuggler")]
    bible = update_bible(known, seeds, 2, "Ilya hid the crate. Mara found the scar on his hand.")
    by_name = {e.name: e for e in bible}
    assert set(by_name) == {"Mara", "Ilya"}
    assert by_name["Mara"].about == "the keeper's daughter"
    assert by_name["Mara"].state == "(chapter 2) Mara found the scar on his hand."
    assert by_name["Ilya"].about == "a smuggler"
    assert by_name["Ilya"].state == "(chapter 2) Ilya hid the crate."


@given(st.lists(PARAGRAPHS, min_size=1, max_size=20))
def test_passages_cover_the_chapter_at_their_offsets(paragraphs):
    text = "\n\n".join(paragraphs)
    found = passages(text)
    assert found and found[0][0] == 0
    for offset, body in found:
        first = body.split("\n\n")[0]
        assert text[offset:].startswith(first[:50])
    words = re.findall(r"\w+", text)
    assert re.findall(r"\w+", " ".join(body for _, body in found)) == words


def test_search_configurations_by_language():
    assert search_config("English") == "english"
    assert search_config("pt-BR") == "portuguese"
    assert search_config("日本語") == "simple"


def test_a_passage_the_ending_already_shows_is_not_shown_twice():
    # Chapter 2's last paragraphs are what retrieval finds for chapter 3's first
    # section as often as not; the prompt already carries them as how chapter 2 ended.
    paragraphs = [
        f"Paragraph {n} begins. "
        + " ".join(f"Line {n}.{i} of the harbour tale." for i in range(14))
        for n in range(1, 7)
    ]
    chapter_2 = "\n\n".join(paragraphs)
    pieces = {offset: Passage(2, offset, body) for offset, body in passages(chapter_2)}
    # The ending starts halfway through paragraph 5 (at a sentence).
    start = chapter_2.index("Line 5.4")
    ending = chapter_2[start:]
    early, straddling, inside = (
        next(p for p in pieces.values() if p.text.startswith(f"Paragraph {n} ")) for n in (2, 5, 6)
    )
    context = story(previous_ending=ending, passages=(inside, early, straddling))

    first = assemble(context, 3, with_ending=True)
    assert first.data["how_chapter_2_ended"] == ending
    shown = first.data["relevant_passages_from_earlier_chapters"]
    assert [p["text"] for p in shown] == [early.text, chapter_2[straddling.offset : start].rstrip()]
    for p in shown:
        assert not set(p["text"].split(". ")) & set(ending.split(". "))
    cut = [(p["chapter"], p["offset"]) for p in first.manifest["passages_in_ending"]]
    assert cut == [(2, inside.offset), (2, straddling.offset)]

    # A later section is not shown the ending: there the passages are shown whole.
    later = assemble(context, 3, with_ending=False)
    texts = [p["text"] for p in later.data["relevant_passages_from_earlier_chapters"]]
    assert texts == [inside.text, early.text, straddling.text]
    assert "passages_in_ending" not in later.manifest
