"""One section, written until it is prose of the right size or the job must retry.

A section streams through a `ProseCleaner` (only prose reaches the chapter). Then:
- stopped at the output limit (OutputLimitError): the model is asked to continue from
  the exact point, and the text is joined without a break, up to MAX_CONTINUATIONS
  times; past that, the section is written again;
- far below its target (under MIN_SHARE of the words asked for) or opening with a
  paragraph the chapter already has: it is written again once, told why, then taken;
- a provider that gives up on it partway (SectionRestart: a fallback takes over after
  a refusal): written again from the last checkpoint, by whoever serves it now.
Each time a section is written again, `callbacks.on_section_restart` is told first, so
that what was streamed of it is taken back from the reader before anything new comes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from generation import streams
from generation.errors import MalformedOutputError, OutputLimitError, SectionRestart
from generation.story.callbacks import ChapterCallbacks, SectionStats
from generation.story.guards import ProseCleaner, count_words, repeats_opening
from generation.types import ChapterRequest, Outline, Provider, served_by

SECTION_SEPARATOR = "\n\n"
MAX_CONTINUATIONS = 3
#: Times one section may be written again (a short or repeated one once each).
MAX_RESTARTS = 3
#: A section with fewer words than this share of its target is written again once.
MIN_SHARE = 0.5
#: A section with more than this many times its target is taken, and said so.
MAX_SHARE = 2.0


def write_section(
    request: ChapterRequest,
    provider: Provider,
    outline: Outline,
    index: int,
    *,
    text_so_far: str,
    callbacks: ChapterCallbacks,
) -> str:
    """Write section `index` through `callbacks` and return the chapter text after it."""
    started, note, asked, restarts = time.monotonic(), "", set[str](), 0
    while True:
        try:
            cleaner, continuations = _stream(
                dataclasses.replace(request, section_note=note),
                provider,
                outline,
                index,
                text_so_far=text_so_far,
                callbacks=callbacks,
            )
        except SectionRestart as exc:
            restarts = _restart(callbacks, index, str(exc), restarts)
            note = ""
            continue
        problem = _problem(cleaner.text, text_so_far, request)
        if problem and problem.kind not in asked:
            asked.add(problem.kind)
            restarts = _restart(callbacks, index, problem.why, restarts)
            note = problem.why
            continue
        break
    if not cleaner.text:
        raise MalformedOutputError(f"section {index + 1} came back empty")
    stats = SectionStats(
        index=index,
        elapsed_seconds=time.monotonic() - started,
        characters=len(cleaner.text),
        words=count_words(cleaner.text),
        source=served_by(provider),
        continuations=continuations,
        restarts=restarts,
        note=problem.why if problem else _long(cleaner.text, request),
    )
    callbacks.on_section_done(index, stats)
    return text_so_far + cleaner.prefix + cleaner.text


def _restart(callbacks: ChapterCallbacks, index: int, why: str, restarts: int) -> int:
    if restarts >= MAX_RESTARTS:
        raise SectionRestart(f"section {index + 1} was written {restarts + 1} times: {why}")
    callbacks.on_section_restart(index, why)
    return restarts + 1


def _stream(
    step: ChapterRequest,
    provider: Provider,
    outline: Outline,
    index: int,
    *,
    text_so_far: str,
    callbacks: ChapterCallbacks,
) -> tuple[ProseCleaner, int]:
    """The section streamed through a cleaner (continued after output limits)."""
    cleaner = ProseCleaner(prefix=SECTION_SEPARATOR if text_so_far else "")
    for hop in range(MAX_CONTINUATIONS + 1):
        so_far = text_so_far + (cleaner.prefix + cleaner.text if hop else "")
        stream = provider.stream_section(step, outline, index, so_far)
        try:
            for chunk in stream:
                _forward(cleaner.feed(chunk), callbacks)
            break
        except OutputLimitError as exc:
            if hop == MAX_CONTINUATIONS:
                raise SectionRestart(f"{exc} {hop + 1} times in a row") from exc
            cleaner.resume()
            step = dataclasses.replace(step, continuing=True)
        finally:
            streams.close(stream)
    _forward(cleaner.finish(), callbacks)
    return cleaner, hop


@dataclass(frozen=True)
class Problem:
    kind: str
    why: str


def _problem(text: str, text_so_far: str, request: ChapterRequest) -> Problem | None:
    target = request.preferences.words_per_bullet
    words = count_words(text)
    if text and words < target * MIN_SHARE:
        return Problem(
            "short",
            f"the last attempt at this section had {words} words, far below the "
            f"{target} asked for: write the whole section, about {target} words",
        )
    if text_so_far and repeats_opening(text, text_so_far):
        return Problem(
            "repeat",
            "the last attempt at this section began by repeating a paragraph the chapter "
            "already has: go on from where the chapter stands instead",
        )
    return None


def _long(text: str, request: ChapterRequest) -> str:
    target = request.preferences.words_per_bullet
    words = count_words(text)
    if words > target * MAX_SHARE:
        return f"{words} words, more than {MAX_SHARE:g} times the {target} asked for"
    return ""


def _forward(piece: str, callbacks: ChapterCallbacks) -> None:
    if piece:
        callbacks.on_chunk(piece)
