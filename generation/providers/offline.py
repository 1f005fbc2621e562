"""A deterministic provider that needs no network, for demos and tests.

Same request in, same outline, prose, summary and embedding out: everything is seeded
from a hash of the request (and of the section index), never from the chapter so far,
so a resumed chapter reads exactly like an uninterrupted one. The chapter title and the
summary say that the text is offline placeholder output.

Its chapter memory (the one answer in JSON it writes) is extracted from the chapter by
rule: the story's characters the chapter names, each with the last sentence naming
them, and the outline's bullets that name an object as facts. The names are the
story's own (its preferences', its bible's, or the same two stand-ins), so `storyworker
demo` keeps its characters from chapter to chapter without a key.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

from generation.errors import GenerationError, MalformedOutputError
from generation.providers.calls import Operation, RequestRunner, RetryPolicy, Usage
from generation.settings import integer, setting
from generation.story import prompts, schemas
from generation.story.memory import names, sentences
from generation.types import ChapterRequest, Outline, ProviderHooks, Source

OFFLINE_TITLE_PREFIX = "[Offline draft] "
OFFLINE_SUMMARY_PREFIX = "[Offline summary] "
DEFAULT_DIMENSIONS = 768
#: The "model" named in the offline provider's call records.
OFFLINE_MODEL = "offline"
OFFLINE_EMBEDDING_MODEL = "offline-embedding"
# A rough words-to-tokens ratio for English, so metrics look like a real provider's.
TOKENS_PER_WORD = 1.3

_DEFAULT_HOOKS = ProviderHooks()
_STAND_IN_NAMES = ("Mara", "Ilya", "Wren", "Tomas", "Odile", "Kasimir")
_PLACES = ("the old harbour", "a narrow stairwell", "the empty market", "the lighthouse")
_OBJECTS = ("a sealed letter", "a brass key", "a torn map", "an unfinished portrait")
_ACTIONS = (
    "{a} finds {obj} in {place} and keeps it secret",
    "{a} and {b} argue in {place} about what {obj} means",
    "{b} follows {a} to {place}, where an old promise resurfaces",
    "{a} confronts {b} with {obj}, and a truth comes out",
    "A storm traps {a} in {place}, alone with doubts about {b}",
    "{b} offers {a} a choice that cannot be undone",
)
_LEAD_INS = ("This is how it went: ", "Then it happened. ", "What came next was simple: ")
_SENTENCES = (
    "{a} paused at the edge of {place}, listening to the quiet settle.",
    "Somewhere behind {a}, {b} said nothing, which was its own kind of answer.",
    "The air in {place} carried the smell of rain and old stone.",
    "{a} turned {obj} over and over, as if it might explain itself.",
    "It was the kind of {tone} moment that {b} would later pretend not to remember.",
    "{b} laughed once, softly, and the sound did not last.",
    "Nothing in {setting} had prepared {a} for this.",
    "A door closed somewhere, and {a} felt the evening lean closer.",
    "{b} looked away first, toward {place}, and the silence grew heavier.",
    "For a while neither of them moved, and the light changed around them.",
    "{a} remembered a promise made years ago, and how easily it had been made.",
    "The thought of {theme} stayed with {a} like a stone in a shoe.",
)


@dataclass(frozen=True)
class OfflineConfig:
    """The offline provider's settings."""

    #: Simulated latency per call and per streamed chunk.
    latency_ms: int = setting(
        "OFFLINE_LATENCY_MS",
        integer(minimum=0),
        doc="simulated latency per call and per streamed chunk",
        default=0,
    )
    dimensions: int = DEFAULT_DIMENSIONS

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.dimensions < 1:
            raise ValueError("OfflineConfig needs latency_ms >= 0 and dimensions >= 1")


