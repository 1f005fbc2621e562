"""The Gemini provider through the real google-genai SDK against the fake Gemini server.

Nothing of the SDK is mocked: every test sends real HTTP to tests/fakegemini.py.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from generation.errors import (
    AuthenticationError,
    GenerationError,
    InvalidRequestError,
    MalformedOutputError,
    ModelUnavailableError,
    ProviderUnavailableError,
    RateLimitedError,
    RefusedError,
)
from generation.providers.gemini import DEFAULT_BASE_URL, GeminiConfig, GeminiProvider
from generation.story.preferences import parse_preferences
from generation.story.prompts import SYSTEM_PROMPT
from generation.types import CallRecord, ChapterRequest, Outline, ProviderHooks
from tests.fakegemini import (
    VALID_KEY,
    FakeGemini,
    Reply,
    blocked_prompt,
    chunk,
    error_reply,
    outline_reply,
    refused_candidate,
    stream_reply,
    text_response,
)

REQUEST = ChapterRequest(chapter_number=1, preferences=parse_preferences({"bullet_count": 3}))
OUTLINE = Outline("T", ("a", "b", "c"))
SECRET = "AIzaSy-not-a-real-key-0123456789"
#: Who a default provider's call records say served them.
SERVED_BY = {"provider": "gemini", "model": "gemini-3.5-flash"}


class Recorder:
    """ProviderHooks that count HTTP attempts and keep every CallRecord."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self.attempts = 0

    def before(self) -> None:
        self.attempts += 1

    def hooks(self) -> ProviderHooks:
        return ProviderHooks(before_request=self.before, on_call=self.records.append)

    @property
    def last(self) -> CallRecord:
        return self.records[-1]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


MakeProvider = Callable[..., GeminiProvider]


@pytest.fixture
def make_provider(fake_gemini: FakeGemini, recorder: Recorder) -> Iterator[MakeProvider]:
    """Providers pointed at the fake, with tiny backoff; closed after the test."""
    made: list[GeminiProvider] = []

    def make(**overrides: object) -> GeminiProvider:
        options: dict = {
            "api_key": VALID_KEY,
            "base_url": fake_gemini.base_url,
            "backoff_base_seconds": 0.01,
            "max_backoff_seconds": 2.0,
            "max_attempts": 3,
            "timeout_seconds": 5.0,
            **overrides,
        }
        made.append(GeminiProvider(GeminiConfig(**options), recorder.hooks()))
        return made[-1]

    yield make
    for provider in made:
        provider.close()


def schema_value(schema: dict, camel: str, snake: str) -> object:
    # Proto JSON accepts both spellings; the SDK sends Schema fields in snake_case.
    return schema.get(camel, schema.get(snake))


# --- outline ----------------------------------------------------------------------


def test_outline_is_structured_json_on_v1beta(fake_gemini, make_provider, recorder):
    outline = make_provider().outline(REQUEST)
    assert outline.title == "The Door at Low Tide" and len(outline.bullets) == 3
    (call,) = fake_gemini.calls("generateContent")
    assert call.path == "/v1beta/models/gemini-3.5-flash:generateContent"
    assert call.headers["x-server-timeout"] == "5"  # the per-request timeout is set
    config = call.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    bullets = config["responseSchema"]["properties"]["bullets"]
    assert bullets["type"] == "ARRAY" and bullets["items"]["type"] == "STRING"
    assert schema_value(bullets, "minItems", "min_items") == 3
    assert schema_value(bullets, "maxItems", "max_items") == 3
    assert config["responseSchema"]["properties"]["title"]["type"] == "STRING"
    assert call.body["systemInstruction"]["parts"][0]["text"] == SYSTEM_PROMPT
    assert "exactly 3" in call.body["contents"][0]["parts"][0]["text"]
    assert recorder.last == CallRecord(
        "outline", "ok", recorder.last.elapsed_seconds, 11, 7, 0, **SERVED_BY
    )


def test_a_malformed_outline_is_asked_for_once_more(fake_gemini, make_provider, recorder):
    fake_gemini.queue("generateContent", outline_reply("T", ["only one"]))
    outline = make_provider().outline(REQUEST)
    assert outline.bullets == (
        "Beat 1 of the chapter.",
        "Beat 2 of the chapter.",
        "Beat 3 of the chapter.",
    )
    assert len(fake_gemini.calls("generateContent")) == 2
    (record,) = recorder.records  # one operation, both answers' tokens
    assert (record.outcome, record.retries, record.input_tokens, record.output_tokens) == (
        "ok",
        1,
        22,
        14,
    )


