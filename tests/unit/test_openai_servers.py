"""What real OpenAI-compatible servers do that OpenAI does not (issue 29), through the
real `openai` SDK against the fake server (tests/fakeopenai.py): response formats they
refuse (llama-cpp-python with an HTTP 500), streams of keep-alives only, no usage, an
empty stream, embeddings per token, and the output limit every request carries."""

# The fixtures are test_openai's (imported below): pytest passes them in by name.
# ruff: noqa: F811

from __future__ import annotations

import json
import time

import pytest

from generation.errors import (
    InvalidRequestError,
    MalformedOutputError,
    ModelUnavailableError,
    ProviderUnavailableError,
)
from generation.providers.calls import MIN_OUTPUT_TOKENS, max_output_tokens
from generation.providers.openai_config import OpenAIConfig
from generation.providers.openai_json import SCHEMA_IN_PROMPT
from generation.providers.openai_wire import output_limit
from tests.fakeopenai import (
    EMBEDDING_SIZE,
    OUTLINE_TITLE,
    PROSE,
    SUMMARY,
    Reply,
    completion,
    stream_reply,
)
from tests.unit.test_openai import (  # noqa: F401 - the fixtures
    OUTLINE,
    REQUEST,
    fake,
    make,
    recorder,
)


def formats(fake) -> list[str]:
    return [
        c.body["response_format"]["type"]
        + ("+schema" if "schema" in c.body["response_format"] else "")
        if "response_format" in c.body
        else "text"
        for c in fake.calls("chat")
    ]


# --- the outline's form ------------------------------------------------------------------


def test_a_500_naming_response_format_is_the_requests_fault_and_falls_back_at_once(
    fake, make, recorder
):
    fake.json_schema, fake.format_status = False, 500  # llama-cpp-python 0.3
    provider = make()
    assert provider.outline(REQUEST).title == OUTLINE_TITLE
    assert formats(fake) == ["json_schema", "json_object+schema"]  # the 500 not retried
    assert recorder.last.outcome == "ok" and recorder.last.retries == 1
    assert provider.json_form == "json_object+schema"


def test_a_server_that_takes_no_schema_in_json_mode_gets_it_in_the_prompt(fake, make):
    fake.json_schema, fake.json_object_schema = False, False
    provider = make()
    assert provider.outline(REQUEST).title == OUTLINE_TITLE
    assert formats(fake) == ["json_schema", "json_object+schema", "json_object"]
    plain = fake.calls("chat")[-1]
    assert SCHEMA_IN_PROMPT in plain.body["messages"][-1]["content"]
    provider.outline(REQUEST)
    assert formats(fake)[3:] == ["json_object"]  # remembered


def test_a_request_every_form_refuses_fails_the_job_not_the_provider(fake, make):
    refused = Reply(400, {"error": {"message": "response_format is not supported here"}})
    fake.queue("chat", *([refused] * 4))
    with pytest.raises(InvalidRequestError, match="HTTP 400") as caught:
        make().outline(REQUEST)
    assert not caught.value.retryable and not caught.value.provider_wide
    assert formats(fake) == ["json_schema", "json_object+schema", "json_object", "text"]


def test_a_500_that_does_not_name_response_format_is_still_the_servers(fake, make):
    fake.queue("chat", *(Reply(500, {"error": {"message": "out of memory"}}) for _ in range(3)))
    with pytest.raises(ProviderUnavailableError, match="HTTP 500 after 3 attempts"):
        make().outline(REQUEST)
    assert formats(fake) == ["json_schema"] * 3


# --- the output limit ----------------------------------------------------------------------


def test_every_request_carries_an_output_limit_from_the_words_wanted(fake, make):
    provider = make()
    provider.outline(REQUEST)
    list(provider.stream_section(REQUEST, OUTLINE, 0, ""))
    provider.summarize(REQUEST, OUTLINE, "text")
    outline, summary = fake.calls("chat")
    (section,) = fake.calls("stream")
    words = REQUEST.preferences.words_per_bullet
    assert section.body["max_tokens"] == max_output_tokens(words) == round(words * 2 * 1.5)
    assert outline.body["max_tokens"] >= MIN_OUTPUT_TOKENS
    assert summary.body["max_tokens"] >= MIN_OUTPUT_TOKENS
    assert max_output_tokens(10) == MIN_OUTPUT_TOKENS


def test_openai_itself_is_sent_max_completion_tokens():
    assert OpenAIConfig(api_key="k", model="m").is_openai
    assert not OpenAIConfig(api_key="k", model="m", base_url="http://127.0.0.1:1/v1").is_openai
    assert output_limit(600, True) == {"max_completion_tokens": 600}
    assert output_limit(600, False) == {"max_tokens": 600}


# --- streams -------------------------------------------------------------------------------


