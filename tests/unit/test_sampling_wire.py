"""What a job's preferences put on the wire (issue 23 item 5), through the real SDKs
against the fake Gemini and OpenAI servers: `temperature` on every outline, section
(and continuation) and summary request and never on an embedding; `content_rating` as
Gemini's safety settings, never laxer than the operator's GEMINI_SAFETY_THRESHOLD."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import pytest

from generation.providers.gemini import GeminiConfig, GeminiProvider
from generation.providers.gemini_config import RATING_THRESHOLDS, rated_threshold
from generation.providers.gemini_wire import ADJUSTABLE_HARM_CATEGORIES
from generation.providers.openai_chat import OpenAIProvider
from generation.providers.openai_config import OpenAIConfig
from generation.story.preferences import parse_preferences
from generation.types import ChapterRequest, Outline
from tests.fakegemini import VALID_KEY as GEMINI_KEY
from tests.fakegemini import FakeGemini, Reply, chunk, stream_reply
from tests.fakeopenai import EMBEDDING_MODEL, MODEL, FakeOpenAI, completion
from tests.fakeopenai import VALID_KEY as OPENAI_KEY
from tests.fakeopenai import Reply as OpenAIReply
from tests.unit.test_gemini import OUTLINE
from tests.unit.test_gemini_models import generation_bodies


@pytest.fixture
def make_provider(fake_gemini: FakeGemini) -> Iterator[Callable[..., GeminiProvider]]:
    """Gemini providers on the fake (the operator's settings as given); closed after."""
    made: list[GeminiProvider] = []

    def build(**overrides: object) -> GeminiProvider:
        config = GeminiConfig(api_key=GEMINI_KEY, base_url=fake_gemini.base_url, **overrides)
        made.append(GeminiProvider(config))
        return made[-1]

    yield build
    for provider in made:
        provider.close()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def make(fake: FakeOpenAI) -> Iterator[Callable[[], OpenAIProvider]]:
    """OpenAI-compatible providers on the fake; closed after."""
    made: list[OpenAIProvider] = []

    def build() -> OpenAIProvider:
        config = OpenAIConfig(
            api_key=OPENAI_KEY, model=MODEL, embedding_model=EMBEDDING_MODEL, base_url=fake.base_url
        )
        made.append(OpenAIProvider(config))
        return made[-1]

    yield build
    for provider in made:
        provider.close()


def request(**prefs: object) -> ChapterRequest:
    prefs = {"bullet_count": 3, **prefs}
    return ChapterRequest(chapter_number=1, preferences=parse_preferences(prefs))


def write_everything(provider, req: ChapterRequest, outline: Outline = OUTLINE) -> None:
    provider.outline(req)
    list(provider.stream_section(req, outline, 0, ""))
    provider.summarize(req, outline, "text")
    provider.embed("text")


def thresholds(body: dict) -> set[str]:
    settings = body["safetySettings"]
    assert [s["category"] for s in settings] == [c.value for c in ADJUSTABLE_HARM_CATEGORIES]
    return {s["threshold"] for s in settings}


# --- Gemini ----------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0, 0.35, 2])
def test_gemini_carries_the_temperature_on_every_generation_request(
    fake_gemini, make_provider, temperature
):
    write_everything(make_provider(), request(temperature=temperature))
    bodies = generation_bodies(fake_gemini)
    assert len(bodies) == 3
    assert [b["generationConfig"]["temperature"] for b in bodies] == [temperature] * 3
    (embedding,) = fake_gemini.calls("batchEmbedContents")
    assert "temperature" not in json.dumps(embedding.body)


def test_gemini_sends_no_temperature_or_safety_settings_a_job_does_not_ask_for(
    fake_gemini, make_provider
):
    write_everything(make_provider(), request())
    for body in generation_bodies(fake_gemini):
        assert "temperature" not in body["generationConfig"]
        assert "safetySettings" not in body


def test_a_continued_gemini_stream_keeps_the_jobs_controls(fake_gemini, make_provider):
    pause = chunk("First half. ", finish="CONTINUATION")
    pause["candidates"][0]["continuationToken"] = base64.b64encode(b"resume").decode()
    fake_gemini.queue("streamGenerateContent", Reply(chunks=[pause]), stream_reply(["Rest."]))
    req = request(temperature=1.1, content_rating="teen")
    assert "".join(make_provider().stream_section(req, OUTLINE, 0, "")) == "First half. Rest."
    first, second = fake_gemini.calls("streamGenerateContent")
    assert "continuationToken" in second.body
    for call in (first, second):
        assert call.body["generationConfig"]["temperature"] == 1.1
        assert thresholds(call.body) == {"BLOCK_MEDIUM_AND_ABOVE"}


@pytest.mark.parametrize("rating", ["general", "teen", "mature", "explicit"])
def test_gemini_maps_the_content_rating_to_its_safety_settings(
    fake_gemini, make_provider, rating
):
    write_everything(make_provider(), request(content_rating=rating))
    bodies = generation_bodies(fake_gemini)
    assert len(bodies) == 3
    assert all(thresholds(b) == {RATING_THRESHOLDS[rating]} for b in bodies)
    (embedding,) = fake_gemini.calls("batchEmbedContents")
    assert "safety" not in json.dumps(embedding.body).lower()


@pytest.mark.parametrize(
    ("operator", "rating", "sent"),
    [
        # The operator's threshold is a floor: a rating may be stricter, never laxer.
        ("BLOCK_MEDIUM_AND_ABOVE", "explicit", "BLOCK_MEDIUM_AND_ABOVE"),
        ("BLOCK_MEDIUM_AND_ABOVE", "mature", "BLOCK_MEDIUM_AND_ABOVE"),
        ("BLOCK_MEDIUM_AND_ABOVE", "general", "BLOCK_LOW_AND_ABOVE"),
        ("BLOCK_ONLY_HIGH", "teen", "BLOCK_MEDIUM_AND_ABOVE"),
        ("OFF", "explicit", "BLOCK_NONE"),
        ("BLOCK_LOW_AND_ABOVE", "explicit", "BLOCK_LOW_AND_ABOVE"),
        ("BLOCK_NONE", None, "BLOCK_NONE"),  # unrated: the operator's, as before
    ],
)
def test_the_stricter_of_the_operators_threshold_and_the_rating_wins(
    fake_gemini, make_provider, operator, rating, sent
):
    assert rated_threshold(operator, rating) == sent
    prefs = {"content_rating": rating} if rating else {}
    write_everything(make_provider(safety_threshold=operator), request(**prefs))
    bodies = generation_bodies(fake_gemini)
    assert len(bodies) == 3 and all(thresholds(b) == {sent} for b in bodies)


def test_rated_threshold_without_either_says_nothing() -> None:
    assert rated_threshold(None, None) is None
    assert rated_threshold(None, "mature") == "BLOCK_ONLY_HIGH"
    assert rated_threshold("BLOCK_ONLY_HIGH", None) == "BLOCK_ONLY_HIGH"


# --- OpenAI-compatible -------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0, 0.9, 2])
def test_openai_carries_the_temperature_on_every_generation_request(fake, make, temperature):
    write_everything(make(), request(temperature=temperature, content_rating="mature"))
    bodies = [c.body for c in fake.calls("chat") + fake.calls("stream")]
    assert len(bodies) == 3
    assert [b["temperature"] for b in bodies] == [temperature] * 3
    (embedding,) = fake.calls("embeddings")
    assert "temperature" not in embedding.body
    # No safety settings on this API: the rating is said in the prompt only.
    assert '"content_rating": "mature"' in bodies[0]["messages"][1]["content"]


def test_openai_sends_no_temperature_a_job_does_not_ask_for(fake, make):
    write_everything(make(), request())
    bodies = [c.body for c in fake.calls("chat") + fake.calls("stream")]
    assert len(bodies) == 3 and all("temperature" not in b for b in bodies)


def test_an_empty_openai_stream_asked_again_keeps_the_temperature(fake, make):
    fake.queue("stream", OpenAIReply(chunks=[]))  # no chunk at all
    fake.queue("chat", OpenAIReply(body=completion("Asked again.")))
    text = "".join(make().stream_section(request(temperature=0.2), OUTLINE, 0, ""))
    assert text == "Asked again."
    (stream,) = fake.calls("stream")
    (again,) = fake.calls("chat")
    assert stream.body["temperature"] == again.body["temperature"] == 0.2
