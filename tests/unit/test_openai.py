"""The OpenAI-compatible provider through the real `openai` SDK against the fake
OpenAI-compatible server (tests/fakeopenai.py). Nothing of the SDK is mocked."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator

import pytest

from generation.errors import (
    AuthenticationError,
    InvalidRequestError,
    MalformedOutputError,
    ModelUnavailableError,
    ProviderUnavailableError,
    QuotaExhaustedError,
    RateLimitedError,
    RefusedError,
)
from generation.providers.openai_chat import OpenAIProvider
from generation.providers.openai_config import OpenAIConfig
from generation.story.preferences import parse_preferences
from generation.story.prompts import SYSTEM_PROMPT
from generation.types import CallRecord, ChapterRequest, Outline, ProviderHooks, Source
from tests.fakeopenai import (
    EMBEDDING_MODEL,
    EMBEDDING_SIZE,
    MODEL,
    OUTLINE_TITLE,
    PROSE,
    SUMMARY,
    USAGE,
    VALID_KEY,
    FakeOpenAI,
    Reply,
    completion,
    content_filter_stream,
    error_reply,
    refusal_reply,
    refusal_stream,
    stream_reply,
)

REQUEST = ChapterRequest(chapter_number=1, preferences=parse_preferences({"bullet_count": 3}))
OUTLINE = Outline("T", ("a", "b", "c"))


class Recorder:
    """ProviderHooks that count HTTP attempts and keep every CallRecord."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self.attempts = 0

    def hooks(self) -> ProviderHooks:
        def before() -> None:
            self.attempts += 1

        return ProviderHooks(before_request=before, on_call=self.records.append)

    @property
    def last(self) -> CallRecord:
        return self.records[-1]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


MakeProvider = Callable[..., OpenAIProvider]


@pytest.fixture
def make(fake: FakeOpenAI, recorder: Recorder) -> Iterator[MakeProvider]:
    made: list[OpenAIProvider] = []

    def build(**overrides: object) -> OpenAIProvider:
        options: dict = {
            "api_key": VALID_KEY,
            "model": MODEL,
            "embedding_model": EMBEDDING_MODEL,
            "base_url": fake.base_url,
            "timeout_seconds": 5.0,
            "max_attempts": 3,
            "backoff_base_seconds": 0.01,
            "max_backoff_seconds": 2.0,
            **overrides,
        }
        made.append(OpenAIProvider(OpenAIConfig(**options), recorder.hooks()))
        return made[-1]

    yield build
    for provider in made:
        provider.close()


# --- outline ------------------------------------------------------------------------


def test_the_outline_is_structured_output_with_exactly_the_bullets_asked_for(fake, make, recorder):
    outline = make().outline(REQUEST)
    assert outline.title == OUTLINE_TITLE and len(outline.bullets) == 3
    (call,) = fake.calls("chat")
    assert call.path == "/v1/chat/completions" and "stream" not in call.body
    fmt = call.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["title", "bullets"] and schema["additionalProperties"] is False
    assert (
        schema["properties"]["bullets"]["minItems"]
        == 3
        == schema["properties"]["bullets"]["maxItems"]
    )
    system, user = call.body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT} and user["role"] == "user"
    assert call.headers.get("x-stainless-retry-count") == "0"  # the SDK's own retries are off
    record = recorder.last
    assert (record.kind, record.outcome, record.retries) == ("outline", "ok", 0)
    assert (record.provider, record.model) == ("openai", MODEL)
    assert (record.input_tokens, record.output_tokens) == (USAGE["prompt_tokens"], 9)


def test_a_server_without_json_schema_gets_json_mode_once_and_then_always(fake, make, recorder):
    fake.json_schema = False
    provider = make()
    assert provider.outline(REQUEST).title == OUTLINE_TITLE
    first, second = fake.calls("chat")
    assert first.body["response_format"]["type"] == "json_schema"
    schema = first.body["response_format"]["json_schema"]["schema"]
    # JSON mode carrying the schema (llama.cpp's form), and the schema in the prompt too
    assert second.body["response_format"] == {"type": "json_object", "schema": schema}
    assert json.dumps(schema, separators=(",", ":")) in second.body["messages"][-1]["content"]
    assert recorder.last.retries == 1 and provider.json_schema is False
    provider.outline(REQUEST)  # remembered: straight to JSON mode
    assert [c.body["response_format"]["type"] for c in fake.calls("chat")[2:]] == ["json_object"]
    assert recorder.last.retries == 0


