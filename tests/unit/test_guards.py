"""Only prose reaches the chapter: the cleaner against a corpus of what models say
around their prose, and of openings that are prose and must stay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generation.story.guards import ProseCleaner, count_words, repeats_opening

PROSE = "The tide had turned by the time Mara reached the quay.\n\nShe did not look back."

PREAMBLES = [
    "Here is section 2:",
    "Here's section 3 of chapter 4:",
    "Here is the next part of the story:",
    "Here's the continuation of the chapter:",
    "Sure! Here is the next section:",
    "Sure, here's the section you asked for:",
    "Certainly! Here is the prose for this section:",
    "Of course. Here is section 1:",
    "Okay!",
    "Sure!",
    "Certainly.",
    "Absolutely!",
    "Chapter 3",
    "Chapter 3:",
    "Chapter Three: The Drowned Bell",
    "CHAPTER 12",
    "Section 2",
    "Section 2: The Storm",
    "**Section 2**",
    "**Section 2: The Storm**",
    "## Section 2",
    "# The Drowned Bell",
    "### Chapter 4 — Low Tide",
    "Part II",
    "[Section 3]",
    "(Section 3)",
    "```",
    "```markdown",
    "---",
    "***",
    "Title: The Drowned Bell",
    "**The Drowned Bell**",
    "As requested, here is section 2 of the chapter.",
    "Continuing from where we left off, here is the next section:",
    "Here is section 2, continuing the chapter.",
]
SIGN_OFFS = [
    "Let me know if you'd like any changes.",
    "Let me know if you want me to continue.",
    "I hope you enjoyed this section!",
    "I hope this fits the story.",
    "Would you like me to continue with the next section?",
    "Do you want me to write the next part?",
    "Shall I continue?",
    "If you'd like, I can adjust the tone or add more detail.",
    "Feel free to ask for revisions.",
    "(Word count: 312)",
    "Word count: 298",
    "[Approximate word count: 300]",
    "(300 words)",
    "End of section 2.",
    "**End of Chapter 3**",
    "```",
    "---",
]
KEPT_OPENINGS = [
    '"Sure," she said, and closed the door behind her.',
    "Sure enough, the door was open when she came back.",
    "Chapter and verse, he could quote them all, and he did.",
    "Part of her wanted to run; the rest of her stayed.",
    "Part one of the plan was simple: wait for the tide.",
    "Here in the valley, the snow fell without a sound.",
    "Here is where the road ended, and the marsh began.",
    "Here is the story of how I lost my hand.",
    "Okay, she thought, one more step.",
    "Certainly the bell had rung; everyone had heard it.",
    "Section by section, the wall came down.",
    "Titles meant nothing to the men on the quay.",
    "“Here is the key,” Ilya said.",
]
KEPT_ENDINGS = [
    "I hope you know what you are doing, she thought.",
    "Would you like to see the lighthouse? he had asked her once.",
    "Let the tide come, then.",
    "End of the line, the conductor called.",
    "Twenty words, no more, was all she wrote.",
]


def clean(chunks: list[str], prefix: str = "") -> str:
    cleaner = ProseCleaner(prefix)
    out = "".join(cleaner.feed(c) for c in chunks) + cleaner.finish()
    assert out == prefix + cleaner.text
    return out


def streamed(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("preamble", PREAMBLES)
@pytest.mark.parametrize("size", [3, 1000])
def test_opening_meta_lines_never_reach_the_chapter(preamble, size):
    assert clean(streamed(f"{preamble}\n\n{PROSE}", size)) == PROSE
    assert clean(streamed(f"{preamble}\n{PROSE}", size)) == PROSE


@pytest.mark.parametrize("sign_off", SIGN_OFFS)
@pytest.mark.parametrize("size", [2, 1000])
def test_closing_sign_offs_never_reach_the_chapter(sign_off, size):
    assert clean(streamed(f"{PROSE}\n\n{sign_off}", size)) == PROSE
    assert clean(streamed(f"Here is section 2:\n\n{PROSE}\n\n---\n{sign_off}\n", size)) == PROSE


@pytest.mark.parametrize("opening", KEPT_OPENINGS)
@pytest.mark.parametrize("size", [3, 1000])
def test_prose_that_only_looks_like_meta_is_kept(opening, size):
    text = f"{opening}\n\n{PROSE}"
    assert clean(streamed(text, size)) == text


@pytest.mark.parametrize("ending", KEPT_ENDINGS)
def test_prose_endings_that_only_look_like_sign_offs_are_kept(ending):
    text = f"{PROSE}\n\n{ending}"
    assert clean(streamed(text, 5)) == text


def test_a_sign_off_inside_the_prose_is_prose():
    text = f"{PROSE}\n\nLet me know if you'd like any changes.\n\nThe bell rang again."
    assert clean(streamed(text, 4)) == text


def test_no_more_than_a_line_is_held_back():
    cleaner = ProseCleaner()
    first = cleaner.feed("The tide had turned by the time Mara reached the quay.\n\n")
    assert first.startswith("The tide had turned")
    held = cleaner.feed("Let me kn")
    assert held == ""  # this line may still become a sign-off
    # A whole line that reads like a sign-off waits for what follows it...
    assert cleaner.feed("ow, she said to no one, whether the boats are in.\n") == ""
    # ...and goes on with the prose that does.
    out = cleaner.feed("The boats were in.\n")
    assert out.startswith("\n\nLet me know, she said") and out.endswith("The boats were in.")


@given(st.text(min_size=1, max_size=300))
def test_what_is_handed_on_is_always_part_of_the_text(text):
    cleaner = ProseCleaner()
    out = "".join(cleaner.feed(c) for c in streamed(text, 7)) + cleaner.finish()
    assert out == cleaner.text
    # Nothing invented: every handed-on character comes from the stream, in order.
    rest = iter(text)
    assert all(ch in rest for ch in out)


def test_a_continuation_joins_without_a_break_and_drops_its_own_preamble():
    cleaner = ProseCleaner()
    out = cleaner.feed("She reached for the handle and it ")
    cleaner.resume()
    out += cleaner.feed("Here is the continuation of the section:\n")
    out += cleaner.feed("turned, slowly, under her hand.") + cleaner.finish()
    assert out == "She reached for the handle and it turned, slowly, under her hand."


def test_word_counts_hold_for_scripts_without_spaces():
    assert count_words("The tide turned.") == 3
    assert count_words("潮が変わった。") == 6  # one per character: an upper bound
    assert count_words("น้ำขึ้นแล้ว") >= 5
    assert count_words("밀물이 들어왔다") == 2  # Korean is written with spaces


def test_a_section_that_restarts_the_chapter_is_caught():
    earlier = "The tide had turned by the time Mara reached the quay, and the boats were in."
    chapter = f"{earlier}\n\nShe waited."
    assert repeats_opening(f"{earlier}\n\nThen she left.", chapter)
    assert not repeats_opening("A different opening, long enough to be compared.", chapter)