def test_a_stream_of_keep_alives_only_is_cut_at_the_deadline_and_asked_again(fake, make, recorder):
    fake.queue("stream", Reply(chunks=stream_reply(["Late words."]).chunks, stall=30))
    started = time.monotonic()
    pieces = list(make(timeout_seconds=1.0).stream_section(REQUEST, OUTLINE, 0, ""))
    elapsed = time.monotonic() - started
    assert "".join(pieces) == PROSE  # the second request's answer
    first, second = fake.calls("stream")
    assert 0.9 < second.at - first.at < 3.0  # cut at the 1 s deadline, not after 30 s
    assert elapsed < 4.0 and recorder.last.retries == 1 and recorder.last.outcome == "ok"
    deadline = time.monotonic() + 3
    while not fake.hangups and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.hangups and fake.hangups[0] - first.at < 3.0  # the connection was cut


def test_a_stream_that_stops_sending_text_midway_is_cut_and_left_to_the_job(fake, make, recorder):
    reply = stream_reply(["Before the silence. ", "Never sent."])
    reply.stall, reply.stall_after = 30, 2  # the role chunk, one text, then keep-alives
    fake.queue("stream", reply)
    seen: list[str] = []
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match="sent no text for 1 s"):
        seen.extend(make(timeout_seconds=1.0).stream_section(REQUEST, OUTLINE, 0, ""))
    assert time.monotonic() - started < 4.0
    assert seen == ["Before the silence. "] and len(fake.calls("stream")) == 1
    assert recorder.last.outcome == "retryable_error"


def test_a_stream_without_usage_gets_an_estimate_marked_as_such(fake, make, recorder):
    fake.queue("stream", stream_reply(["Four words come here. ", "And more."], usage=False))
    list(make().stream_section(REQUEST, OUTLINE, 0, ""))
    record = recorder.last
    assert record.estimated is True and record.output_tokens >= 2 and record.input_tokens > 100


def test_a_stream_with_usage_is_not_an_estimate(fake, make, recorder):
    list(make().stream_section(REQUEST, OUTLINE, 0, ""))
    assert recorder.last.estimated is False and recorder.last.output_tokens == 9


def test_an_empty_stream_is_asked_once_without_streaming(fake, make, recorder):
    fake.queue("stream", Reply(chunks=[]))
    assert list(make().stream_section(REQUEST, OUTLINE, 0, "")) == [SUMMARY]
    assert len(fake.calls("stream")) == 1 and len(fake.calls("chat")) == 1
    assert recorder.last.retries == 1


def test_an_empty_stream_reports_what_the_server_says_when_asked_plainly(fake, make):
    fake.queue("stream", Reply(chunks=[]))
    message = "Requested tokens (2400) exceed context window of 2048"
    fake.queue(
        "chat", Reply(400, {"error": {"message": message, "code": "context_length_exceeded"}})
    )
    with pytest.raises(InvalidRequestError, match=r"exceed context window of 2048"):
        list(make().stream_section(REQUEST, OUTLINE, 0, ""))


def test_a_completion_without_usage_gets_an_estimate(fake, make, recorder):
    body = completion(SUMMARY)
    del body["usage"]
    fake.queue("chat", Reply(body=body))
    assert make().summarize(REQUEST, OUTLINE, "text") == SUMMARY
    assert recorder.last.estimated is True and recorder.last.output_tokens >= 1


# --- the embedding model at boot -----------------------------------------------------------


def test_check_embeds_once_and_remembers_the_size(fake, make):
    provider = make()
    provider.check()
    (asked,) = fake.calls("embeddings")
    assert asked.body["encoding_format"] == "base64"
    assert provider.embedding_size == EMBEDDING_SIZE
    fake.embedding_size = EMBEDDING_SIZE * 2  # the server swapped its model under us
    with pytest.raises(MalformedOutputError, match=f"expected {EMBEDDING_SIZE}"):
        provider.embed("a summary")


def test_check_refuses_an_embedding_per_token_naming_the_variable(fake, make):
    fake.per_token = True
    with pytest.raises(ModelUnavailableError, match="one vector per token") as caught:
        make().check()
    assert "set OPENAI_EMBEDDING_MODEL" in str(caught.value) and caught.value.provider_wide


def test_check_refuses_an_embedding_of_another_size_than_configured(fake, make):
    with pytest.raises(ModelUnavailableError, match=f"vectors of {EMBEDDING_SIZE} values, not 8"):
        make(embedding_dimensions=8).check()
    make(embedding_dimensions=EMBEDDING_SIZE).check()


def test_the_outline_schema_in_the_prompt_is_the_one_sent(fake, make):
    fake.json_schema = False
    make().outline(REQUEST)
    first, second = fake.calls("chat")
    schema = json.dumps(
        first.body["response_format"]["json_schema"]["schema"], separators=(",", ":")
    )
    assert second.body["messages"][-1]["content"].endswith(SCHEMA_IN_PROMPT + schema)
