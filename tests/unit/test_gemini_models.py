"""Gemini as it is in late 2026, through the real google-genai SDK against the fake server:
current models only (the 2.5 family answers 404), model checks at boot, provider-wide
faults, Gemini 3's thinking level and safety threshold on the wire, and usage with
thinking tokens."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from generation.errors import (
    AuthenticationError,
    ModelUnavailableError,
    QuotaExhaustedError,
    RateLimitedError,
)
from generation.providers.gemini import GeminiConfig, GeminiProvider
from generation.providers.gemini_config import (
    GEMINI_EMBEDDING_MODEL,
    GEMINI_MODEL,
    SAFETY_THRESHOLDS,
    THINKING_LEVELS,
)
from generation.providers.gemini_wire import ADJUSTABLE_HARM_CATEGORIES
from generation.story.preferences import parse_preferences
from generation.story.writer import SectionStats, write_chapter
from generation.types import CallRecord, ChapterRequest, Checkpoint, Outline
from tests.fakegemini import (
    CATALOGUE,
    RETIRED_PREFIXES,
    VALID_KEY,
    FakeGemini,
    Reply,
    error_body,
)
from tests.unit.test_gemini import OUTLINE, REQUEST

#: A chapter of 3 sections whose word target the fake server's prose meets (a section
#: far below its target would be asked for again).
CHAPTER = ChapterRequest(
    chapter_number=1, preferences=parse_preferences({"bullet_count": 3, "words_per_bullet": 50})
)

GENERATION_ENDPOINTS = ("generateContent", "streamGenerateContent")
MakeProvider = Callable[..., GeminiProvider]


class Chapter:
    """ChapterCallbacks that keep nothing: the tests look at the wire and the records."""

    def on_context(self, step: str, manifest: object) -> None:
        pass

    def on_outline(self, outline: Outline) -> None:
        pass

    def on_section_restart(self, index: int, why: str) -> None:
        pass

    def on_chunk(self, text: str) -> None:
        pass

    def on_section_done(self, index: int, stats: SectionStats) -> None:
        pass


def quota_reply(*quota_ids: str, retry_delay: str | None = None) -> Reply:
    """Google's 429 with a QuotaFailure naming the quotas that ran out."""
    violations = [
        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests", "quotaId": q}
        for q in quota_ids
    ]
    details: list = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations}
    ]
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    message = "You exceeded your current quota, please check your plan and billing details."
    return Reply(status=429, body=error_body(429, message, details))


def generation_bodies(fake: FakeGemini) -> list[dict]:
    return [r.body for e in GENERATION_ENDPOINTS for r in fake.calls(e)]


def camel_or_snake(mapping: dict, camel: str, snake: str) -> object:
    # Proto JSON accepts both; the SDK sends ThinkingConfig's fields in snake_case.
    return mapping.get(camel, mapping.get(snake))


# --- current models ---------------------------------------------------------------------


def test_the_catalogue_holds_current_models_only() -> None:
    assert GEMINI_MODEL == "gemini-3.5-flash" and GEMINI_EMBEDDING_MODEL in CATALOGUE
    assert GEMINI_MODEL in CATALOGUE and "gemini-2.5-flash" not in CATALOGUE
    assert not [m for m in CATALOGUE if m.startswith(RETIRED_PREFIXES)]


def test_a_chapter_with_the_default_models_is_written_against_current_models_only(
    fake_gemini, recorder
):
    provider = GeminiProvider(
        GeminiConfig(api_key=VALID_KEY, base_url=fake_gemini.base_url), recorder.hooks()
    )
    try:
        provider.check()
        result = write_chapter(CHAPTER, provider, Checkpoint(), Chapter())
    finally:
        provider.close()
    assert result.embedding_model == "gemini-embedding-001" and len(result.embedding) == 768
    paths = {r.path for r in fake_gemini.requests}
    assert paths == {
        "/v1beta/models/gemini-3.5-flash",
        "/v1beta/models/gemini-embedding-001",
        "/v1beta/models/gemini-3.5-flash:generateContent",
        "/v1beta/models/gemini-3.5-flash:streamGenerateContent",
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
    }
    served = fake_gemini.served("gemini-3.5-flash").calls
    assert served == {"generateContent": 2, "streamGenerateContent": 3}
    assert [r.outcome for r in recorder.records] == ["ok"] * 7
    assert {(r.provider, r.model) for r in recorder.records if r.kind != "embedding"} == {
        ("gemini", "gemini-3.5-flash")
    }


