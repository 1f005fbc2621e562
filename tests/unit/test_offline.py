"""The offline provider: deterministic, shaped by the preferences, honest about latency."""

from __future__ import annotations

import math
import time

import pytest

from generation.providers import build_provider
from generation.providers.offline import OFFLINE_TITLE_PREFIX, OfflineConfig, OfflineProvider
from generation.story.preferences import parse_preferences
from generation.types import (
    CallRecord,
    ChapterRequest,
    ChapterSummary,
    Outline,
    Provider,
    ProviderHooks,
    StoryContext,
)


def make_request(**prefs: object) -> ChapterRequest:
    return ChapterRequest(
        chapter_number=3,
        preferences=parse_preferences(prefs),
        sequence_title="The Lighthouse Years",
        premise="A keeper's daughter inherits a lighthouse.",
        story=StoryContext(summaries=(ChapterSummary(2, "Mara arrived at the lighthouse."),)),
    )


def section(provider: OfflineProvider, request: ChapterRequest, outline: Outline, i: int) -> str:
    return "".join(provider.stream_section(request, outline, i, ""))


def test_same_request_same_output() -> None:
    request = make_request(characters=[{"name": "Mara"}, {"name": "Ilya"}], bullet_count=3)
    first, second = OfflineProvider(), OfflineProvider()
    outline = first.outline(request)
    assert second.outline(request) == outline
    for i in range(3):
        assert section(first, request, outline, i) == section(second, request, outline, i)
    text = section(first, request, outline, 0)
    assert first.summarize(request, outline, text) == second.summarize(request, outline, text)
    assert first.embed(text) == second.embed(text)


def test_different_requests_differ() -> None:
    provider = OfflineProvider()
    a = provider.outline(make_request(characters=[{"name": "Mara"}]))
    b = provider.outline(make_request(characters=[{"name": "Tobias"}]))
    assert a != b


def test_previous_text_does_not_change_the_prose() -> None:
    # A resumed chapter must read like an uninterrupted one.
    provider = OfflineProvider()
    request = make_request()
    outline = provider.outline(request)
    with_context = "".join(provider.stream_section(request, outline, 1, "Earlier text."))
    assert with_context == section(provider, request, outline, 1)


@pytest.mark.parametrize("count", [1, 4, 12])
def test_outline_has_bullet_count_bullets_and_is_marked_offline(count: int) -> None:
    outline = OfflineProvider().outline(make_request(bullet_count=count))
    assert len(outline.bullets) == count
    assert all(b.strip() for b in outline.bullets)
    assert outline.title.startswith(OFFLINE_TITLE_PREFIX)


@pytest.mark.parametrize("words", [50, 300, 2000])
def test_sections_are_roughly_words_per_bullet_and_plain_prose(words: int) -> None:
    provider = OfflineProvider(chunk_words=7)
    request = make_request(words_per_bullet=words, characters=[{"name": "Mara"}])
    outline = provider.outline(request)
    text = section(provider, request, outline, 1)
    assert words <= len(text.split()) <= words + 40
    assert "Mara" in text
    lines = [line.strip() for line in text.splitlines()]
    assert not any(line.startswith(("#", "**")) for line in lines)
    assert not any(line in outline.bullets for line in lines)
    assert text == text.strip()


def test_chunks_are_chunk_words_long() -> None:
    provider = OfflineProvider(chunk_words=5)
    request = make_request(words_per_bullet=100)
    chunks = list(provider.stream_section(request, provider.outline(request), 0, ""))
    assert len(chunks) > 10
    assert all(len(c.split()) == 5 for c in chunks[:-1])
    assert 1 <= len(chunks[-1].split()) <= 5


@pytest.mark.parametrize("dimensions", [768, 16])
def test_embeddings_have_the_configured_size_and_unit_norm(dimensions: int) -> None:
    provider = OfflineProvider(dimensions=dimensions)
    for text in ("", "Mara climbs the stairs.", "word " * 1000):
        vector = provider.embed(text)
        assert len(vector) == dimensions
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)
    assert provider.embedding_model == "offline-embedding"