def test_a_malformed_outline_twice_is_a_retryable_error(fake_gemini, make_provider, recorder):
    fake_gemini.queue(
        "generateContent",
        outline_reply("T", ["only one"]),
        Reply(body=text_response("Sure! Here is your outline:")),
    )
    with pytest.raises(MalformedOutputError, match=r"not valid JSON.*asked twice") as info:
        make_provider().outline(REQUEST)
    assert info.value.retryable and recorder.last.outcome == "retryable_error"


def test_blank_bullets_and_titles_are_malformed(fake_gemini, make_provider):
    fake_gemini.queue(
        "generateContent", outline_reply(" ", ["a", "b", "c"]), outline_reply("T", ["a", " ", "c"])
    )
    with pytest.raises(MalformedOutputError, match="non-empty"):
        make_provider().outline(REQUEST)


# --- streaming ----------------------------------------------------------------------


def test_streaming_yields_chunks_in_order_as_they_arrive(fake_gemini, make_provider, recorder):
    usage = {"promptTokenCount": 40, "candidatesTokenCount": 30, "thoughtsTokenCount": 5}
    texts = [f"part{i} " for i in range(5)]
    fake_gemini.queue("streamGenerateContent", stream_reply(texts, usage=usage, chunk_delay=0.05))
    arrivals = [
        (text, time.monotonic()) for text in make_provider().stream_section(REQUEST, OUTLINE, 0, "")
    ]
    assert [text for text, _ in arrivals] == texts
    assert arrivals[-1][1] - arrivals[0][1] > 0.15  # streamed, not buffered
    (call,) = fake_gemini.calls("streamGenerateContent")
    assert call.path == "/v1beta/models/gemini-3.5-flash:streamGenerateContent"
    assert call.query == "alt=sse"
    record = recorder.last  # thinking tokens are billed as output
    assert (record.kind, record.outcome, record.input_tokens, record.output_tokens) == (
        "prose",
        "ok",
        40,
        35,
    )


def test_a_stream_cut_mid_way_is_retryable_after_the_chunks_it_gave(
    fake_gemini, make_provider, recorder
):
    fake_gemini.queue(
        "streamGenerateContent", stream_reply(["p0 ", "p1 ", "p2 ", "p3"], cut_after=2)
    )
    got = []
    with pytest.raises(ProviderUnavailableError, match="broke off") as info:
        got.extend(make_provider().stream_section(REQUEST, OUTLINE, 0, ""))
    assert got == ["p0 ", "p1 "] and info.value.retryable
    assert len(fake_gemini.calls("streamGenerateContent")) == 1  # no blind retry after text
    assert recorder.last.outcome == "retryable_error"


@pytest.mark.parametrize("failure", [error_reply(503), Reply(chunks=[chunk("x")], cut_after=0)])
def test_a_stream_failing_before_any_text_is_retried(fake_gemini, make_provider, recorder, failure):
    fake_gemini.queue("streamGenerateContent", failure)
    text = "".join(make_provider().stream_section(REQUEST, OUTLINE, 0, ""))
    assert text.startswith("The tide came in")
    assert len(fake_gemini.calls("streamGenerateContent")) == 2 and recorder.attempts == 2
    assert (recorder.last.outcome, recorder.last.retries) == ("ok", 1)


def test_a_stream_that_ends_without_a_finish_reason_is_retryable(fake_gemini, make_provider):
    fake_gemini.queue("streamGenerateContent", Reply(chunks=[chunk("a "), chunk("b ")]))
    got = []
    with pytest.raises(ProviderUnavailableError, match="before the model finished"):
        got.extend(make_provider().stream_section(REQUEST, OUTLINE, 0, ""))
    assert got == ["a ", "b "]


def test_a_stream_follows_continuation_tokens_through_the_hooks(
    fake_gemini, make_provider, recorder
):
    pause = chunk("First half. ", finish="CONTINUATION")
    pause["candidates"][0]["continuationToken"] = base64.b64encode(b"resume-here").decode()
    fake_gemini.queue(
        "streamGenerateContent", Reply(chunks=[pause]), stream_reply(["Second half."])
    )
    text = "".join(make_provider().stream_section(REQUEST, OUTLINE, 0, ""))
    assert text == "First half. Second half."
    first, second = fake_gemini.calls("streamGenerateContent")
    assert "continuationToken" not in first.body
    assert base64.b64decode(second.body["continuationToken"]) == b"resume-here"
    assert recorder.attempts == 2 and len(recorder.records) == 1