def test_models_list_shows_what_each_model_supports(make_provider):
    client = make_provider()._client
    models = {m.name: m for m in client.models.list()}
    assert models["models/gemini-3.5-flash"].supported_actions[:2] == [
        "generateContent",
        "countTokens",
    ]
    assert "embedContent" in models["models/gemini-embedding-001"].supported_actions
    assert not [name for name in models if name.startswith("models/gemini-2.")]


# --- check() ----------------------------------------------------------------------------


@pytest.mark.parametrize("retired", ["gemini-2.5-flash", "gemini-2.0-flash", "gemini-1.5-pro"])
def test_check_refuses_a_retired_text_model_naming_what_to_set(make_provider, recorder, retired):
    with pytest.raises(ModelUnavailableError) as info:
        make_provider(model=retired).check()
    assert str(info.value) == (
        f"Gemini model {retired} is not available (HTTP 404 NOT_FOUND); "
        "set GEMINI_MODEL to a current model such as gemini-3.5-flash"
    )
    assert info.value.provider_wide and not info.value.retryable
    assert recorder.attempts == 1 and recorder.last.outcome == "permanent_error"


@pytest.mark.parametrize(
    ("embedding_model", "why"),
    [
        ("text-embedding-004", "is not available (HTTP 404 NOT_FOUND)"),
        ("gemini-3.5-flash", "does not support embedContent"),
    ],
)
def test_check_refuses_an_embedding_model_that_is_gone_or_cannot_embed(
    make_provider, embedding_model, why
):
    with pytest.raises(ModelUnavailableError) as info:
        make_provider(embedding_model=embedding_model).check()
    assert str(info.value) == (
        f"Gemini embedding model {embedding_model} {why}; set GEMINI_EMBEDDING_MODEL to a "
        "current embedding model such as gemini-embedding-001"
    )
    assert info.value.provider_wide


def test_check_refuses_a_text_model_that_cannot_generate(make_provider):
    with pytest.raises(
        ModelUnavailableError, match="does not support generateContent; set GEMINI_MODEL"
    ):
        make_provider(model="gemini-embedding-001").check()


def test_when_the_default_itself_is_gone_no_one_is_told_to_use_it(fake_gemini, make_provider):
    fake_gemini.retire("gemini-3.5-flash")
    with pytest.raises(ModelUnavailableError) as info:
        make_provider().check()
    assert str(info.value).endswith("set GEMINI_MODEL to a current model")


def test_check_with_a_rejected_key_is_still_an_authentication_error(make_provider):
    with pytest.raises(AuthenticationError) as info:
        make_provider(api_key="rejected", model="gemini-2.5-flash").check()
    assert info.value.provider_wide


# --- faults while running ---------------------------------------------------------------


def test_a_model_withdrawn_mid_run_is_provider_wide(fake_gemini, make_provider, recorder):
    provider = make_provider()
    provider.outline(REQUEST)
    fake_gemini.retire("gemini-3.5-flash")
    for call in (
        lambda: list(provider.stream_section(REQUEST, OUTLINE, 0, "")),
        lambda: provider.summarize(REQUEST, OUTLINE, "text"),
    ):
        with pytest.raises(ModelUnavailableError, match=r"model gemini-3\.5-flash is not") as info:
            call()
        assert info.value.provider_wide and not info.value.retryable
    fake_gemini.retire("gemini-embedding-001")
    with pytest.raises(ModelUnavailableError, match="set GEMINI_EMBEDDING_MODEL"):
        provider.embed("text")
    assert recorder.attempts == 4  # never retried


def test_a_spent_daily_quota_is_provider_wide_and_not_retried(fake_gemini, make_provider, recorder):
    reply = quota_reply(
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        retry_delay="1s",
    )
    fake_gemini.queue("generateContent", reply)
    with pytest.raises(QuotaExhaustedError, match=r"daily quota.*PerDayPerProjectPerModel") as info:
        make_provider().summarize(REQUEST, OUTLINE, "text")
    assert info.value.provider_wide and info.value.retryable and info.value.retry_after == 1
    assert recorder.attempts == 1 and recorder.last.outcome == "retryable_error"


def test_a_per_minute_limit_is_retried(fake_gemini, make_provider, recorder):
    fake_gemini.queue(
        "generateContent",
        quota_reply("GenerateRequestsPerMinutePerProjectPerModel", retry_delay="0.1s"),
    )
    assert make_provider().summarize(REQUEST, OUTLINE, "text")
    assert recorder.attempts == 2 and recorder.last.retries == 1
    assert not RateLimitedError.provider_wide


