"""The Gemini provider through the real google-genai SDK against a fake Gemini server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from generation.errors import (
    AuthenticationError,
    InvalidRequestError,
    MalformedOutputError,
    ProviderUnavailableError,
    RateLimitedError,
    RefusedError,
)
from generation.gemini import GeminiConfig, GeminiProvider
from generation.preferences import parse_preferences
from generation.types import CallRecord, ChapterRequest, Outline, ProviderHooks
from tests.fakegemini import (
    VALID_KEY,
    FakeGemini,
    Reply,
    blocked_prompt,
    error_body,
    refused_candidate,
    text_response,
)

REQUEST = ChapterRequest(chapter_number=1, preferences=parse_preferences({"bullet_count": 3}))
OUTLINE = Outline("T", ("a", "b", "c"))
SECRET = "AIzaSy-not-a-real-key-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    server = FakeGemini().start()
    yield server
    server.stop()


class Recorder:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self.attempts = 0

    def before(self) -> None:
        self.attempts += 1

    def hooks(self) -> ProviderHooks:
        return ProviderHooks(before_request=self.before, on_call=self.records.append)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def provider(fake: FakeGemini, recorder: Recorder, **overrides) -> GeminiProvider:
    config = {
        "api_key": VALID_KEY,
        "base_url": fake.base_url,
        "backoff_base_seconds": 0.01,
        "max_attempts": 3,
        "timeout_seconds": 5.0,
        **overrides,
    }
    return GeminiProvider(GeminiConfig(**config), recorder.hooks())


def test_outline_is_structured_json_on_v1beta(fake, recorder):
    outline = provider(fake, recorder).outline(REQUEST)
    assert outline.title and len(outline.bullets) == 3
    (call,) = fake.calls("generateContent")
    assert call.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    config = call.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["properties"]["bullets"]["type"] == "array"
    assert call.body["systemInstruction"]["parts"][0]["text"]
    assert recorder.records[-1].kind == "outline" and recorder.records[-1].input_tokens == 11


def test_malformed_outline_is_asked_once_more_then_retryable(fake, recorder):
    wrong = Reply(body=text_response(json.dumps({"title": "T", "bullets": ["only one"]})))
    fake.queue("generateContent", wrong)
    assert len(provider(fake, recorder).outline(REQUEST).bullets) == 3
    fake.queue("generateContent", wrong, Reply(body=text_response("not json")))
    with pytest.raises(MalformedOutputError) as info:
        provider(fake, recorder).outline(REQUEST)
    assert info.value.retryable and "not valid JSON" in str(info.value)


def test_streaming_yields_chunks_in_order_as_they_arrive(fake, recorder):
    chunks = [text_response(f"part{i} ", usage=None) for i in range(5)]
    fake.queue(
        "streamGenerateContent",
        Reply(
            chunks=[
                *chunks,
                text_response("", usage={"promptTokenCount": 40, "candidatesTokenCount": 30}),
            ],
            delay=0.05,
        ),
    )
    stream = provider(fake, recorder).stream_section(REQUEST, OUTLINE, 0, "")
    arrivals = []
    for text in stream:
        arrivals.append((text, time.monotonic()))
    assert [t for t, _ in arrivals] == [f"part{i} " for i in range(5)]
    assert arrivals[-1][1] - arrivals[0][1] > 0.15  # streamed, not buffered
    (call,) = fake.calls("streamGenerateContent")
    assert call.query == "alt=sse"
    record = recorder.records[-1]
    assert (record.kind, record.outcome, record.input_tokens, record.output_tokens) == (
        "prose",
        "ok",
        40,
        30,
    )


def test_429_with_retry_after_then_success(fake, recorder):
    fake.queue(
        "generateContent",
        Reply(
            status=429,
            body=error_body(429, "RESOURCE_EXHAUSTED", "slow down"),
            headers={"Retry-After": "0.4"},
        ),
    )
    started = time.monotonic()
    assert provider(fake, recorder).summarize(REQUEST, OUTLINE, "text")
    assert time.monotonic() - started >= 0.4
    assert recorder.attempts == 2 and recorder.records[-1].retries == 1
    assert recorder.records[-1].outcome == "ok"


def test_429_with_retryinfo_delay(fake, recorder):
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.3s"}]
    fake.queue(
        "generateContent",
        Reply(status=429, body=error_body(429, "RESOURCE_EXHAUSTED", "quota", details)),
    )
    started = time.monotonic()
    provider(fake, recorder).summarize(REQUEST, OUTLINE, "text")
    calls = fake.calls("generateContent")
    assert len(calls) == 2 and calls[1].at - calls[0].at >= 0.3
    assert time.monotonic() - started < 5


def test_429_until_attempts_are_spent_keeps_the_servers_delay(fake, recorder):
    reply = Reply(
        status=429,
        body=error_body(429, "RESOURCE_EXHAUSTED", "quota"),
        headers={"Retry-After": "0"},
    )
    fake.queue("generateContent", reply, reply, reply)
    with pytest.raises(RateLimitedError) as info:
        provider(fake, recorder).summarize(REQUEST, OUTLINE, "text")
    assert info.value.retryable and info.value.retry_after == 0


def test_500s_until_retries_are_spent(fake, recorder):
    boom = Reply(status=500, body=error_body(500, "INTERNAL", "internal error"))
    fake.queue("generateContent", boom, boom, boom)
    with pytest.raises(ProviderUnavailableError) as info:
        provider(fake, recorder).summarize(REQUEST, OUTLINE, "text")
    assert (
        info.value.retryable and "HTTP 500" in str(info.value) and "3 attempts" in str(info.value)
    )
    assert recorder.attempts == 3 and recorder.records[-1].outcome == "retryable_error"


def test_400_is_permanent_and_not_retried(fake, recorder):
    fake.queue(
        "generateContent",
        Reply(status=400, body=error_body(400, "INVALID_ARGUMENT", "bad request")),
    )
    with pytest.raises(InvalidRequestError) as info:
        provider(fake, recorder).summarize(REQUEST, OUTLINE, "text")
    assert not info.value.retryable and recorder.attempts == 1


@pytest.mark.parametrize(
    "body", [blocked_prompt("PROHIBITED_CONTENT"), refused_candidate("SAFETY")]
)
def test_refusals_are_permanent_and_say_so(fake, recorder, body):
    fake.queue("generateContent", Reply(body=body))
    with pytest.raises(RefusedError) as info:
        provider(fake, recorder).summarize(REQUEST, OUTLINE, "text")
    assert "refused" in str(info.value) and not info.value.retryable
    assert recorder.attempts == 1


def test_a_refusal_mid_stream_is_permanent(fake, recorder):
    fake.queue(
        "streamGenerateContent",
        Reply(chunks=[text_response("It began ", usage=None), refused_candidate("SAFETY")]),
    )
    got = []
    with pytest.raises(RefusedError, match="refused"):
        for text in provider(fake, recorder).stream_section(REQUEST, OUTLINE, 0, ""):
            got.append(text)
    assert got == ["It began "] and recorder.records[-1].outcome == "permanent_error"


def test_a_blocked_prompt_in_a_stream_is_permanent(fake, recorder):
    fake.queue("streamGenerateContent", Reply(chunks=[blocked_prompt("SAFETY")]))
    with pytest.raises(RefusedError, match="refused"):
        list(provider(fake, recorder).stream_section(REQUEST, OUTLINE, 0, ""))


def test_invalid_key_is_an_authentication_error(fake, recorder):
    bad = provider(fake, recorder, api_key=SECRET)
    with pytest.raises(AuthenticationError) as info:
        bad.check()
    assert not info.value.retryable
    with pytest.raises(AuthenticationError):
        bad.summarize(REQUEST, OUTLINE, "text")
    assert "x-goog-api-key" not in fake.requests[0].headers  # the fake keeps no key either


def test_a_stream_cut_mid_way_is_retryable_after_the_chunks_it_gave(fake, recorder):
    chunks = [text_response(f"p{i} ", usage=None) for i in range(4)]
    fake.queue("streamGenerateContent", Reply(chunks=chunks, cut_after=2))
    got = []
    with pytest.raises(ProviderUnavailableError) as info:
        for text in provider(fake, recorder).stream_section(REQUEST, OUTLINE, 0, ""):
            got.append(text)
    assert got == ["p0 ", "p1 "] and info.value.retryable
    assert len(fake.calls("streamGenerateContent")) == 1  # no blind retry after text was given


def test_a_stream_failing_before_any_text_is_retried(fake, recorder):
    fake.queue(
        "streamGenerateContent",
        Reply(status=503, body=error_body(503, "UNAVAILABLE", "overloaded")),
    )
    assert "".join(provider(fake, recorder).stream_section(REQUEST, OUTLINE, 0, ""))
    assert len(fake.calls("streamGenerateContent")) == 2


def test_embeddings_have_the_configured_size_and_unit_length(fake, recorder):
    vector = provider(fake, recorder, embedding_dimensions=256).embed("a chapter summary")
    assert len(vector) == 256 and sum(v * v for v in vector) == pytest.approx(1.0)
    (call,) = fake.calls("batchEmbedContents")
    assert call.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert call.body["requests"][0]["outputDimensionality"] == 256


def test_a_timeout_is_retryable(fake, recorder):
    slow = Reply(body=text_response("late"), delay=1.0)
    fake.queue("generateContent", slow, slow)
    with pytest.raises(ProviderUnavailableError) as info:
        provider(fake, recorder, timeout_seconds=0.3, max_attempts=2).summarize(
            REQUEST, OUTLINE, "text"
        )
    assert info.value.retryable and "Timeout" in str(info.value)


def test_the_key_never_shows(fake, recorder):
    p = provider(fake, recorder, api_key=SECRET)
    assert SECRET not in repr(p) and SECRET not in repr(GeminiConfig(api_key=SECRET))
    for call in (p.check, lambda: p.summarize(REQUEST, OUTLINE, "text"), lambda: p.embed("x")):
        with pytest.raises(AuthenticationError) as info:
            call()
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_the_config_wins_over_sdk_environment_variables(fake, recorder, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "env-key-loses")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    provider(fake, recorder).check()
    assert fake.calls("get")[0].path == "/v1beta/models/gemini-2.5-flash"
