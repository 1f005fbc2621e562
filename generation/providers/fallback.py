"""A composite provider: GENERATION_PROVIDER first, then each of GENERATION_FALLBACK.

It is a `Provider` like any other, so the writer, the sink and the worker do not know
it is there. Its decisions, for every call (outline, section, summary, answer in JSON,
embedding):

- Members are asked in their configured order. A member falls through to the next one
  for this call only when it refuses the content (RefusedError) or is at a fault that
  is the provider's (`provider_wide`: a rejected key, a withdrawn model, a spent quota).
  Any other failure (a rate limit after its own retries, a 5xx, a bad request) is the
  job's, as without a fallback: it propagates at once.
- A refusal changes nothing for later calls: the rest of the chapter stays on the
  primary. A provider-wide fault "trips" the member inside this composite for a while
  (PROVIDER_PROBE_SECONDS, doubling up to five minutes, like the pool's breaker): tripped
  members are asked only after every untripped one, so a faulted primary is not asked
  on every call, yet is tried again once its time is up. Its first success untrips it.
- Only when every member failed does the call fail: RefusedError when any of them
  refused (the job fails, saying who refused), else the primary's provider-wide error,
  so the pool pauses through its breaker exactly as without a fallback.
- A section refused after some text was streamed is void (SectionRestart): the writer
  takes that text back from the chapter and asks again, and this time the member that
  refused is asked last. So the next member writes the whole section from the last
  checkpoint, and the section is written once.
- `check()` passes when any member passes: a faulted primary does not stop start-up or
  keep the pool paused while a fallback can write. The members that fail are tripped.

Trips live in this object, one per worker process: each worker finds out on its own,
at the cost of one failed request per trip period.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from generation import streams
from generation.errors import GenerationError, MalformedOutputError, RefusedError, SectionRestart
from generation.types import ChapterRequest, JsonAsk, Outline, Provider, Source, served_by

T = TypeVar("T")

log = logging.getLogger(__name__)

PROBE_BASE_SECONDS = 15.0
PROBE_MAX_SECONDS = 300.0


def _fields(**values: object) -> dict[str, object]:
    # The key the service's log formatters read an event's key/value pairs from.
    return {"sw_fields": values}


@dataclass
class Trip:
    """A member's provider-wide fault: not asked first before `until` (monotonic)."""

    until: float = 0.0
    #: Faults in a row; each doubles the time the member stays tripped.
    count: int = 0
    reason: str = ""


def falls_through(error: GenerationError) -> bool:
    """Whether `error` sends the call on to the next member."""
    return isinstance(error, RefusedError) or error.provider_wide


