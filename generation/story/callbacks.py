"""What the writer tells its caller as it goes, and how one section went."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from generation.types import Outline, Source


@dataclass(frozen=True)
class SectionStats:
    """How one section went, for progress reports and metrics."""

    index: int
    elapsed_seconds: float
    characters: int
    words: int
    #: Who wrote it, when the provider says (a fallback may serve some sections).
    source: Source | None = None
    #: Continuations joined after an output limit, and times it was written again.
    continuations: int = 0
    restarts: int = 0
    #: What was still wrong with it when it was taken ("" when nothing).
    note: str = ""


class ChapterCallbacks(Protocol):
    """What the writer tells its caller as it goes. Exceptions raised here propagate."""

    def on_context(self, step: str, manifest: Mapping[str, Any]) -> None:
        """What the model is about to be sent of the story so far for `step`
        ("outline", "section 2"): the manifest of the prompt's context."""

    def on_outline(self, outline: Outline) -> None:
        """A new outline was written (not called when the checkpoint had one)."""

    def on_chunk(self, text: str) -> None:
        """`text` was appended to the chapter."""

    def on_section_done(self, index: int, stats: SectionStats) -> None:
        """Section `index` is complete; the chunks so far are its final text."""

    def on_section_restart(self, index: int, why: str) -> None:
        """What was streamed of section `index` since the last section done is void:
        the section is written again (`why` says why)."""