def test_a_json_mode_answer_in_a_fence_is_parsed(fake, make):
    fake.queue(
        "chat", Reply(body=completion('```json\n{"title": "X", "bullets": ["a","b","c"]}\n```'))
    )
    assert make().outline(REQUEST) == Outline("X", ("a", "b", "c"))


def test_a_malformed_outline_is_asked_for_twice_then_fails(fake, make):
    fake.queue(
        "chat", Reply(body=completion("not json")), Reply(body=completion('{"bullets": []}'))
    )
    with pytest.raises(MalformedOutputError, match=r"no title \(asked twice\)"):
        make().outline(REQUEST)
    assert len(fake.calls("chat")) == 2


# --- sections -------------------------------------------------------------------------


def test_a_section_streams_in_pieces_with_its_usage(fake, make, recorder):
    pieces = list(make().stream_section(REQUEST, OUTLINE, 0, ""))
    assert len(pieces) > 3 and "".join(pieces) == PROSE
    (call,) = fake.calls("stream")
    assert call.body["stream"] is True and call.body["stream_options"] == {"include_usage": True}
    assert "response_format" not in call.body
    record = recorder.last
    assert (record.kind, record.outcome) == ("prose", "ok")
    assert (record.input_tokens, record.output_tokens) == (13, 9)


def test_a_stream_that_ends_without_a_finish_reason_is_retryable(fake, make):
    fake.queue("stream", stream_reply(["Some words "], finish=None, usage=False))
    with pytest.raises(ProviderUnavailableError, match="ended before the model finished"):
        list(make().stream_section(REQUEST, OUTLINE, 0, ""))


def test_a_stream_cut_after_text_is_retryable_and_not_retried_inside(fake, make):
    reply = stream_reply(["One ", "two ", "three"])
    reply.cut_after = 2
    fake.queue("stream", reply)
    seen: list[str] = []
    with pytest.raises(ProviderUnavailableError, match="broke off mid-way"):
        seen.extend(make().stream_section(REQUEST, OUTLINE, 0, ""))
    assert seen == ["One "] and len(fake.calls("stream")) == 1


@pytest.mark.parametrize(
    "reply, how",
    [(refusal_stream(), "refusal"), (content_filter_stream(("It began ",)), "content_filter")],
)
def test_a_refused_section_is_a_refusal(fake, make, recorder, reply, how):
    fake.queue("stream", reply)
    with pytest.raises(RefusedError, match=f"model refused to write this content.*{how}"):
        list(make().stream_section(REQUEST, OUTLINE, 0, ""))
    assert recorder.last.outcome == "permanent_error" and len(fake.calls("stream")) == 1


def test_a_refused_message_is_a_refusal_and_not_retried(fake, make):
    fake.queue("chat", refusal_reply())
    with pytest.raises(RefusedError, match="refused"):
        make().summarize(REQUEST, OUTLINE, "text")
    assert len(fake.calls("chat")) == 1


def test_the_summary(fake, make):
    assert make().summarize(REQUEST, OUTLINE, "text") == SUMMARY


# --- errors -------------------------------------------------------------------------


def test_a_429_with_retry_after_is_waited_out_and_retried(fake, make, recorder):
    fake.queue("chat", error_reply(429, "slow down", retry_after=0.3))
    assert make().summarize(REQUEST, OUTLINE, "x") == SUMMARY
    assert len(fake.calls("chat")) == 2 == recorder.attempts
    assert recorder.last.retries == 1


def test_retry_after_beyond_the_cap_goes_to_the_job_level(fake, make):
    fake.queue("chat", error_reply(429, "later", retry_after=90))
    with pytest.raises(RateLimitedError) as caught:
        make().summarize(REQUEST, OUTLINE, "x")
    assert caught.value.retry_after == 90 and len(fake.calls("chat")) == 1


def test_server_errors_are_retried_then_retryable(fake, make, recorder):
    fake.queue("chat", *(error_reply(503) for _ in range(3)))
    with pytest.raises(ProviderUnavailableError, match="HTTP 503 after 3 attempts"):
        make().summarize(REQUEST, OUTLINE, "x")
    assert recorder.last.outcome == "retryable_error" and recorder.last.retries == 2


@pytest.mark.parametrize("status", [400, 404, 422])
def test_bad_requests_are_permanent_and_not_retried(fake, make, status):
    fake.queue("chat", error_reply(status, "no such thing"))
    with pytest.raises(InvalidRequestError, match=f"HTTP {status}") as caught:
        make().summarize(REQUEST, OUTLINE, "x")
    assert not caught.value.provider_wide and len(fake.calls("chat")) == 1