class FallbackProvider:
    """Members in order, the first the primary; see the module docstring."""

    def __init__(
        self,
        members: Sequence[Provider],
        *,
        probe_base_seconds: float = PROBE_BASE_SECONDS,
        probe_max_seconds: float = PROBE_MAX_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(members) < 2:
            raise ValueError("a FallbackProvider needs a primary and at least one fallback")
        self.members = tuple(members)
        self.name = "+".join(member.name for member in self.members)
        self.trips = [Trip() for _ in self.members]
        self._base, self._max = probe_base_seconds, max(probe_max_seconds, probe_base_seconds)
        self._clock = clock
        #: Who served the last outline, section or summary.
        self.served_by: Source | None = served_by(self.members[0])
        self._embedding_model = self.members[0].embedding_model
        #: The member that refused a section part-way: asked last for the next one.
        self._refused_partway: int | None = None

    @property
    def embedding_model(self) -> str:
        return self._embedding_model

    # --- Provider -----------------------------------------------------------------

    def outline(self, request: ChapterRequest) -> Outline:
        """The first outline a member writes (see the module docstring)."""
        return self._text(lambda member: member.outline(request))

    def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
        """The first summary a member writes."""
        return self._text(lambda member: member.summarize(request, outline, text))

    def structured(self, request: ChapterRequest, ask: JsonAsk) -> dict[str, Any]:
        """The first answer in JSON a member writes (a member that writes none is
        MalformedOutputError: the caller's to handle, as a bad answer)."""

        def answer(member: Provider) -> dict[str, Any]:
            structured = getattr(member, "structured", None)
            if structured is None:
                raise MalformedOutputError(f"{member.name} writes no answers in JSON")
            return structured(request, ask)

        return self._text(answer)

    def embed(self, text: str) -> list[float]:
        """The first member's embedding that does not fail through; `embedding_model`
        then names its model ("" when that member stores no embedding)."""
        vector, model = self._call(lambda member: (member.embed(text), member.embedding_model))
        self._embedding_model = model if vector else ""
        return vector

    def embed_many(self, texts: Sequence[str]) -> list[list[float]]:
        """The first member's embeddings that do not fail through, as `embed`."""

        def embedded(member: Provider) -> tuple[list[list[float]], str]:
            many = getattr(member, "embed_many", None)
            vectors = many(texts) if many else [member.embed(t) for t in texts]
            return ([] if not all(vectors) else vectors), member.embedding_model

        vectors, model = self._call(embedded)
        self._embedding_model = model if vectors else ""
        return vectors

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        """The section's prose as a member streams it; a member that refuses part-way
        voids the section (SectionRestart) and is asked last for the section again."""
        return self._stream(request, outline, index, previous_text)

    def check(self) -> None:
        """Pass when any member passes its check; the failing ones are tripped. When all
        fail: a failure that may pass (unreachable) if there is one, else the
        primary's."""
        failures: list[GenerationError] = []
        for position, member in enumerate(self.members):
            try:
                member.check()
            except GenerationError as exc:
                failures.append(exc)
                if exc.provider_wide:
                    self._failed(position, exc)
                else:
                    log.warning(
                        "the provider failed its check",
                        extra=_fields(provider=member.name, error=str(exc)),
                    )
        if len(failures) < len(self.members):
            return
        passing = [e for e in failures if e.retryable or not e.provider_wide]
        raise (passing or failures)[0]

    # --- the decisions ----------------------------------------------------------------

    def order(self) -> list[int]:
        """Member positions in the order to ask them now: untripped ones first, tripped
        ones (as a last resort) after them, each group in configured order."""
        now = self._clock()
        ready = [i for i, trip in enumerate(self.trips) if trip.until <= now]
        return ready + [i for i in range(len(self.members)) if i not in ready]

    def _text(self, call: Callable[[Provider], T]) -> T:
        def recorded(member: Provider) -> T:
            result = call(member)
            self.served_by = served_by(member) or Source(member.name, "")
            return result

        return self._call(recorded)

    def _call(self, call: Callable[[Provider], T]) -> T:
        failures: list[tuple[int, GenerationError]] = []
        for position in self.order():
            try:
                result = call(self.members[position])
            except GenerationError as exc:
                if not falls_through(exc):
                    raise
                failures.append((position, exc))
                self._failed(position, exc)
                continue
            self._succeeded(position)
            return result
        raise self._give_up(failures)

    def _stream(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        failures = list[tuple[int, GenerationError]]()
        order, self._refused_partway = self._section_order(), None
        for position in order:
            member, sent = self.members[position], False
            stream: Iterator[str] = iter(())
            try:
                stream = member.stream_section(request, outline, index, previous_text)
                for chunk in stream:
                    sent = sent or bool(chunk.strip())
                    yield chunk
            except GenerationError as exc:
                if not falls_through(exc):
                    raise
                self._failed(position, exc)
                if sent and len(order) > 1:
                    self._refused_partway = position
                    raise SectionRestart(
                        f"{member.name} gave up on section {index + 1} part-way ({exc}); "
                        "it is written again by the next provider"
                    ) from exc
                failures.append((position, exc))
                continue
            finally:
                streams.close(stream)
            self._succeeded(position)
            self.served_by = served_by(member) or Source(member.name, "")
            return
        raise self._give_up(failures)

    def _section_order(self) -> list[int]:
        """`order()`, with the member that refused the last section part-way last."""
        order, last = self.order(), self._refused_partway
        return order if last is None else [i for i in order if i != last] + [last]

    def _failed(self, position: int, error: GenerationError) -> None:
        member = self.members[position].name
        later = [self.members[i].name for i in self.order() if i != position]
        if not error.provider_wide:
            log.info(
                "the provider refused; asking the next one",
                extra=_fields(provider=member, next=",".join(later), error=str(error)),
            )
            return
        trip = self.trips[position]
        was_tripped = trip.count > 0
        wait = min(self._base * 2**trip.count, self._max)
        trip.until, trip.count, trip.reason = self._clock() + wait, trip.count + 1, str(error)
        if not was_tripped:
            log.warning(
                "the provider is at fault; its calls go to the next provider",
                extra=_fields(
                    provider=member, next=",".join(later), retry_in_s=round(wait), error=str(error)
                ),
            )

    def _succeeded(self, position: int) -> None:
        trip = self.trips[position]
        if trip.count:
            log.warning(
                "the provider serves again",
                extra=_fields(provider=self.members[position].name, faults=trip.count),
            )
            self.trips[position] = Trip()

    def _give_up(self, failures: list[tuple[int, GenerationError]]) -> GenerationError:
        """The error for a call no member could serve: who refused, when any did (the
        job fails); else the primary's fault, naming every member's (the pool pauses)."""
        errors = [error for _, error in sorted(failures, key=lambda failure: failure[0])]
        message = "; ".join(str(error) for error in errors)
        if any(isinstance(error, RefusedError) for error in errors):
            return RefusedError(message)
        return _same_kind(errors[0], message)


def _same_kind(error: GenerationError, message: str) -> GenerationError:
    """A copy of `error` (same class, so the same handling) saying `message`."""
    try:
        combined = type(error)(message)
    except TypeError:  # a class with a constructor of its own: keep the original
        return error
    # What the error carries besides its message (retry_after, ...) goes along.
    combined.__dict__.update(vars(error))
    return combined
