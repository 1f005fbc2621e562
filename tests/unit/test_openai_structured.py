"""The OpenAI-compatible provider's answers in JSON (Provider.structured) and batched
embeddings, through the real `openai` SDK against the fake server: the outline's path
and forms (json_schema, then JSON mode with the schema, then plain JSON mode), shared
with the outline, and many texts to an embeddings request."""

from __future__ import annotations

import math

import pytest

from generation.errors import MalformedOutputError, ProviderUnavailableError
from generation.providers import openai_embed
from generation.providers.openai_json import SCHEMA_IN_PROMPT
from generation.story import schemas
from generation.story.extraction import memory_ask
from generation.types import JsonAsk, Prompt
from tests.fakeopenai import OUTLINE_TITLE, Reply, completion
from tests.unit.test_openai import OUTLINE, REQUEST, fake, make, recorder  # noqa: F401
from tests.unit.test_openai_servers import formats

ASK = JsonAsk(
    prompt=Prompt("system", "Name two birds as JSON."),
    name="two_birds",
    schema=schemas.obj(birds=schemas.array(schemas.STRING, max_items=2)),
    words=100,
    kind="memory",
)


def test_an_answer_in_json_is_structured_output_named_after_it(fake, make, recorder):  # noqa: F811
    fake.queue("chat", Reply(body=completion('{"birds": ["heron", "tern"]}')))
    assert make().structured(REQUEST, ASK) == {"birds": ["heron", "tern"]}
    (call,) = fake.calls("chat")
    fmt = call.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "two_birds"
    assert fmt["json_schema"]["strict"] is True and fmt["json_schema"]["schema"] == ASK.schema
    assert call.body["messages"][-1]["content"] == "Name two birds as JSON."
    assert call.body["max_tokens"] == 300  # about 100 words, at the shared rule
    record = recorder.last
    assert (record.kind, record.outcome, record.retries) == ("memory", "ok", 0)


def test_the_form_the_outline_found_is_the_one_the_next_answer_takes(fake, make):  # noqa: F811
    fake.json_schema = False
    provider = make()
    assert provider.outline(REQUEST).title == OUTLINE_TITLE
    fake.queue("chat", Reply(body=completion('{"birds": []}')))
    provider.structured(REQUEST, ASK)
    assert formats(fake) == ["json_schema", "json_object+schema", "json_object+schema"]
    assert SCHEMA_IN_PROMPT in fake.calls("chat")[-1].body["messages"][-1]["content"]


def test_an_answer_refused_in_one_form_is_asked_in_the_next(fake, make, recorder):  # noqa: F811
    fake.json_schema, fake.json_object_schema = False, False
    fake.queue("chat", Reply(body=completion('```json\n{"birds": ["owl"]}\n```')))
    provider = make()
    # The refusals are scripted by the fake's switches; the third form's answer by queue.
    assert provider.structured(REQUEST, ASK) == {"birds": ["owl"]}
    assert formats(fake) == ["json_schema", "json_object+schema", "json_object"]
    assert recorder.last.retries == 2 and provider.json_form == "json_object"


def test_an_answer_that_is_not_a_json_object_is_malformed_and_not_asked_again(fake, make):  # noqa: F811
    fake.queue("chat", Reply(body=completion('["heron"]')))
    with pytest.raises(MalformedOutputError, match="the two birds is not a JSON object"):
        make().structured(REQUEST, ASK)
    assert len(fake.calls("chat")) == 1


def test_the_fake_answers_the_chapter_memory_from_the_request(fake, make):  # noqa: F811
    text = "At dawn Mara rowed out, and Ilya waited on the quay. Mara came back at dusk."
    answer = make().structured(REQUEST, memory_ask(REQUEST, OUTLINE, text))
    assert [c["name"] for c in answer["characters"]] == ["Mara", "Ilya"]
    assert answer["characters"][0]["state"] == "Mara came back at dusk."
    assert answer["facts"] == ["At dawn Mara rowed out, and Ilya waited on the quay."]


def test_many_texts_are_embedded_in_one_request(fake, make, recorder):  # noqa: F811
    provider = make()
    vectors = provider.embed_many(["one", "two", "three"])
    (call,) = fake.calls("embeddings")
    assert call.body["input"] == ["one", "two", "three"]
    assert call.body["encoding_format"] == "base64"
    assert len(vectors) == 3 and len({tuple(v) for v in vectors}) == 3
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-6) for v in vectors)
    assert vectors[1] == provider.embed("two")
    assert [r.kind for r in recorder.records] == ["embedding", "embedding"]


def test_more_texts_than_a_batch_take_several_requests_in_one_operation(
    fake,  # noqa: F811
    make,  # noqa: F811
    recorder,  # noqa: F811
    monkeypatch,
):
    monkeypatch.setattr(openai_embed, "EMBEDDING_BATCH", 2)
    vectors = make().embed_many(["a", "b", "c"])
    assert [c.body["input"] for c in fake.calls("embeddings")] == [["a", "b"], ["c"]]
    assert len(vectors) == 3 and len(recorder.records) == 1


def test_a_server_answering_too_few_embeddings_is_malformed(fake, make):  # noqa: F811
    one = {"data": [{"index": 0, "embedding": [0.5, 0.5]}], "model": "m", "usage": {}}
    fake.queue("embeddings", Reply(body=one))
    with pytest.raises(MalformedOutputError, match="1 embeddings for 2 texts"):
        make().embed_many(["a", "b"])


def test_no_embedding_model_makes_no_request(fake, make):  # noqa: F811
    assert make(embedding_model=None).embed_many(["a"]) == []
    assert fake.calls("embeddings") == []


def test_an_embedding_batch_that_keeps_failing_fails_like_any_request(fake, make):  # noqa: F811
    fake.queue("embeddings", *(Reply(503, {"error": {"message": "busy"}}) for _ in range(3)))
    with pytest.raises(ProviderUnavailableError, match="HTTP 503 after 3 attempts"):
        make().embed_many(["a", "b"])
