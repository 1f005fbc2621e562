"""The chapter writer: joining rule, resume from a checkpoint, cleaning, failures."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generation.errors import MalformedOutputError
from generation.providers.offline import OfflineProvider
from generation.story.guards import ProseCleaner
from generation.story.memory import passages
from generation.story.preferences import parse_preferences
from generation.story.writer import (
    SECTION_SEPARATOR,
    ChapterResult,
    SectionStats,
    write_chapter,
)
from generation.types import (
    CallRecord,
    ChapterRequest,
    ChapterSummary,
    Checkpoint,
    Outline,
    Passage,
    ProviderHooks,
    StoryContext,
)

BULLETS = 5


class Interrupted(Exception):
    """Stands in for the caller's "lease lost" or "cancelled"."""


@dataclass
class Recorder:
    """ChapterCallbacks that record everything and can interrupt at a chosen point."""

    stop_after_section: int | None = None
    stop_at_chunk: int | None = None
    outlines: list[Outline] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    done: list[tuple[int, SectionStats]] = field(default_factory=list)
    manifests: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    restarts: list[tuple[int, str]] = field(default_factory=list)
    committed_chunks: int = 0
    #: The text a caller would have committed: everything up to the last finished section.
    committed: str = ""

    def on_context(self, step: str, manifest: Mapping[str, Any]) -> None:
        self.manifests[step] = manifest

    def on_outline(self, outline: Outline) -> None:
        self.outlines.append(outline)

    def on_section_restart(self, index: int, why: str) -> None:
        self.restarts.append((index, why))
        self.chunks = self.chunks[: self.committed_chunks]

    def on_chunk(self, text: str) -> None:
        if self.stop_at_chunk is not None and len(self.chunks) == self.stop_at_chunk:
            raise Interrupted("cancelled mid-section")
        self.chunks.append(text)

    def on_section_done(self, index: int, stats: SectionStats) -> None:
        self.done.append((index, stats))
        self.committed = "".join(self.chunks)
        self.committed_chunks = len(self.chunks)
        if index == self.stop_after_section:
            raise Interrupted(f"lease lost after section {index}")


class CountingProvider:
    """Wraps the real OfflineProvider and records which calls it receives."""

    name = "counting"

    def __init__(self, inner: OfflineProvider | None = None) -> None:
        self.inner = inner or OfflineProvider(chunk_words=4)
        self.outline_calls = 0
        self.section_calls: list[int] = []
        self.previous_texts: list[str] = []

    @property
    def embedding_model(self) -> str:
        return self.inner.embedding_model

    def outline(self, request: ChapterRequest) -> Outline:
        self.outline_calls += 1
        return self.inner.outline(request)

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        self.section_calls.append(index)
        self.previous_texts.append(previous_text)
        return self.inner.stream_section(request, outline, index, previous_text)

    def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
        return self.inner.summarize(request, outline, text)

    def embed(self, text: str) -> list[float]:
        return self.inner.embed(text)

    def check(self) -> None:
        self.inner.check()


class ScriptedProvider(CountingProvider):
    """Streams the given chunks for every section and notes when a stream is closed."""

    def __init__(self, chunks: list[str], bullets: int = 1) -> None:
        super().__init__()
        self.chunks = chunks
        self.bullets = bullets
        self.closed = 0

    def outline(self, request: ChapterRequest) -> Outline:
        self.outline_calls += 1
        return Outline("T", tuple(f"bullet {i}" for i in range(self.bullets)))

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        self.section_calls.append(index)
        return self._stream()

    def _stream(self) -> Iterator[str]:
        try:
            yield from self.chunks
        finally:
            self.closed += 1


def make_request(bullets: int = BULLETS, words: int = 60) -> ChapterRequest:
    prefs = parse_preferences({"bullet_count": bullets, "words_per_bullet": words})
    return ChapterRequest(chapter_number=1, preferences=prefs, sequence_title="S")


def full_run(request: ChapterRequest) -> tuple[ChapterResult, Recorder, CountingProvider]:
    recorder, provider = Recorder(), CountingProvider()
    result = write_chapter(request, provider, Checkpoint(), recorder)
    return result, recorder, provider