def test_similar_texts_have_closer_embeddings() -> None:
    provider = OfflineProvider()
    base = provider.embed("the keeper climbs the lighthouse stairs at night")
    near = provider.embed("the keeper climbs the lighthouse stairs at dawn")
    far = provider.embed("a recipe for lemon cake with butter and sugar")

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert dot(base, near) > dot(base, far)


def test_latency_sleeps_per_call_and_per_chunk() -> None:
    sleeps: list[float] = []
    provider = OfflineProvider(latency_ms=25, chunk_words=10, sleep=sleeps.append)
    request = make_request(words_per_bullet=100)
    outline = provider.outline(request)
    assert sleeps == [0.025]
    chunks = list(provider.stream_section(request, outline, 0, ""))
    assert sleeps == [0.025] * (2 + len(chunks))
    provider.summarize(request, outline, "text")
    provider.embed("text")
    assert len(sleeps) == 4 + len(chunks)


def test_real_latency_is_felt() -> None:
    provider = OfflineProvider(latency_ms=20)
    started = time.monotonic()
    provider.outline(make_request())
    assert time.monotonic() - started >= 0.018


def test_no_latency_means_no_sleep() -> None:
    sleeps: list[float] = []
    provider = OfflineProvider(sleep=sleeps.append)
    request = make_request()
    list(provider.stream_section(request, provider.outline(request), 0, ""))
    assert sleeps == []


def test_hooks_see_every_call_with_token_counts() -> None:
    events: list[str] = []
    records: list[CallRecord] = []

    def on_call(record: CallRecord) -> None:
        events.append(f"done:{record.kind}")
        records.append(record)

    hooks = ProviderHooks(before_request=lambda: events.append("before"), on_call=on_call)
    provider = OfflineProvider(hooks=hooks)
    request = make_request(words_per_bullet=100)
    outline = provider.outline(request)
    text = "".join(provider.stream_section(request, outline, 0, ""))
    provider.summarize(request, outline, text)
    provider.embed(text)
    assert events == [
        "before",
        "done:outline",
        "before",
        "done:prose",
        "before",
        "done:summary",
        "before",
        "done:embedding",
    ]
    assert all(r.outcome == "ok" and r.input_tokens > 0 for r in records)
    prose = records[1]
    assert prose.output_tokens == math.ceil(len(text.split()) * 1.3)
    assert records[3].output_tokens == 0


def test_a_stream_closed_early_still_reports_its_call() -> None:
    records: list[CallRecord] = []
    provider = OfflineProvider(hooks=ProviderHooks(on_call=records.append), chunk_words=3)
    request = make_request()
    stream = provider.stream_section(request, provider.outline(request), 0, "")
    next(stream)
    stream.close()
    assert [r.kind for r in records] == ["outline", "prose"]
    assert records[1].output_tokens == math.ceil(3 * 1.3)


def test_summary_is_marked_offline_and_check_passes() -> None:
    provider = OfflineProvider()
    request = make_request()
    outline = provider.outline(request)
    assert provider.summarize(request, outline, "some words here").startswith("[Offline summary]")
    provider.check()
    assert provider.name == "offline"


@pytest.mark.parametrize("kwargs", [{"latency_ms": -1}, {"chunk_words": 0}, {"dimensions": 0}])
def test_bad_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        OfflineProvider(**kwargs)


def test_build_provider() -> None:
    provider: Provider = build_provider("offline", OfflineConfig(latency_ms=5), ProviderHooks())
    assert isinstance(provider, OfflineProvider)
    with pytest.raises(ValueError, match="unknown provider 'claude'"):
        build_provider("claude", None, ProviderHooks())
    with pytest.raises(ValueError, match="OpenAIConfig"):
        build_provider("openai", None, ProviderHooks())
    with pytest.raises(ValueError, match="GeminiConfig"):
        build_provider("gemini", None, ProviderHooks())


def test_records_say_the_offline_provider_served_them() -> None:
    records: list[CallRecord] = []
    provider = OfflineProvider(hooks=ProviderHooks(on_call=records.append))
    request = make_request()
    outline = provider.outline(request)
    provider.embed(provider.summarize(request, outline, "text"))
    assert [(r.provider, r.model) for r in records] == [
        ("offline", "offline"),
        ("offline", "offline"),
        ("offline", "offline-embedding"),
    ]
    assert all(r.thinking_tokens == 0 and r.retries == 0 for r in records)