class OfflineProvider:
    """A `Provider` that writes readable placeholder chapters without any network.

    Its "requests" go through the same RequestRunner as a real provider's, so the hooks
    see the same sequence: `before_request`, then one CallRecord per operation.
    """

    name = "offline"
    #: Who serves its outlines, sections and summaries.
    served_by = Source("offline", OFFLINE_MODEL)

    def __init__(
        self,
        latency_ms: int = 0,
        hooks: ProviderHooks = _DEFAULT_HOOKS,
        chunk_words: int = 12,
        *,
        dimensions: int = DEFAULT_DIMENSIONS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if latency_ms < 0 or chunk_words < 1 or dimensions < 1:
            raise ValueError("latency_ms must be >= 0, chunk_words and dimensions >= 1")
        self._latency = latency_ms / 1000
        # Nothing here fails the way a provider does: one attempt, nothing to classify.
        self._runner = RequestRunner(self.name, RetryPolicy(max_attempts=1), _no_failures, hooks)
        self._chunk_words = chunk_words
        self._dimensions = dimensions
        self._sleep = sleep

    @classmethod
    def from_config(cls, config: OfflineConfig, hooks: ProviderHooks = _DEFAULT_HOOKS) -> Self:
        """A provider with `config`'s settings, reporting to `hooks`."""
        return cls(config.latency_ms, hooks, dimensions=config.dimensions)

    @property
    def embedding_model(self) -> str:
        return OFFLINE_EMBEDDING_MODEL

    def check(self) -> None:
        """Nothing to check: there is no key and no network."""

    def outline(self, request: ChapterRequest) -> Outline:
        """A title marked as offline and exactly `bullet_count` bullets."""
        with self._begin("outline") as op:
            rng = random.Random(_seed(request, "outline"))
            cast = _cast(request)
            templates = _shuffled_cycle(_ACTIONS, rng)
            count = request.preferences.bullet_count
            bullets = tuple(_fill(next(templates), cast, rng) + "." for _ in range(count))
            title = f"{OFFLINE_TITLE_PREFIX}The {rng.choice(_OBJECTS).split(' ', 1)[1].title()}"
            op.add_usage(_usage(prompts.outline_prompt(request), " ".join((title, *bullets))))
            return Outline(title=title, bullets=bullets)

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        """Yield about `words_per_bullet` words of prose, `chunk_words` words at a time."""
        prompt = prompts.section_prompt(request, outline, index, previous_text)
        text = _section_text(request, outline, index)
        return self._stream(prompt, text)

    def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
        """A short summary built from the outline, marked as offline."""
        with self._begin("summary") as op:
            summary = _summary(request.chapter_number, outline.bullets, text)
            op.add_usage(_usage(prompts.summary_prompt(request, outline, text), summary))
            return summary

    def structured(self, request: ChapterRequest, ask: schemas.JsonAsk) -> dict[str, Any]:
        """The chapter memory, extracted by rule (see the module docstring); any other
        answer in JSON is MalformedOutputError: the offline provider writes no other."""
        with self._begin(ask.kind) as op:
            if ask.name != schemas.MEMORY:
                raise MalformedOutputError(f"the offline provider cannot write {ask.what}")
            answer = _memory(request, prompts.data_of(ask.prompt.user))
            op.add_usage(_usage(ask.prompt, json.dumps(answer)))
            return answer

    def embed(self, text: str) -> list[float]:
        """A unit-norm bag-of-words hash vector: texts sharing words point the same way."""
        return self.embed_many([text])[0]

    def embed_many(self, texts: Sequence[str]) -> list[list[float]]:
        """`embed` of each of `texts`, in one operation."""
        with self._begin("embedding", OFFLINE_EMBEDDING_MODEL) as op:
            op.add_usage(Usage(input_tokens=sum(_tokens(text) for text in texts)))
            return [bag_of_words(text, self._dimensions) for text in texts]

    def _begin(self, kind: str, model: str = OFFLINE_MODEL) -> Operation:
        """An operation whose one "request" (the simulated latency) has been made."""
        op = self._runner.operation(kind, model)
        self._runner.send(op, self._pause)
        return op

    def _pause(self) -> None:
        if self._latency:
            self._sleep(self._latency)

    def _stream(self, prompt: prompts.Prompt, text: str) -> Iterator[str]:
        with self._begin("prose") as op:
            sent: list[str] = []
            try:
                for chunk in _chunks(text, self._chunk_words):
                    self._pause()
                    sent.append(chunk)
                    yield chunk
            finally:
                # Also when the consumer stops early: the call happened and cost tokens.
                op.add_usage(_usage(prompt, "".join(sent)))


def _no_failures(exc: Exception, attempts: int, model: str) -> GenerationError | None:
    return None


def bag_of_words(text: str, dimensions: int) -> list[float]:
    """A unit-norm bag-of-words hash vector of `dimensions` values: each word adds one
    to (or takes one from) a bucket chosen by its hash, so texts sharing words point the
    same way. Deterministic and local: the offline provider's embedding, and the
    benchmark's."""
    vector = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "big") % dimensions
        vector[bucket] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        # No words (or they cancelled out): any fixed unit vector will do.
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


def _summary(chapter: int, bullets: Sequence[str], text: str) -> str:
    events = " Then ".join(b.rstrip(".") + "." for b in bullets[:3])
    return f"{OFFLINE_SUMMARY_PREFIX}Chapter {chapter}, {len(text.split())} words. {events}"