def test_a_consumer_that_stops_early_gets_one_record_and_a_working_client(
    fake_gemini, make_provider, recorder
):
    fake_gemini.queue(
        "streamGenerateContent", stream_reply(["a ", "b ", "c ", "d"], chunk_delay=0.02)
    )
    provider = make_provider()
    stream = provider.stream_section(REQUEST, OUTLINE, 0, "")
    assert next(stream) == "a "
    stream.close()
    assert [r.outcome for r in recorder.records] == ["ok"]
    assert provider.summarize(REQUEST, OUTLINE, "text")


# --- retries and errors -----------------------------------------------------------------


def test_429_with_retry_after_then_success(fake_gemini, make_provider, recorder):
    fake_gemini.queue("generateContent", error_reply(429, "slow down", retry_after=0.4))
    started = time.monotonic()
    assert (
        make_provider().summarize(REQUEST, OUTLINE, "text")
        == "A keeper finds a door in the sea and opens it."
    )
    assert time.monotonic() - started >= 0.4
    assert recorder.attempts == 2  # before_request ran before each attempt
    assert recorder.last == CallRecord(
        "summary", "ok", recorder.last.elapsed_seconds, 11, 7, 1, **SERVED_BY
    )


def test_429_with_a_retryinfo_delay(fake_gemini, make_provider):
    fake_gemini.queue("generateContent", error_reply(429, "quota", retry_delay="0.3s"))
    make_provider().summarize(REQUEST, OUTLINE, "text")
    first, second = fake_gemini.calls("generateContent")
    assert second.at - first.at >= 0.3


def test_a_wait_longer_than_max_backoff_ends_the_call_with_retry_after(
    fake_gemini, make_provider, recorder
):
    fake_gemini.queue("generateContent", error_reply(429, "quota", retry_delay="120s"))
    with pytest.raises(RateLimitedError, match="HTTP 429") as info:
        make_provider().summarize(REQUEST, OUTLINE, "text")
    assert info.value.retryable and info.value.retry_after == 120
    assert recorder.attempts == 1  # the job level waits, not the worker


def test_500s_until_attempts_are_spent(fake_gemini, make_provider, recorder):
    fake_gemini.fail("generateContent", 500, times=3, message="internal error")
    with pytest.raises(ProviderUnavailableError) as info:
        make_provider().summarize(REQUEST, OUTLINE, "text")
    assert str(info.value) == "Gemini returned HTTP 500 after 3 attempts: internal error"
    assert info.value.retryable and recorder.attempts == 3
    assert (recorder.last.outcome, recorder.last.retries) == ("retryable_error", 2)


@pytest.mark.parametrize("code", [400, 422])
def test_other_4xx_are_permanent_and_not_retried(fake_gemini, make_provider, recorder, code):
    fake_gemini.fail("generateContent", code, message="bad request")
    with pytest.raises(InvalidRequestError, match=rf"\(HTTP {code}\): bad request") as info:
        make_provider().summarize(REQUEST, OUTLINE, "text")
    assert not info.value.retryable and recorder.attempts == 1
    assert recorder.last.outcome == "permanent_error"


def test_a_404_is_a_model_that_is_gone_permanent_and_not_retried(
    fake_gemini, make_provider, recorder
):
    # Was InvalidRequestError: a 404 on a model call means the model is unavailable
    # (tests/unit/test_gemini_models.py covers the rest of that).
    fake_gemini.fail("generateContent", 404, message="bad request")
    with pytest.raises(ModelUnavailableError, match=r"HTTP 404 NOT_FOUND") as info:
        make_provider().summarize(REQUEST, OUTLINE, "text")
    assert not info.value.retryable and recorder.attempts == 1
    assert recorder.last.outcome == "permanent_error"


@pytest.mark.parametrize("code", [401, 403])
def test_401_and_403_are_authentication_errors(fake_gemini, make_provider, code):
    fake_gemini.fail("generateContent", code)
    with pytest.raises(AuthenticationError):
        make_provider().summarize(REQUEST, OUTLINE, "text")


def test_408_and_a_dropped_connection_are_retried(fake_gemini, make_provider, recorder):
    fake_gemini.queue("generateContent", error_reply(408), Reply(drop=True))
    assert make_provider().summarize(REQUEST, OUTLINE, "text")
    assert recorder.attempts == 3