def test_uninterrupted_run() -> None:
    request = make_request()
    result, recorder, provider = full_run(request)
    assert provider.outline_calls == 1
    assert recorder.outlines == [result.outline]
    assert provider.section_calls == list(range(BULLETS))
    assert "".join(recorder.chunks) == result.text
    assert [i for i, _ in recorder.done] == list(range(BULLETS))
    sections = result.text.split(SECTION_SEPARATOR)
    # Offline prose has paragraph breaks too, so count sections via the stats instead.
    assert len(sections) >= BULLETS
    assert sum(stats.words for _, stats in recorder.done) == result.word_count
    assert result.word_count == len(result.text.split())
    assert result.summary == provider.inner.summarize(request, result.outline, result.text)
    assert result.embedding == provider.inner.embed(result.summary)
    assert result.embedding_model == "offline-embedding"
    assert all(stats.elapsed_seconds >= 0 and stats.characters > 0 for _, stats in recorder.done)


def test_previous_text_given_to_each_section_is_the_chapter_so_far() -> None:
    result, recorder, provider = full_run(make_request())
    assert provider.previous_texts[0] == ""
    for index, previous in enumerate(provider.previous_texts[1:], start=1):
        assert result.text.startswith(previous + SECTION_SEPARATOR)
        chars = sum(s.characters for _, s in recorder.done[:index])
        assert len(previous) == chars + len(SECTION_SEPARATOR) * (index - 1)


@pytest.mark.parametrize("k", range(BULLETS))
def test_resume_after_section_k(k: int) -> None:
    request = make_request()
    expected, _, _ = full_run(request)
    first = Recorder(stop_after_section=k)
    with pytest.raises(Interrupted):
        write_chapter(request, CountingProvider(), Checkpoint(), first)
    assert expected.text.startswith(first.committed)
    assert not first.committed[-1:].isspace()

    checkpoint = Checkpoint(outline=first.outlines[0], sections_done=k + 1)
    second, provider = Recorder(), CountingProvider()
    result = write_chapter(request, provider, checkpoint, second, written_text=first.committed)
    assert provider.outline_calls == 0
    assert second.outlines == []
    assert provider.section_calls == list(range(k + 1, BULLETS))
    assert result.text == expected.text
    assert first.committed + "".join(second.chunks) == result.text
    assert result.summary == expected.summary
    assert result.embedding == expected.embedding


@pytest.mark.parametrize("stop_at_chunk", [0, 3, 17, 40])
def test_resume_after_a_half_written_section(stop_at_chunk: int) -> None:
    request = make_request()
    expected, _, _ = full_run(request)
    first = Recorder(stop_at_chunk=stop_at_chunk)
    with pytest.raises(Interrupted):
        write_chapter(request, CountingProvider(), Checkpoint(), first)
    sections_done = len(first.done)
    # The caller cuts the half-written section away before resuming.
    assert "".join(first.chunks).startswith(first.committed)
    checkpoint = Checkpoint(outline=first.outlines[0], sections_done=sections_done)
    provider = CountingProvider()
    result = write_chapter(request, provider, checkpoint, Recorder(), written_text=first.committed)
    assert provider.section_calls == list(range(sections_done, BULLETS))
    assert result.text == expected.text


def test_finished_checkpoint_only_summarises() -> None:
    request = make_request()
    expected, _, _ = full_run(request)
    provider, recorder = CountingProvider(), Recorder()
    checkpoint = Checkpoint(outline=expected.outline, sections_done=BULLETS)
    result = write_chapter(request, provider, checkpoint, recorder, written_text=expected.text)
    assert provider.outline_calls == 0 and provider.section_calls == []
    assert recorder.chunks == [] and result == expected


def test_checkpoint_beyond_the_outline_is_refused() -> None:
    checkpoint = Checkpoint(outline=Outline("T", ("a", "b")), sections_done=3)
    with pytest.raises(ValueError, match="3 sections"):
        write_chapter(make_request(bullets=2), CountingProvider(), checkpoint, Recorder())