def _memory(request: ChapterRequest, data: dict[str, Any]) -> dict[str, Any]:
    """The chapter memory by rule, from the story data of the memory prompt."""
    text, bullets = data["chapter_text"], data["outline"]["bullets"]
    known = {c["name"]: c.get("about", "") for c in data.get("known_characters", [])}
    candidates = [c.name for c in request.preferences.characters]
    candidates += [*known, *data.get("other_known_names", []), *_STAND_IN_NAMES]
    said = sentences(text)
    characters = []
    for name in dict.fromkeys(candidates):
        naming = [s for s in said if names(s, name)]
        if naming:
            about = known.get(name) or "one of the story's leads (offline extraction)"
            characters.append({"name": name, "about": about, "state": naming[-1][:200]})
    objects = [o.split(" ", 1)[1] for o in _OBJECTS]
    facts = [b for b in bullets if any(o in b for o in objects)][:2]
    gist = {"chapter": request.chapter_number, "gist": bullets[0] if bullets else text[:200]}
    return {
        "summary": _summary(request.chapter_number, bullets, text),
        "arc": [*data.get("previous_arc", []), gist],
        "characters": characters[:12],
        "facts": facts,
    }


def _usage(prompt: prompts.Prompt, output: str) -> Usage:
    return Usage(_tokens(prompt.system) + _tokens(prompt.user), _tokens(output))


def _seed(request: ChapterRequest, purpose: str) -> int:
    """A stable seed (unlike hash(), identical in every process) for one request."""
    material = json.dumps(
        [
            purpose,
            request.chapter_number,
            request.sequence_title,
            request.premise,
            [(s.chapter, s.text) for s in request.story.summaries],
            request.preferences.to_json(),
        ],
        sort_keys=True,
    )
    return int.from_bytes(hashlib.sha256(material.encode("utf-8", "replace")).digest()[:8], "big")


def _cast(request: ChapterRequest) -> dict[str, str]:
    """The chapter's two leads and its colour, the same in every section; the leads
    are the story's (its preferences' characters and its bible's, else stand-ins chosen
    by the story alone, which its bible then keeps), so they stay the same from chapter
    to chapter."""
    prefs = request.preferences
    names = [c.name for c in prefs.characters]
    names += [c.name for c in request.story.characters if c.name not in names]
    story = json.dumps([request.sequence_title, request.premise])
    rng = random.Random(hashlib.sha256(story.encode("utf-8", "replace")).digest())
    names = names or list(_STAND_IN_NAMES)
    first = names[0] if len(names) <= 2 else rng.choice(names)
    others = [n for n in names if n != first] or [n for n in _STAND_IN_NAMES if n != first]
    return {
        "a": first,
        "b": rng.choice(others),
        "setting": prefs.setting or "the town",
        "tone": prefs.tone,
        "theme": random.Random(_seed(request, "theme")).choice(prefs.themes)
        if prefs.themes
        else "what had been lost",
    }


def _fill(template: str, cast: dict[str, str], rng: random.Random) -> str:
    text = template.format(place=rng.choice(_PLACES), obj=rng.choice(_OBJECTS), **cast)
    return text[0].upper() + text[1:]


def _section_text(request: ChapterRequest, outline: Outline, index: int) -> str:
    """About `words_per_bullet` words in paragraphs of four to six sentences."""
    rng = random.Random(_seed(request, f"section:{index}"))
    cast = _cast(request)
    focus = outline.bullets[index].rstrip(". ") if index < len(outline.bullets) else ""
    sentences = [f"{rng.choice(_LEAD_INS)}{focus}."] if focus else []
    words = sum(len(s.split()) for s in sentences)
    templates = _shuffled_cycle(_SENTENCES, rng)
    while words < request.preferences.words_per_bullet:
        sentence = _fill(next(templates), cast, rng)
        sentences.append(sentence)
        words += len(sentence.split())
    paragraphs: list[list[str]] = []
    while sentences:
        size = rng.randint(4, 6)
        # A tail of one or two sentences stays with the paragraph before it.
        if len(sentences) - size < 3:
            size = len(sentences)
        paragraphs.append(sentences[:size])
        sentences = sentences[size:]
    return "\n\n".join(" ".join(p) for p in paragraphs)


def _shuffled_cycle(items: tuple[str, ...], rng: random.Random) -> Iterator[str]:
    """`items` in random order, over and over, so repeats are as far apart as possible."""
    while True:
        yield from rng.sample(items, len(items))


def _chunks(text: str, words_per_chunk: int) -> Iterator[str]:
    """`text` in pieces of `words_per_chunk` words, each with its trailing whitespace."""
    tokens = re.findall(r"\S+\s*", text)
    for start in range(0, len(tokens), words_per_chunk):
        yield "".join(tokens[start : start + words_per_chunk])


def _tokens(text: str) -> int:
    return math.ceil(len(text.split()) * TOKENS_PER_WORD)