def test_a_timeout_is_retryable(fake_gemini, make_provider):
    slow = Reply(body=text_response("late"), delay=1.0)
    fake_gemini.queue("generateContent", slow, slow)
    provider = make_provider(timeout_seconds=0.3, max_attempts=2)
    with pytest.raises(
        ProviderUnavailableError, match="did not answer in time after 2 attempts"
    ) as info:
        provider.summarize(REQUEST, OUTLINE, "text")
    assert info.value.retryable and "Timeout" in str(info.value)


def test_a_stream_of_empty_chunks_is_cut_at_the_deadline_and_asked_again(
    fake_gemini, make_provider, recorder
):
    # Empty chunks every 0.2 s keep the socket's read timeout from running out, but
    # not the deadline for text: cut after 1 s and asked again inside the call.
    empty = stream_reply([""] * 40 + ["Too late."], chunk_delay=0.2)
    fake_gemini.queue("streamGenerateContent", empty, stream_reply(["On time."]))
    started = time.monotonic()
    provider = make_provider(timeout_seconds=1.0)
    assert "".join(provider.stream_section(REQUEST, OUTLINE, 0, "")) == "On time."
    assert time.monotonic() - started < 4.0
    assert len(fake_gemini.calls("streamGenerateContent")) == 2
    assert recorder.last.retries == 1 and recorder.last.outcome == "ok"


def test_a_stream_that_stops_sending_text_midway_is_cut_and_left_to_the_job(
    fake_gemini, make_provider
):
    stalled = stream_reply(["Before the silence. "] + [""] * 40 + ["Too late."], chunk_delay=0.2)
    fake_gemini.queue("streamGenerateContent", stalled)
    seen: list[str] = []
    with pytest.raises(ProviderUnavailableError, match="Gemini sent no text for 1 s"):
        seen.extend(make_provider(timeout_seconds=1.0).stream_section(REQUEST, OUTLINE, 0, ""))
    assert seen == ["Before the silence. "]
    assert len(fake_gemini.calls("streamGenerateContent")) == 1


# --- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        blocked_prompt("PROHIBITED_CONTENT"),
        refused_candidate("SAFETY"),
        refused_candidate("RECITATION"),
    ],
)
def test_refusals_are_permanent_and_say_so(fake_gemini, make_provider, recorder, body):
    fake_gemini.queue("generateContent", Reply(body=body))
    with pytest.raises(RefusedError, match="refused") as info:
        make_provider().summarize(REQUEST, OUTLINE, "text")
    assert not info.value.retryable and recorder.attempts == 1
    assert recorder.last.outcome == "permanent_error" and recorder.last.input_tokens == 5


def test_a_refused_outline_is_not_asked_again(fake_gemini, make_provider):
    fake_gemini.queue("generateContent", Reply(body=refused_candidate("SAFETY")))
    with pytest.raises(RefusedError, match=r"finish_reason=SAFETY"):
        make_provider().outline(REQUEST)
    assert len(fake_gemini.calls("generateContent")) == 1


def test_a_refusal_mid_stream_is_permanent(fake_gemini, make_provider, recorder):
    fake_gemini.queue(
        "streamGenerateContent", Reply(chunks=[chunk("It began "), refused_candidate("SAFETY")])
    )
    got = []
    with pytest.raises(RefusedError, match="refused"):
        got.extend(make_provider().stream_section(REQUEST, OUTLINE, 0, ""))
    assert got == ["It began "] and recorder.last.outcome == "permanent_error"


def test_a_blocked_prompt_in_a_stream_is_permanent(fake_gemini, make_provider):
    fake_gemini.queue("streamGenerateContent", Reply(chunks=[blocked_prompt("OTHER")]))
    with pytest.raises(RefusedError, match="block_reason=OTHER"):
        list(make_provider().stream_section(REQUEST, OUTLINE, 0, ""))
    assert len(fake_gemini.calls("streamGenerateContent")) == 1


# --- keys, check, configuration ----------------------------------------------------------


def test_an_invalid_key_is_an_authentication_error_everywhere(fake_gemini, make_provider, recorder):
    bad = make_provider(api_key=SECRET)
    calls = [
        bad.check,
        lambda: bad.outline(REQUEST),
        lambda: bad.summarize(REQUEST, OUTLINE, "text"),
        lambda: list(bad.stream_section(REQUEST, OUTLINE, 0, "")),
        lambda: bad.embed("x"),
    ]
    for call in calls:
        with pytest.raises(AuthenticationError, match="API key") as info:
            call()
        assert not info.value.retryable
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert recorder.attempts == len(calls)  # never retried
    assert [r.kind for r in recorder.records] == [
        "check",
        "outline",
        "summary",
        "prose",
        "embedding",
    ]


