"""Gemini's answers in JSON (Provider.structured) and batched embeddings, on the wire
through the real google-genai SDK against the fake Gemini server."""

from __future__ import annotations

import json
import math

import pytest

from generation.errors import MalformedOutputError, ProviderUnavailableError
from generation.story import schemas
from generation.story.extraction import memory_ask
from generation.types import JsonAsk, Prompt
from tests.fakegemini import Reply, text_response
from tests.unit.test_gemini import OUTLINE, REQUEST, schema_value

ASK = JsonAsk(
    prompt=Prompt("system", "Name two birds as JSON."),
    name="two_birds",
    schema=schemas.obj(
        birds=schemas.array(schemas.obj(name=schemas.STRING, wings=schemas.INTEGER), max_items=2)
    ),
    words=40,
    kind="memory",
)


def test_an_answer_in_json_asks_with_a_response_schema_made_from_the_json_schema(
    fake_gemini, make_provider, recorder
):
    body = {"birds": [{"name": "heron", "wings": 2}]}
    fake_gemini.queue("generateContent", Reply(body=text_response(json.dumps(body))))
    assert make_provider().structured(REQUEST, ASK) == body
    (call,) = fake_gemini.calls("generateContent")
    config = call.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config["responseSchema"]
    assert schema["type"] == "OBJECT" and schema["required"] == ["birds"]
    ordering = schema_value(schema, "propertyOrdering", "property_ordering")
    assert ordering == ["birds"] and "additionalProperties" not in json.dumps(schema)
    birds = schema["properties"]["birds"]
    assert birds["type"] == "ARRAY" and int(schema_value(birds, "maxItems", "max_items")) == 2
    assert birds["items"]["properties"]["wings"]["type"] == "INTEGER"
    assert call.body["contents"][-1]["parts"][0]["text"] == "Name two birds as JSON."
    assert call.body["systemInstruction"]["parts"][0]["text"] == "system"
    assert (recorder.last.kind, recorder.last.outcome) == ("memory", "ok")


def test_an_answer_in_json_cut_at_the_output_limit_or_not_json_is_malformed(
    fake_gemini, make_provider
):
    cut = text_response('{"birds": [{"name": "her', finish="MAX_TOKENS")
    fake_gemini.queue("generateContent", Reply(body=cut), Reply(body=text_response("no")))
    with pytest.raises(MalformedOutputError, match="cut at its output limit"):
        make_provider().structured(REQUEST, ASK)
    with pytest.raises(MalformedOutputError, match="the two birds is not valid JSON"):
        make_provider().structured(REQUEST, ASK)
    assert len(fake_gemini.calls("generateContent")) == 2  # never asked twice


def test_the_chapter_memory_ask_carries_its_output_limit_and_schema(fake_gemini, make_provider):
    ask = memory_ask(REQUEST, OUTLINE, "Mara rowed out. Ilya waited.")
    answer = make_provider(thinking_level="low").structured(REQUEST, ask)
    assert answer["summary"] and isinstance(answer["characters"], list)
    (call,) = fake_gemini.calls("generateContent")
    config = call.body["generationConfig"]
    # The answer's words at about 3 tokens a word, plus the thinking level's allowance.
    assert config["maxOutputTokens"] == math.ceil(ask.words * 3) + 2048
    properties = config["responseSchema"]["properties"]
    assert list(properties) == ["summary", "arc", "characters", "facts"]
    assert int(schema_value(properties["facts"], "maxItems", "max_items")) == 8


def test_many_texts_are_embedded_in_one_request(fake_gemini, make_provider, recorder):
    texts = [f"passage {i}" for i in range(3)]
    vectors = make_provider(embedding_dimensions=64).embed_many(texts)
    (call,) = fake_gemini.calls("batchEmbedContents")
    assert [r["content"]["parts"][0]["text"] for r in call.body["requests"]] == texts
    assert len(vectors) == 3 and all(len(v) == 64 for v in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in vectors)
    assert vectors[0] == make_provider(embedding_dimensions=64).embed("passage 0")
    assert [r.kind for r in recorder.records] == ["embedding", "embedding"]


def test_more_texts_than_a_batch_take_one_operation_of_several_requests(
    fake_gemini, make_provider, recorder
):
    vectors = make_provider(embedding_dimensions=8).embed_many([f"t{i}" for i in range(150)])
    sizes = [len(c.body["requests"]) for c in fake_gemini.calls("batchEmbedContents")]
    assert sizes == [100, 50] and len(vectors) == 150
    assert len(recorder.records) == 1


def test_a_batch_answered_with_too_few_embeddings_is_malformed(fake_gemini, make_provider):
    one = {"embeddings": [{"values": [0.5] * 768}]}
    fake_gemini.queue("batchEmbedContents", Reply(body=one))
    with pytest.raises(MalformedOutputError, match="1 embeddings for 2 texts"):
        make_provider().embed_many(["a", "b"])


def test_an_answer_whose_failure_the_caller_survives_is_tried_at_most_its_attempts(
    fake_gemini, make_provider, recorder
):
    fake_gemini.fail("generateContent", 503, times=5)
    ask = JsonAsk(ASK.prompt, ASK.name, ASK.schema, ASK.words, kind="memory", attempts=2)
    with pytest.raises(ProviderUnavailableError, match="after 2 attempts"):
        make_provider(max_attempts=5).structured(REQUEST, ask)
    assert len(fake_gemini.calls("generateContent")) == 2
    assert (recorder.last.kind, recorder.last.retries) == ("memory", 1)
    assert memory_ask(REQUEST, OUTLINE, "Text.").attempts == 2  # the chapter memory's
