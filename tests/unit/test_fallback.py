"""The FallbackProvider's decisions (generation/providers/fallback.py), with scripted members; and
a whole job through it on the in-memory queue: who wrote each section, usage by
provider."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from generation.errors import (
    AuthenticationError,
    GenerationError,
    MalformedOutputError,
    ModelUnavailableError,
    ProviderUnavailableError,
    QuotaExhaustedError,
    RateLimitedError,
    RefusedError,
    SectionRestart,
)
from generation.providers.fallback import FallbackProvider
from generation.providers.offline import OfflineProvider
from generation.story.preferences import parse_preferences
from generation.types import ChapterRequest, JsonAsk, Outline, Prompt, ProviderHooks, Source
from supervisor.worker.runner import JobRunner, Settled
from supervisor.worker.usage import JobUsage
from tests.fakes import MemoryQueue

REQUEST = ChapterRequest(chapter_number=1, preferences=parse_preferences({"bullet_count": 2}))
OUTLINE = Outline("T", ("a", "b"))


class Member:
    """A provider whose next calls fail as scripted (`fail(op, error, ...)`); a section
    streams `chunks`, or fails after `mid` chunks with the scripted error."""

    def __init__(self, name: str, chunks: tuple[str, ...] = ("one ", "two")) -> None:
        self.name = name
        self.served_by = Source(name, f"{name}-model")
        self.embedding_model = f"{name}-embedding"
        self.chunks = chunks
        self.script: dict[str, list[tuple[GenerationError, int]]] = {}
        self.calls: list[str] = []
        self.contexts: list[str] = []
        self.closed = 0

    def fail(self, op: str, error: GenerationError, times: int = 1, mid: int = 0) -> None:
        self.script.setdefault(op, []).extend([(error, mid)] * times)

    def _next(self, op: str) -> tuple[GenerationError, int] | None:
        self.calls.append(op)
        queue = self.script.get(op)
        return queue.pop(0) if queue else None

    def _raise(self, op: str) -> None:
        if (scripted := self._next(op)) is not None:
            raise scripted[0]

    def outline(self, request: ChapterRequest) -> Outline:
        self._raise("outline")
        return Outline(self.name, ("a", "b"))

    def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
        self._raise("summary")
        return f"{self.name} summary"

    def embed(self, text: str) -> list[float]:
        self._raise("embed")
        return [1.0]

    def embed_many(self, texts: Sequence[str]) -> list[list[float]]:
        self._raise("embed_many")
        return [[1.0] for _ in texts]

    def structured(self, request: ChapterRequest, ask: JsonAsk) -> dict[str, Any]:
        self._raise("structured")
        return {"by": self.name}

    def check(self) -> None:
        self._raise("check")

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        scripted = self._next("section")
        self.contexts.append(previous_text)
        return self._stream(scripted)

    def _stream(self, scripted: tuple[GenerationError, int] | None) -> Iterator[str]:
        try:
            for position, chunk in enumerate(self.chunks):
                if scripted is not None and position == scripted[1]:
                    raise scripted[0]
                yield f"{self.name}:{chunk}"
        finally:
            self.closed += 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def composite(*members: Member, clock: Clock | None = None) -> FallbackProvider:
    return FallbackProvider(
        members, probe_base_seconds=15, probe_max_seconds=300, clock=clock or Clock()
    )


def section(provider: FallbackProvider, previous: str = "") -> str:
    return "".join(provider.stream_section(REQUEST, OUTLINE, 0, previous))


REFUSED = RefusedError("primary refused to write this content")
KEY = AuthenticationError("primary rejected the API key")


def test_without_trouble_only_the_primary_is_asked():
    primary, backup = Member("primary"), Member("backup")
    provider = composite(primary, backup)
    assert provider.outline(REQUEST).title == "primary"
    assert section(provider) == "primary:one primary:two"
    assert provider.served_by == Source("primary", "primary-model")
    assert backup.calls == [] and provider.name == "primary+backup"


def test_a_refusal_goes_to_the_next_provider_for_that_call_only():
    primary, backup = Member("primary"), Member("backup")
    primary.fail("section", REFUSED)
    provider = composite(primary, backup)
    assert section(provider) == "backup:one backup:two"
    assert provider.served_by == Source("backup", "backup-model")
    assert section(provider) == "primary:one primary:two"  # the next one: primary again
    assert provider.served_by == Source("primary", "primary-model")
    assert backup.calls == ["section"] and provider.trips[0].count == 0


def test_a_section_refused_part_way_is_written_again_whole_by_the_next_provider():
    primary, backup = Member("primary"), Member("backup")
    primary.fail("section", REFUSED, mid=1)
    provider = composite(primary, backup)
    stream = provider.stream_section(REQUEST, OUTLINE, 1, "Earlier text.")
    pieces = []
    with pytest.raises(SectionRestart, match="primary gave up on section 2 part-way"):
        pieces.extend(stream)
    assert pieces == ["primary:one "]  # void: the writer takes it back
    # Asked again, the section is the backup's, whole, from the last checkpoint.
    again = list(provider.stream_section(REQUEST, OUTLINE, 1, "Earlier text."))
    assert again == ["backup:one ", "backup:two"]
    assert backup.contexts == ["Earlier text."]
    assert primary.closed == 1 and backup.closed == 1
    # The section after it goes to the primary again.
    assert section(provider) == "primary:one primary:two"


@pytest.mark.parametrize(
    "fault",
    [KEY, ModelUnavailableError("primary has no model x"), QuotaExhaustedError("daily quota")],
)
def test_a_provider_wide_fault_trips_the_primary_until_its_time_is_up(fault):
    clock = Clock()
    primary, backup = Member("primary"), Member("backup")
    primary.fail("summary", fault)
    provider = composite(primary, backup, clock=clock)
    assert provider.summarize(REQUEST, OUTLINE, "x") == "backup summary"
    assert provider.trips[0].count == 1 and provider.trips[0].until == 115
    assert provider.order() == [1, 0]
    provider.summarize(REQUEST, OUTLINE, "x")  # within the trip: the primary is not asked
    assert primary.calls == ["summary"] and backup.calls == ["summary", "summary"]
    clock.now = 116
    assert provider.summarize(REQUEST, OUTLINE, "x") == "primary summary"  # asked again
    assert provider.trips[0].count == 0 and provider.order() == [0, 1]


def test_the_trip_doubles_while_the_fault_lasts():
    clock = Clock()
    primary, backup = Member("primary"), Member("backup")
    primary.fail("outline", KEY, times=3)
    provider = composite(primary, backup, clock=clock)
    waits = []
    for _ in range(3):
        provider.outline(REQUEST)
        waits.append(provider.trips[0].until - clock.now)
        clock.now = provider.trips[0].until
    assert waits == [15, 30, 60]


def test_every_provider_refusing_fails_the_job_naming_each():
    primary, backup = Member("primary"), Member("backup")
    primary.fail("section", REFUSED)
    backup.fail("section", RefusedError("backup refused too"))
    with pytest.raises(RefusedError, match=r"primary refused.*; backup refused too"):
        section(composite(primary, backup))


def test_a_refusal_and_a_faulted_fallback_is_still_a_refusal_not_a_pause():
    primary, backup = Member("primary"), Member("backup")
    primary.fail("section", REFUSED)
    backup.fail("section", AuthenticationError("backup rejected the key"))
    with pytest.raises(RefusedError) as caught:
        section(composite(primary, backup))
    assert not caught.value.provider_wide


def test_every_provider_at_fault_is_the_primarys_fault_so_the_pool_pauses():
    clock = Clock()
    primary, backup = Member("primary"), Member("backup")
    primary.fail("outline", KEY, times=2)
    backup.fail("outline", ModelUnavailableError("backup has no model"), times=2)
    provider = composite(primary, backup, clock=clock)
    provider_outline = provider.outline
    with pytest.raises(
        AuthenticationError, match=r"primary rejected.*; backup has no model"
    ) as caught:
        provider_outline(REQUEST)
    assert caught.value.provider_wide
    # Both tripped: both are still asked (a last resort), the primary's fault first.
    with pytest.raises(AuthenticationError):
        provider_outline(REQUEST)
    assert primary.calls == ["outline", "outline"] and backup.calls == ["outline", "outline"]


@pytest.mark.parametrize(
    "error",
    [RateLimitedError("slow down", retry_after=3), ProviderUnavailableError("HTTP 503")],
)
def test_the_jobs_own_failures_are_not_fallen_back_on(error):
    primary, backup = Member("primary"), Member("backup")
    primary.fail("section", error)
    with pytest.raises(type(error)):
        section(composite(primary, backup))
    assert backup.calls == []


def test_check_passes_when_any_provider_passes_and_trips_the_others():
    primary, backup = Member("primary"), Member("backup")
    primary.fail("check", KEY)
    provider = composite(primary, backup)
    provider.check()
    assert provider.order() == [1, 0]


def test_check_fails_when_every_provider_fails_preferring_a_passing_fault():
    primary, backup = Member("primary"), Member("backup")
    primary.fail("check", KEY, times=2)
    backup.fail("check", ProviderUnavailableError("backup unreachable"))
    provider = composite(primary, backup)
    with pytest.raises(ProviderUnavailableError):
        provider.check()  # a boot goes on: the unreachable one may come back
    backup.fail("check", ModelUnavailableError("backup has no model"))
    with pytest.raises(AuthenticationError):
        provider.check()  # every one fatal: the primary's


def test_the_embedding_model_is_the_one_that_embedded():
    primary, backup = Member("primary"), Member("backup")
    primary.fail("embed", QuotaExhaustedError("quota"))
    provider = composite(primary, backup)
    assert provider.embedding_model == "primary-embedding"
    assert provider.embed("x") == [1.0] and provider.embedding_model == "backup-embedding"


def test_it_needs_a_fallback():
    with pytest.raises(ValueError, match="at least one fallback"):
        FallbackProvider([Member("only")])


# --- a whole job through it, on the in-memory queue ---------------------------------------


class Refusing(OfflineProvider):
    """The offline provider, refusing section `at` before any text."""

    def __init__(self, at: int, hooks: ProviderHooks) -> None:
        super().__init__(hooks=hooks)
        self.at = at

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        if index == self.at:
            raise RefusedError("offline refused to write this content")
        return super().stream_section(request, outline, index, previous_text)


class Backup(OfflineProvider):
    name = "backup"
    served_by = Source("backup", "offline")


def test_a_job_completes_with_the_refused_section_written_by_the_fallback():
    queue = MemoryQueue()
    job = queue.add({"bullet_count": 4, "words_per_bullet": 60})
    usage = JobUsage()
    hooks = ProviderHooks(on_call=usage.add)
    provider = FallbackProvider([Refusing(2, hooks), Backup(hooks=hooks)])
    runner = JobRunner(
        queue=queue, provider=provider, owner="host/1", max_retries=3, backoff_seconds=1
    )
    assert runner.run(queue.claim("host/1")) is Settled.COMPLETED
    writers = [entry["provider"] for entry in job.checkpoint["sections"]]
    assert writers == ["offline", "offline", "backup", "offline"]
    spent = {(entry["provider"], entry["calls"]) for entry in usage.to_json()}
    assert ("backup", 1) in spent
    assert job.content.count("\n\n") >= 3


class FailsOnce(Refusing):
    """Refuses section `at`; the first time section `broken` is written, the stream
    breaks after some text (retryable: the job resumes from its checkpoint)."""

    def __init__(self, at: int, broken: int, hooks: ProviderHooks) -> None:
        super().__init__(at, hooks)
        self.broken, self.broke = broken, False

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        chunks = super().stream_section(request, outline, index, previous_text)
        if index != self.broken or self.broke:
            return chunks
        self.broke = True
        return self._break(chunks)

    def _break(self, chunks: Iterator[str]) -> Iterator[str]:
        yield next(iter(chunks))
        raise ProviderUnavailableError("the stream broke off mid-way")


def test_a_resumed_job_keeps_the_record_of_who_wrote_the_earlier_sections():
    queue = MemoryQueue()
    job = queue.add({"bullet_count": 4, "words_per_bullet": 60})
    hooks = ProviderHooks()
    provider = FallbackProvider([FailsOnce(1, 2, hooks), Backup(hooks=hooks)])
    runner = JobRunner(
        queue=queue, provider=provider, owner="host/1", max_retries=3, backoff_seconds=0
    )
    assert runner.run(queue.claim("host/1")) is Settled.RETRIED
    assert [s["provider"] for s in job.checkpoint["sections"]] == ["offline", "backup"]
    job.run_after = None
    assert runner.run(queue.claim("host/1")) is Settled.COMPLETED
    writers = [s["provider"] for s in job.checkpoint["sections"]]
    assert writers == ["offline", "backup", "offline", "offline"]


def test_the_combined_fault_keeps_what_the_primarys_carried():
    primary, backup = Member("primary"), Member("backup")
    primary.fail("summary", QuotaExhaustedError("daily quota", retry_after=3600))
    backup.fail("summary", QuotaExhaustedError("backup quota"))
    with pytest.raises(QuotaExhaustedError) as caught:
        composite(primary, backup).summarize(REQUEST, OUTLINE, "x")
    assert caught.value.retry_after == 3600 and "backup quota" in str(caught.value)


ASK = JsonAsk(Prompt("s", "u"), "chapter_memory", {}, 100, kind="memory")


def test_an_answer_in_json_falls_through_a_refusal_and_names_who_wrote_it():
    primary, backup = Member("primary"), Member("backup")
    primary.fail("structured", REFUSED)
    provider = composite(primary, backup)
    assert provider.structured(REQUEST, ASK) == {"by": "backup"}
    assert provider.served_by == Source("backup", "backup-model")
    assert provider.structured(REQUEST, ASK) == {"by": "primary"}  # a refusal trips nothing


def test_a_member_that_writes_no_answers_in_json_is_a_malformed_answer_not_a_crash():
    class Plain(Member):
        structured = None  # type: ignore[assignment]

    with pytest.raises(MalformedOutputError, match="primary writes no answers in JSON"):
        composite(Plain("primary"), Member("backup")).structured(REQUEST, ASK)


def test_many_embeddings_name_the_model_of_the_member_that_made_them():
    primary, backup = Member("primary"), Member("backup")
    primary.fail("embed_many", KEY)
    provider = composite(primary, backup)
    assert provider.embed_many(["a", "b"]) == [[1.0], [1.0]]
    assert provider.embedding_model == "backup-embedding"
    assert backup.calls == ["embed_many"]