def test_callback_exception_propagates_and_the_stream_is_closed() -> None:
    records: list[CallRecord] = []
    inner = OfflineProvider(hooks=ProviderHooks(on_call=records.append), chunk_words=2)
    recorder = Recorder(stop_at_chunk=2)
    with pytest.raises(Interrupted) as info:
        write_chapter(make_request(), CountingProvider(inner), Checkpoint(), recorder)
    assert str(info.value) == "cancelled mid-section"
    # The offline stream reports its call from its finally block: it ran, so it was closed.
    assert [r.kind for r in records] == ["outline", "prose"]

    scripted = ScriptedProvider(["one ", "two ", "three"])
    with pytest.raises(Interrupted):
        write_chapter(make_request(bullets=1), scripted, Checkpoint(), Recorder(stop_at_chunk=1))
    assert scripted.closed == 1


def test_provider_exception_propagates_and_the_stream_is_closed() -> None:
    class Failing(ScriptedProvider):
        def _stream(self) -> Iterator[str]:
            try:
                yield "Some prose "
                raise MalformedOutputError("stream broke")
            finally:
                self.closed += 1

    provider = Failing([])
    recorder = Recorder()
    with pytest.raises(MalformedOutputError, match="stream broke"):
        write_chapter(make_request(bullets=1), provider, Checkpoint(), recorder)
    assert provider.closed == 1
    assert recorder.chunks == ["Some prose"] and recorder.done == []


def run_scripted(chunks: list[str], bullets: int = 2) -> tuple[ChapterResult, Recorder]:
    recorder = Recorder()
    provider = ScriptedProvider(chunks, bullets)
    result = write_chapter(make_request(bullets=bullets), provider, Checkpoint(), recorder)
    return result, recorder


def test_whitespace_and_headings_are_cleaned_on_the_fly() -> None:
    chunks = [
        "  \n",
        "# Chap",
        "ter One\n",
        "\n**Section 1**\n\n",
        "She ran. ",
        " \n",
        "Fast.  ",
        "\n",
    ]
    result, recorder = run_scripted(chunks)
    assert result.text == "She ran.  \nFast.\n\nShe ran.  \nFast."
    assert recorder.chunks == ["She ran.", "  \nFast.", "\n\nShe ran.", "  \nFast."]
    assert [s.characters for _, s in recorder.done] == [len("She ran.  \nFast.")] * 2


@pytest.mark.parametrize(
    "first_line",
    ["*Run,* she said.", "#1 on the list was fear.", "__init__ was all he typed.", "_Later._"],
)
def test_prose_that_looks_like_markup_is_kept(first_line: str) -> None:
    result, _ = run_scripted([first_line, "\nMore."], bullets=1)
    assert result.text == f"{first_line}\nMore."


def test_a_long_bold_first_line_is_prose() -> None:
    line = "**" + "x" * 250 + "**"
    result, _ = run_scripted([line], bullets=1)
    assert result.text == line


@pytest.mark.parametrize(
    "chunks", [[], [""], ["   ", "\n\n"], ["# Only a heading"], ["## Title\n", "  \n"]]
)
def test_an_empty_section_is_malformed_output(chunks: list[str]) -> None:
    recorder = Recorder()
    provider = ScriptedProvider(chunks, bullets=1)
    with pytest.raises(MalformedOutputError, match="section 1 came back empty") as info:
        write_chapter(make_request(bullets=1), provider, Checkpoint(), recorder)
    assert info.value.retryable
    assert recorder.chunks == [] and recorder.done == []


def test_an_outline_with_the_wrong_bullet_count_is_malformed_output() -> None:
    provider = ScriptedProvider(["x"], bullets=3)
    with pytest.raises(MalformedOutputError, match="3 bullets instead of 2"):
        write_chapter(make_request(bullets=2), provider, Checkpoint(), Recorder())


def test_an_empty_summary_is_malformed_output() -> None:
    class Silent(ScriptedProvider):
        def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
            return "  "

    with pytest.raises(MalformedOutputError, match="summary"):
        write_chapter(make_request(bullets=1), Silent(["x"]), Checkpoint(), Recorder())


pieces = st.lists(
    st.sampled_from(["# Head", "**B**", "\n", " ", "\t", "word", "*", "#", "x.", "  \n\n"]),
    max_size=20,
)


