"""The chapter memory the model writes (generation/story/extraction.py): what it is
asked, how its answer is checked and bounded, and how its failure leaves the chapter
complete with the extractive memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from generation.errors import MalformedOutputError, ProviderUnavailableError, RefusedError
from generation.providers.offline import OfflineProvider
from generation.story import schemas
from generation.story.extraction import BOUNDS, memory_ask, read_memory, remember
from generation.story.memory import ARC_MAX_WORDS
from generation.story.preferences import parse_preferences
from generation.story.prompts import data_of
from generation.types import (
    BibleEntry,
    ChapterRequest,
    ChapterSummary,
    JsonAsk,
    Outline,
    StoryContext,
)

PREFS = parse_preferences({"characters": [{"name": "Mara", "description": "the keeper"}]})
STORY = StoryContext(
    arc=(ChapterSummary(1, "One."), ChapterSummary(2, "Two.")),
    characters=(
        BibleEntry("Mara", "the keeper", "(chapter 2) on the quay"),
        BibleEntry("Ilya", "a smuggler"),
        BibleEntry("Wren", "the harbourmaster"),
    ),
    facts=tuple(f"Fact {i}. (chapter 1)" for i in range(30)),
)
REQUEST = ChapterRequest(3, PREFS, "Harbour", "A town by the sea.", story=STORY)
OUTLINE = Outline("T", ("Mara rows out.",))
TEXT = "Mara rowed out past the buoys while Ilya slept."


def answer(**changes: Any) -> dict[str, Any]:
    base = {
        "summary": "Mara rowed out. Ilya slept.",
        "arc": [
            {"chapter": 1, "gist": "One."},
            {"chapter": 2, "gist": "Two."},
            {"chapter": 3, "gist": "Three."},
        ],
        "characters": [{"name": "Mara", "about": "the keeper", "state": "at sea"}],
        "facts": ["The buoys are red."],
    }
    return {**base, **changes}


def test_the_model_is_asked_with_the_memory_so_far_and_a_bounded_shape():
    ask = memory_ask(REQUEST, OUTLINE, TEXT)
    assert (ask.name, ask.kind) == ("chapter_memory", "memory")
    data = data_of(ask.prompt.user)
    assert data["chapter_text"] == TEXT and data["chapter_number"] == 3
    assert data["previous_arc"] == [{"chapter": 1, "gist": "One."}, {"chapter": 2, "gist": "Two."}]
    # Full entries for the characters the chapter names; the rest by name only.
    assert [c["name"] for c in data["known_characters"]] == ["Mara", "Ilya"]
    assert data["other_known_names"] == ["Wren"]
    assert data["known_facts"] == list(STORY.facts[-20:])
    schema = ask.schema["properties"]
    assert schema["arc"]["maxItems"] == 3 and schema["characters"]["maxItems"] == BOUNDS.characters
    assert schema["facts"]["maxItems"] == BOUNDS.facts
    assert ask.schema == schemas.memory_schema(3, BOUNDS.characters, BOUNDS.facts)
    assert f"within {ARC_MAX_WORDS} words" in ask.prompt.user
    # Room for the summary, the whole arc and every entry: more than any part alone.
    assert ask.words > ARC_MAX_WORDS + 150


def test_an_answer_is_read_and_cut_to_its_bounds():
    many = [{"name": f"N{i}", "about": "x" * 999, "state": "s"} for i in range(20)]
    summary, memory = read_memory(
        answer(
            characters=[{"name": " ", "about": "", "state": ""}, *many, "not an entry"],
            facts=[f"Fact {i}." for i in range(20)] + [""],
        ),
        REQUEST,
    )
    assert summary == "Mara rowed out. Ilya slept."
    assert [c.name for c in memory.characters] == [f"N{i}" for i in range(BOUNDS.characters)]
    assert all(len(c.about) == 300 for c in memory.characters)
    assert len(memory.facts) == BOUNDS.facts
    assert [(e.chapter, e.gist) for e in memory.arc] == [(1, "One."), (2, "Two."), (3, "Three.")]


def test_the_arc_keeps_what_the_model_left_out_and_ignores_chapters_it_invented():
    _, memory = read_memory(answer(arc=[{"chapter": 2, "gist": "Two, retold."},
                                        {"chapter": 9, "gist": "Invented."}]), REQUEST)  # fmt: skip
    assert [(e.chapter, e.gist) for e in memory.arc] == [
        (1, "One."),  # left out by the model: kept
        (2, "Two, retold."),
        (3, "Mara rowed out. Ilya slept."),  # its own gist, from the summary
    ]


def test_an_arc_over_its_words_is_condensed_oldest_first():
    long = " ".join(["word"] * 250) + ". And more."
    arc = [{"chapter": n, "gist": long} for n in (1, 2, 3)]
    _, memory = read_memory(answer(arc=arc), REQUEST)
    assert sum(len(e.gist.split()) for e in memory.arc) <= ARC_MAX_WORDS
    assert memory.arc[-1].chapter == 3


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ({"summary": ""}, "no summary"),
        ({"summary": None}, "'summary' is not a str"),
        ({"characters": {"name": "Mara"}}, "'characters' is not a list"),
        ({"facts": "The buoys are red."}, "'facts' is not a list"),
        ({"arc": None}, "'arc' is not a list"),
    ],
)
def test_an_answer_not_of_its_shape_is_malformed(broken, why):
    with pytest.raises(MalformedOutputError, match=why):
        read_memory(answer(**broken), REQUEST)


class Provider:
    """A provider whose answer in JSON is scripted: a dict, or an error to raise."""

    name = "scripted"
    embedding_model = ""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.asked: list[str] = []

    def structured(self, request: ChapterRequest, ask: JsonAsk) -> dict[str, Any]:
        self.asked.append("structured")
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
        self.asked.append("summarize")
        return "**Summary**\n\nMara went to sea."


def test_the_models_memory_is_one_call_that_also_writes_the_summary():
    provider = Provider(answer())
    remembered = remember(REQUEST, provider, OUTLINE, TEXT)  # type: ignore[arg-type]
    assert provider.asked == ["structured"]
    assert remembered.summary == "Mara rowed out. Ilya slept."
    assert remembered.memory is not None
    assert remembered.note["by"] == "model" and remembered.note["characters"] == ["Mara"]
    assert remembered.note["arc_chapters"] == [1, 2, 3] and remembered.note["facts"] == 1


@pytest.mark.parametrize(
    "failure",
    [
        ProviderUnavailableError("HTTP 500 after 3 attempts"),
        MalformedOutputError("the chapter memory is not valid JSON"),
        RefusedError("the model refused"),
        {"summary": 3},  # garbage of the right kind
    ],
    ids=["500", "not-json", "refused", "garbage"],
)
def test_a_failed_extraction_falls_back_to_the_summary_and_says_why(failure, caplog):
    provider = Provider(failure)
    remembered = remember(REQUEST, provider, OUTLINE, TEXT)  # type: ignore[arg-type]
    assert provider.asked == ["structured", "summarize"]
    assert remembered.summary == "Mara went to sea."  # the model's heading taken off
    assert remembered.memory is None
    assert remembered.note["by"] == "extractive" and remembered.note["error"]
    assert "extractive memory stands in" in caplog.text


def test_a_provider_without_answers_in_json_gets_the_extractive_memory():
    class Plain:
        name = "plain"

        def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
            return "Mara went to sea."

    remembered = remember(REQUEST, Plain(), OUTLINE, TEXT)  # type: ignore[arg-type]
    assert remembered.memory is None and "writes no answers in JSON" in remembered.note["error"]


def test_a_summary_that_fails_too_fails_the_chapter():
    class Down(Provider):
        def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
            raise ProviderUnavailableError("down")

    with pytest.raises(ProviderUnavailableError):
        remember(REQUEST, Down(ProviderUnavailableError("down")), OUTLINE, TEXT)  # type: ignore[arg-type]


@pytest.fixture
def offline() -> Iterator[OfflineProvider]:
    yield OfflineProvider()


def test_the_offline_provider_extracts_the_storys_own_names_by_rule(offline):
    outline = offline.outline(REQUEST)
    text = "".join(offline.stream_section(REQUEST, outline, 0, ""))
    answer = offline.structured(REQUEST, memory_ask(REQUEST, outline, text))
    summary, memory = read_memory(answer, REQUEST)
    named = {c.name for c in memory.characters}
    assert named and named <= {"Mara", "Ilya", "Wren"}  # the story's, not new stand-ins
    mara = next((c for c in memory.characters if c.name == "Mara"), None)
    assert mara is None or mara.about == "the keeper"
    assert summary.startswith("[Offline summary] Chapter 3")
    assert [e.chapter for e in memory.arc] == [1, 2, 3]
    again = offline.structured(REQUEST, memory_ask(REQUEST, outline, text))
    assert again == answer  # deterministic


def test_the_offline_provider_writes_no_other_answer_in_json(offline):
    ask = JsonAsk(memory_ask(REQUEST, OUTLINE, TEXT).prompt, "two_birds", {}, 10)
    with pytest.raises(MalformedOutputError, match="cannot write the two birds"):
        offline.structured(REQUEST, ask)
