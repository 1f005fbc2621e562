"""The story's own logic: what a job asks for (preferences), what the model is told
(prompts), and how a chapter is written from an outline and sections (the writer).

Nothing here knows a provider's wire format; providers render the prompts built here.
"""

from __future__ import annotations

from generation.story.preferences import (
    Preferences,
    Resolved,
    parse_preferences,
    resolve_preferences,
)
from generation.story.writer import SECTION_SEPARATOR, SectionStats, write_chapter

__all__ = [
    "SECTION_SEPARATOR",
    "Preferences",
    "Resolved",
    "SectionStats",
    "parse_preferences",
    "resolve_preferences",
    "write_chapter",
]
