"""Value objects and the provider interface shared by the whole package."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from generation.story.preferences import Preferences


@dataclass(frozen=True)
class Outline:
    """A chapter plan: a title and one bullet per section, in order."""

    title: str
    bullets: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "bullets": list(self.bullets)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Outline:
        return cls(title=str(data["title"]), bullets=tuple(str(b) for b in data["bullets"]))


@dataclass(frozen=True)
class Prompt:
    """A system instruction and one user message (generation/story/prompts.py makes
    every one)."""

    system: str
    user: str


@dataclass(frozen=True)
class JsonAsk:
    """A request for one JSON object of the shape `schema` (a JSON Schema of the subset
    generation/story/schemas.py describes), sent through `Provider.structured`."""

    prompt: Prompt
    #: Names the shape on the wire and the answer in messages ("chapter_memory").
    name: str
    schema: Mapping[str, Any]
    #: About how many words the answer holds: its output limit follows from it.
    words: int
    #: The kind of its CallRecord (metrics, usage, logs).
    kind: str = "structured"
    #: At most this many attempts (None: the provider's retry policy), for an answer
    #: whose failure the caller survives.
    attempts: int | None = None

    @property
    def what(self) -> str:
        """The answer's name for people ("the chapter memory")."""
        return "the " + self.name.replace("_", " ")


@dataclass(frozen=True)
class Checkpoint:
    """How far a chapter got: its outline (once written) and the finished sections."""

    outline: Outline | None = None
    sections_done: int = 0


#: CONTEXT_BUDGET_TOKENS' default: the story-so-far parts of one prompt, at most.
DEFAULT_BUDGET_TOKENS = 6000


@dataclass(frozen=True)
class ChapterSummary:
    """An earlier chapter's summary, by its chapter number."""

    chapter: int
    text: str


@dataclass(frozen=True)
class Passage:
    """A paragraph-sized piece of an earlier chapter, where it stands in that chapter."""

    chapter: int
    offset: int
    text: str


@dataclass(frozen=True)
class BibleEntry:
    """A character of the story: who they are and how the story last left them."""

    name: str
    about: str = ""
    state: str = ""
    #: The chapter that last showed them (0: none yet).
    seen: int = 0

    def to_json(self) -> dict[str, str]:
        entry = {"name": self.name, "about": self.about}
        if self.state:
            entry["last_known_state"] = self.state
        return entry


@dataclass(frozen=True)
class StoryContext:
    """What the worker read of the story for one chapter (empty for a first chapter)."""

    #: The app's own title for this chapter, which the outline must keep.
    chapter_title: str | None = None
    #: Chapters the story has, this one included.
    chapter_count: int = 0
    #: The rolling arc: a short gist of each earlier chapter, oldest first (those whose
    #: summaries are shown are left out of the prompt).
    arc: tuple[ChapterSummary, ...] = ()
    #: The latest earlier chapters' summaries, oldest first.
    summaries: tuple[ChapterSummary, ...] = ()
    #: Every earlier chapter that has a summary, by number (more than `summaries`).
    written: tuple[int, ...] = ()
    #: Earlier chapters that have no summary (never written, failed or cancelled).
    missing: tuple[int, ...] = ()
    #: The closing text of chapter N-1, when it has any.
    previous_ending: str = ""
    #: Passages retrieved for the step at hand (set by the writer per step).
    passages: tuple[Passage, ...] = ()
    characters: tuple[BibleEntry, ...] = ()
    facts: tuple[str, ...] = ()
    #: Set when an earlier chapter was rewritten after this story's memory was made.
    stale_after: int | None = None
    budget_tokens: int = DEFAULT_BUDGET_TOKENS


@dataclass(frozen=True)
class ChapterRequest:
    """Everything the writer needs to know about the chapter to write."""

    chapter_number: int
    preferences: Preferences
    sequence_title: str = ""
    premise: str | None = None
    #: What is known of the story so far (generation/story/context.py assembles it).
    story: StoryContext = StoryContext()
    #: The section's text so far was cut at the model's output limit: continue it.
    continuing: bool = False
    #: Why the section is being written again, for the model ("" the first time).
    section_note: str = ""


@dataclass(frozen=True)
class CallRecord:
    """One finished provider operation, for logs, metrics and per-job usage.

    Token counts keep the meaning /metrics has always given them: `output_tokens` is
    everything billed as output, thinking included (storyworker_llm_tokens{direction=
    "output"}); `thinking_tokens` is the part of it the model spent thinking, so
    `output_tokens - thinking_tokens` is the visible answer. `provider` and `model` say
    who served the operation, so usage can be summed per provider and model.
    """

    kind: str  # "outline" | "prose" | "summary" | "memory" | "embedding" | "check"
    outcome: str  # "ok" | "retryable_error" | "permanent_error"
    elapsed_seconds: float
    input_tokens: int = 0
    output_tokens: int = 0
    #: Attempts beyond the first inside this operation (transport-level retries).
    retries: int = 0
    thinking_tokens: int = 0
    provider: str = ""
    model: str = ""
    #: The token counts are (partly) our estimate: the server reported none.
    estimated: bool = False


@dataclass(frozen=True)
class Source:
    """Who served an operation: a provider and its model (stored per section in the
    checkpoint)."""

    provider: str
    model: str

    def to_json(self) -> dict[str, str]:
        return {"provider": self.provider, "model": self.model}


def served_by(provider: object) -> Source | None:
    """Who served `provider`'s most recent outline, section or summary, when it says
    (its `served_by` attribute); None for a provider that does not."""
    source = getattr(provider, "served_by", None)
    return source if isinstance(source, Source) else None


def _no_op() -> None:
    return None


def _ignore(_record: CallRecord) -> None:
    return None


@dataclass(frozen=True)
class ProviderHooks:
    """What a provider calls around its requests.

    `before_request` runs before every HTTP attempt (retries included); the caller
    uses it for the shared rate limit and may block in it. `on_call` receives one
    record per finished operation.
    """

    before_request: Callable[[], None] = field(default=_no_op)
    on_call: Callable[[CallRecord], None] = field(default=_ignore)


class Provider(Protocol):
    """An LLM that can plan, write, summarise and embed."""

    name: str

    def outline(self, request: ChapterRequest) -> Outline:
        """A validated outline with exactly `request.preferences.bullet_count` bullets."""

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        """Yield the prose of section `index` (0-based) in chunks as they arrive."""

    def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
        """A short summary of a finished chapter, for continuity of later chapters."""

    def structured(self, request: ChapterRequest, ask: JsonAsk) -> dict[str, Any]:
        """One JSON object of the shape `ask` describes (its schema), for `request`'s
        job (its temperature and rating apply); MalformedOutputError when the answer is
        not one JSON object. The caller checks the object's contents."""

    def embed(self, text: str) -> list[float]:
        """An embedding vector of the provider's configured dimensionality; [] (and no
        request) when the provider has no embedding model: nothing is stored then."""

    def embed_many(self, texts: Sequence[str]) -> list[list[float]]:
        """Embeddings of `texts`, in order, as `embed` makes them, in as few requests
        as the API allows (one operation); [] when the provider has no embedding model."""

    @property
    def embedding_model(self) -> str:
        """Name of the embedding model of the last embedding, stored next to the vector;
        "" when the provider has none."""

    def check(self) -> None:
        """Cheaply verify credentials and model; raise a GenerationError if unusable."""