def test_a_missing_model_is_provider_wide_and_names_the_variable(fake, make):
    fake.models.discard(MODEL)
    with pytest.raises(ModelUnavailableError, match="set OPENAI_MODEL") as caught:
        make().summarize(REQUEST, OUTLINE, "x")
    assert caught.value.provider_wide and "model_not_found" in str(caught.value)


def test_a_rejected_key_is_provider_wide_and_never_quoted(fake, make):
    secret = "sk-live-secret-never-shown-42"
    with pytest.raises(AuthenticationError, match="rejected the API key") as caught:
        make(api_key=secret).summarize(REQUEST, OUTLINE, "x")
    assert caught.value.provider_wide and secret not in str(caught.value)
    assert len(fake.calls("chat")) == 1


def test_a_spent_quota_is_provider_wide_and_not_retried_inside(fake, make):
    fake.queue(
        "chat", error_reply(429, "You exceeded your current quota", code="insufficient_quota")
    )
    with pytest.raises(QuotaExhaustedError) as caught:
        make().summarize(REQUEST, OUTLINE, "x")
    assert caught.value.provider_wide and len(fake.calls("chat")) == 1


def test_a_slow_server_times_out_and_is_retried(fake, make):
    fake.queue(
        "chat", Reply(body=completion("late"), delay=1.0), Reply(body=completion("late"), delay=1.0)
    )
    with pytest.raises(ProviderUnavailableError, match="did not answer in time after 2 attempts"):
        make(timeout_seconds=0.2, max_attempts=2).summarize(REQUEST, OUTLINE, "x")


def test_an_unreachable_server_is_retryable(make):
    provider = make(base_url="http://127.0.0.1:9/v1", max_attempts=1)
    with pytest.raises(ProviderUnavailableError, match="unreachable"):
        provider.summarize(REQUEST, OUTLINE, "x")


def test_the_sdks_environment_cannot_redirect_or_swap_the_key(fake, make, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    assert make().summarize(REQUEST, OUTLINE, "x") == SUMMARY


# --- embeddings -------------------------------------------------------------------------


def test_embeddings_are_asked_for_in_base64_and_read_in_either_encoding(fake, make, recorder):
    provider = make()
    packed = provider.embed("a summary")
    fake.floats_only = True  # a server that ignores encoding_format
    floats = provider.embed("a summary")
    assert len(packed) == EMBEDDING_SIZE == len(floats)
    assert math.isclose(sum(v * v for v in packed), 1.0, rel_tol=1e-6)
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(packed, floats, strict=True))
    assert [c.body["encoding_format"] for c in fake.calls("embeddings")] == ["base64", "base64"]
    assert provider.embedding_model == EMBEDDING_MODEL
    assert (recorder.last.kind, recorder.last.model, recorder.last.input_tokens) == (
        "embedding",
        EMBEDDING_MODEL,
        7,
    )


def test_without_an_embedding_model_nothing_is_asked_or_stored(fake, make):
    provider = make(embedding_model=None)
    assert provider.embed("a summary") == [] and provider.embedding_model == ""
    assert fake.calls("embeddings") == []


# --- check ----------------------------------------------------------------------------------


def test_check_retrieves_both_models(fake, make):
    make().check()
    assert [c.path for c in fake.calls("model")] == [
        f"/v1/models/{MODEL}",
        f"/v1/models/{EMBEDDING_MODEL}",
    ]


def test_check_names_a_missing_model_and_its_variable(fake, make):
    fake.models.discard(EMBEDDING_MODEL)
    with pytest.raises(ModelUnavailableError, match="set OPENAI_EMBEDDING_MODEL"):
        make().check()


def test_check_reads_the_model_list_where_a_server_cannot_retrieve_one(fake, make):
    fake.retrieve = False
    make().check()
    assert len(fake.calls("models")) == 2
    fake.models.discard(MODEL)
    with pytest.raises(ModelUnavailableError, match="not in the server's model list"):
        make().check()


def test_check_rejects_a_bad_key_in_one_attempt(fake, make, recorder):
    with pytest.raises(AuthenticationError):
        make(api_key="sk-wrong").check()
    assert len(fake.requests) == 1


def test_the_provider_says_who_served_it(make):
    assert make().served_by == Source("openai", MODEL)


def test_the_key_is_not_in_the_repr():
    config = OpenAIConfig(api_key="sk-hidden-1", model=MODEL)
    assert "sk-hidden-1" not in repr(config) and config.label == "OpenAI"
    with pytest.raises(ValueError, match="api_key is empty"):
        OpenAIConfig(api_key=" ", model=MODEL)