@pytest.mark.parametrize(
    ("code", "message", "reason"),
    [
        (403, "This API method requires billing to be enabled.", "BILLING_DISABLED"),
        (400, "Please enable billing on your project in Google AI Studio.", None),
    ],
)
def test_disabled_billing_is_provider_wide(fake_gemini, make_provider, code, message, reason):
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    body = error_body(code, message, details if reason else [])
    fake_gemini.queue("streamGenerateContent", Reply(status=code, body=body))
    with pytest.raises(QuotaExhaustedError, match="until billing is enabled") as info:
        list(make_provider().stream_section(REQUEST, OUTLINE, 0, ""))
    assert info.value.provider_wide


# --- Gemini 3 controls on the wire --------------------------------------------------------


def write_everything(provider: GeminiProvider) -> None:
    provider.outline(REQUEST)
    list(provider.stream_section(REQUEST, OUTLINE, 0, ""))
    provider.summarize(REQUEST, OUTLINE, "text")
    provider.embed("text")


@pytest.mark.parametrize("level", THINKING_LEVELS)
def test_the_thinking_level_reaches_every_generation_request(fake_gemini, make_provider, level):
    write_everything(make_provider(thinking_level=level))
    bodies = generation_bodies(fake_gemini)
    assert len(bodies) == 3
    for body in bodies:
        thinking = body["generationConfig"]["thinkingConfig"]
        assert camel_or_snake(thinking, "thinkingLevel", "thinking_level") == level.upper()
        assert "safetySettings" not in body  # left at the API's default
    (embedding,) = fake_gemini.calls("batchEmbedContents")
    assert "thinking" not in json.dumps(embedding.body).lower()


@pytest.mark.parametrize("threshold", SAFETY_THRESHOLDS)
def test_the_safety_threshold_covers_every_adjustable_category(
    fake_gemini, make_provider, threshold
):
    write_everything(make_provider(safety_threshold=threshold))
    expected = [{"category": c.value, "threshold": threshold} for c in ADJUSTABLE_HARM_CATEGORIES]
    bodies = generation_bodies(fake_gemini)
    assert len(bodies) == 3 and all(b["safetySettings"] == expected for b in bodies)
    assert all("thinkingConfig" not in b["generationConfig"] for b in bodies)
    assert [c["category"] for c in expected] == [
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
    ]
    (embedding,) = fake_gemini.calls("batchEmbedContents")
    assert "safety" not in json.dumps(embedding.body).lower()


def test_no_request_ever_carries_a_thinking_budget(fake_gemini, make_provider):
    for options in ({}, {"thinking_level": "high", "safety_threshold": "OFF"}):
        write_everything(make_provider(**options))
        make_provider(**options).check()
    wire = json.dumps([r.body for r in fake_gemini.requests]).lower()
    assert "budget" not in wire and len(fake_gemini.requests) == 12


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("thinking_level", "HIGH", "minimal, low, medium, high"),
        ("thinking_level", "xhigh", "minimal, low, medium, high"),
        ("safety_threshold", "block_none", "OFF, BLOCK_NONE, BLOCK_ONLY_HIGH"),
        ("safety_threshold", "HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE"),
    ],
)
def test_a_control_outside_the_allowed_values_is_refused(option, value, allowed):
    with pytest.raises(ValueError, match=rf"GeminiConfig.{option} must be one of .*{allowed}"):
        GeminiConfig(api_key=VALID_KEY, **{option: value})


# --- usage -------------------------------------------------------------------------------


def test_usage_with_thinking_matches_what_the_server_served(fake_gemini, make_provider, recorder):
    fake_gemini.usage = {"promptTokenCount": 13, "candidatesTokenCount": 9, "thoughtsTokenCount": 4}
    fake_gemini.fail("streamGenerateContent", 503)  # an error costs nothing
    write_chapter(CHAPTER, make_provider(thinking_level="medium"), Checkpoint(), Chapter())
    served = fake_gemini.served("gemini-3.5-flash")
    assert sum(served.calls.values()) == 5
    records: list[CallRecord] = [r for r in recorder.records if r.model == "gemini-3.5-flash"]
    # The chapter memory (summary, arc, bible) is the one call after the sections.
    assert [r.kind for r in records] == ["outline", "prose", "prose", "prose", "memory"]
    assert sum(r.input_tokens for r in records) == served.prompt_tokens == 5 * 13
    assert sum(r.thinking_tokens for r in records) == served.thoughts_tokens == 5 * 4
    assert sum(r.output_tokens for r in records) == (
        served.candidates_tokens + served.thoughts_tokens
    )
    assert sum(r.retries for r in records) == 1


def test_records_name_the_embedding_model_for_embeddings(make_provider, recorder):
    make_provider(embedding_model="gemini-embedding-001").embed("text")
    assert (recorder.last.provider, recorder.last.model) == ("gemini", "gemini-embedding-001")