def test_the_key_shows_in_no_repr(make_provider):
    provider = make_provider(api_key=SECRET)
    assert SECRET not in repr(provider)
    assert SECRET not in repr(GeminiConfig(api_key=SECRET)) and SECRET not in str(
        GeminiConfig(api_key=SECRET)
    )


def test_check_reads_each_model_once_and_reports_it(fake_gemini, make_provider, recorder):
    make_provider().check()
    text, embedding = fake_gemini.calls("get")  # was one GET: the text model only
    assert (text.method, text.path) == ("GET", "/v1beta/models/gemini-3.5-flash")
    assert (embedding.method, embedding.path) == ("GET", "/v1beta/models/gemini-embedding-001")
    assert recorder.last.kind == "check" and recorder.last.outcome == "ok"
    assert len(recorder.records) == 1
    fake_gemini.fail("get", 503)
    with pytest.raises(ProviderUnavailableError):
        make_provider().check()
    assert len(fake_gemini.calls("get")) == 3  # a probe does not retry


def test_check_of_an_unreachable_server_is_retryable(make_provider):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(ProviderUnavailableError, match="unreachable") as info:
        make_provider(base_url=f"http://127.0.0.1:{closed_port}").check()
    assert info.value.retryable


def test_the_config_wins_over_the_sdks_environment_variables(
    fake_gemini, make_provider, monkeypatch
):
    monkeypatch.setenv("GOOGLE_API_KEY", VALID_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", VALID_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "v1")
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    make_provider().check()
    assert fake_gemini.calls("get")[0].path == "/v1beta/models/gemini-3.5-flash"
    with pytest.raises(AuthenticationError):
        make_provider(api_key=SECRET).check()  # the environment's valid key is not used
    default = GeminiProvider(GeminiConfig(api_key=SECRET))
    try:
        assert default._client._api_client._http_options.base_url == DEFAULT_BASE_URL
    finally:
        default.close()


@pytest.mark.parametrize(
    "overrides",
    [{"api_key": " "}, {"timeout_seconds": 0}, {"max_attempts": 0}, {"embedding_dimensions": 0}],
)
def test_a_config_that_cannot_work_is_refused(overrides):
    with pytest.raises(ValueError, match="GeminiConfig"):
        GeminiConfig(**{"api_key": VALID_KEY, **overrides})


def test_one_client_and_one_connection_serve_every_call(fake_gemini, make_provider):
    provider = make_provider()
    provider.check()
    provider.outline(REQUEST)
    list(provider.stream_section(REQUEST, OUTLINE, 0, ""))
    provider.summarize(REQUEST, OUTLINE, "text")
    provider.embed("text")
    assert len({r.client_port for r in fake_gemini.requests}) == 1


# --- embeddings ---------------------------------------------------------------------------


def test_embeddings_have_the_configured_size_and_unit_length(fake_gemini, make_provider, recorder):
    vector = make_provider(embedding_dimensions=256).embed("a chapter summary")
    assert len(vector) == 256 and math.isclose(sum(v * v for v in vector), 1.0)
    (call,) = fake_gemini.calls("batchEmbedContents")
    assert call.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    (request,) = call.body["requests"]
    assert request["outputDimensionality"] == 256
    assert request["content"]["parts"][0]["text"] == "a chapter summary"
    assert (recorder.last.kind, recorder.last.outcome) == ("embedding", "ok")


def test_an_embedding_of_the_wrong_size_is_malformed(fake_gemini, make_provider):
    fake_gemini.queue("batchEmbedContents", Reply(body={"embeddings": [{"values": [0.1, 0.2]}]}))
    with pytest.raises(MalformedOutputError, match="2 usable embedding values, expected 768"):
        make_provider().embed("text")


def test_errors_are_generation_errors_with_short_messages(fake_gemini, make_provider):
    fake_gemini.fail("generateContent", 400, message="x" * 5000)
    with pytest.raises(GenerationError) as info:
        make_provider().summarize(REQUEST, OUTLINE, "A secret chapter text")
    assert len(str(info.value)) < 300 and "secret chapter" not in str(info.value)
    body = json.dumps(fake_gemini.calls("generateContent")[0].body)
    assert "A secret chapter text" in body  # it was sent, just never echoed back