@given(pieces, st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_cleaning_does_not_depend_on_chunk_boundaries(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    whole = ProseCleaner(prefix="\n\n")
    at_once = whole.feed(text) + whole.finish()
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    split = ProseCleaner(prefix="\n\n")
    emitted = [split.feed(text[a:b]) for a, b in itertools.pairwise(bounds)]
    emitted.append(split.finish())
    assert "".join(emitted) == at_once
    assert split.text == whole.text
    if whole.text:
        assert at_once == "\n\n" + whole.text
        assert whole.text == whole.text.strip()
    else:
        assert at_once == ""
    assert all(not piece[-1:].isspace() for piece in emitted)


class PassageSpy(CountingProvider):
    """Records the passages the outline's and each section's request carried."""

    def __init__(self) -> None:
        super().__init__()
        self.passages: list[tuple[Passage, ...]] = []
        self.outline_passages: list[tuple[Passage, ...]] = []

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        self.passages.append(request.story.passages)
        return super().stream_section(request, outline, index, previous_text)

    def outline(self, request: ChapterRequest) -> Outline:
        self.outline_passages.append(request.story.passages)
        return super().outline(request)


def test_each_step_gets_the_passages_recalled_for_it_and_reports_its_manifest() -> None:
    key = Passage(1, 40, "Mara hid the brass key under the third stair.")
    asked: list[str] = []

    def recall(queries: list[str]) -> list[list[Passage]]:
        asked.extend(queries)
        return [[key] for _ in queries]

    story = StoryContext(chapter_title="The Key", summaries=(ChapterSummary(1, "Mara hid it."),))
    request = ChapterRequest(
        chapter_number=2,
        preferences=parse_preferences({"bullet_count": 2, "words_per_bullet": 60}),
        story=story,
    )
    recorder, provider = Recorder(), PassageSpy()
    result = write_chapter(request, provider, Checkpoint(), recorder, recall=recall)
    assert result.outline.title == "The Key"  # the app's title, not the model's
    bullets = result.outline.bullets
    # For the outline, what the app said of the chapter (its title here); then once,
    # for every section's bullet.
    assert asked == ["The Key", *bullets]
    assert list(recorder.manifests) == ["outline", "section 1", "section 2", "memory"]
    # A provider that writes no answers in JSON: the extractive memory, and why.
    assert recorder.manifests["memory"]["by"] == "extractive"
    assert "no answers in JSON" in recorder.manifests["memory"]["error"]
    assert provider.passages == [(key,), (key,)]
    assert provider.outline_passages == [(key,)]
    for step in ("outline", "section 1", "section 2"):
        assert recorder.manifests[step]["passages"]["shown"] == [{"chapter": 1, "offset": 40}]
    assert recorder.manifests["section 1"]["summaries"]["chapters"] == [1]


def test_the_chapter_memory_is_one_call_and_every_passage_is_embedded_in_another() -> None:
    records: list[CallRecord] = []
    provider = OfflineProvider(chunk_words=4, hooks=ProviderHooks(on_call=records.append))
    recorder = Recorder()
    result = write_chapter(make_request(), provider, Checkpoint(), recorder)
    kinds = [r.kind for r in records]
    assert kinds.count("memory") == 1 and kinds.count("embedding") == 1
    assert "summary" not in kinds  # the memory call wrote the summary
    assert result.memory is not None and recorder.manifests["memory"]["by"] == "model"
    assert result.summary.startswith("[Offline summary] Chapter 1")
    assert result.passages == tuple(passages(result.text)) and len(result.passages) > 1
    assert len(result.passage_vectors) == len(result.passages)
    assert result.passage_vectors[1] == provider.embed(result.passages[1][1])
    assert result.embedding == provider.embed(result.summary)


def test_the_outline_recalls_by_the_chapters_beats_and_title_and_by_nothing_else() -> None:
    asked: list[str] = []

    def recall(queries: list[str]) -> list[list[Passage]]:
        asked.extend(queries)
        return [[] for _ in queries]

    prefs = {"bullet_count": 2, "words_per_bullet": 60}
    for story, beats, first in (
        (StoryContext(chapter_title="The Key"), "Mara returns to the stair.", True),
        (StoryContext(), None, False),  # nothing said of the chapter: no query for it
    ):
        asked.clear()
        request = ChapterRequest(
            chapter_number=2,
            preferences=parse_preferences({**prefs, "chapter_beats": beats}),
            story=story,
        )
        result = write_chapter(request, PassageSpy(), Checkpoint(), Recorder(), recall=recall)
        bullets = list(result.outline.bullets)
        assert asked == (["Mara returns to the stair. The Key"] if first else []) + bullets
