"""The story's memory, updated after each chapter: passages to retrieve later, the
rolling arc summary, the story bible. Pure functions over plain values; the worker
stores what they return with the chapter's `finish`, in one transaction.

The arc and the characters' last known state are extractive for now: the arc keeps
the opening sentences of each chapter's summary (condensed oldest first to stay within
`ARC_MAX_WORDS`), and a character's state is the latest summary sentence that names
them. Nothing is invented, and both stay bounded however long the story grows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from generation.types import BibleEntry

#: A passage is a paragraph or a few short ones: enough to carry a fact with its
#: surroundings, small enough that several fit a prompt.
PASSAGE_MIN_CHARS = 400
PASSAGE_MAX_CHARS = 1500
ARC_MAX_WORDS = 600
STATE_MAX_CHARS = 300

_SENTENCES = re.compile(r"[^.!?\u3002\uff01\uff1f]+[.!?\u3002\uff01\uff1f]*[\"'\u201d\u2019]*\s*")

#: PostgreSQL text search configurations by language (name or BCP 47 tag); any other
#: language is searched with `simple` (no stemming, no stop words).
SEARCH_CONFIGS = {
    "ar": "arabic", "da": "danish", "de": "german", "el": "greek", "en": "english",
    "es": "spanish", "fi": "finnish", "fr": "french", "hu": "hungarian", "id": "indonesian",
    "it": "italian", "lt": "lithuanian", "nb": "norwegian", "ne": "nepali", "nl": "dutch",
    "no": "norwegian", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sv": "swedish",
    "ta": "tamil", "tr": "turkish",
    "arabic": "arabic", "danish": "danish", "dutch": "dutch", "english": "english",
    "finnish": "finnish", "french": "french", "german": "german", "greek": "greek",
    "hungarian": "hungarian", "indonesian": "indonesian", "italian": "italian",
    "norwegian": "norwegian", "portuguese": "portuguese", "romanian": "romanian",
    "russian": "russian", "spanish": "spanish", "swedish": "swedish", "turkish": "turkish",
}  # fmt: skip


def search_config(language: str) -> str:
    """The text search configuration for a story written in `language`."""
    key = language.strip().lower()
    return SEARCH_CONFIGS.get(key) or SEARCH_CONFIGS.get(key.split("-")[0], "simple")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCES.findall(text) if s.strip()]


def passages(text: str) -> list[tuple[int, str]]:
    """The chapter cut into (offset, passage): paragraphs joined up to
    PASSAGE_MIN_CHARS, a long one split at sentences below PASSAGE_MAX_CHARS."""
    pieces: list[tuple[int, str]] = []
    for match in re.finditer(r"\S(?:.*?)(?=\n\s*\n|\Z)", text, re.S):
        pieces.extend(_split_long(match.start(), match.group().strip()))
    merged: list[tuple[int, str]] = []
    for offset, piece in pieces:
        if merged and len(merged[-1][1]) < PASSAGE_MIN_CHARS:
            start, body = merged[-1]
            if len(body) + len(piece) + 2 <= PASSAGE_MAX_CHARS:
                merged[-1] = (start, f"{body}\n\n{piece}")
                continue
        merged.append((offset, piece))
    return merged


def _split_long(offset: int, paragraph: str) -> list[tuple[int, str]]:
    if len(paragraph) <= PASSAGE_MAX_CHARS:
        return [(offset, paragraph)]
    out: list[tuple[int, str]] = []
    start, body = offset, ""
    for sentence in _SENTENCES.finditer(paragraph):
        piece = sentence.group()
        if body and len(body) + len(piece) > PASSAGE_MAX_CHARS:
            out.append((start, body.strip()))
            start, body = offset + sentence.start(), ""
        body += piece
    if body.strip():
        out.append((start, body.strip()))
    return out


@dataclass(frozen=True)
class ArcEntry:
    chapter: int
    gist: str

    def to_json(self) -> dict[str, Any]:
        return {"chapter": self.chapter, "gist": self.gist}


def arc_entries(data: Any) -> list[ArcEntry]:
    """The stored arc (a list of {chapter, gist}), tolerant of anything else."""
    if not isinstance(data, list):
        return []
    return [
        ArcEntry(int(e["chapter"]), str(e["gist"]))
        for e in data
        if isinstance(e, Mapping) and isinstance(e.get("chapter"), int) and e.get("gist")
    ]


def update_arc(entries: Sequence[ArcEntry], chapter: int, summary: str) -> list[ArcEntry]:
    """The arc with `chapter`'s gist (its summary's first two sentences) in place of
    any earlier one, then condensed oldest first: a gist to its first sentence, then
    the oldest gists dropped, until it is at most ARC_MAX_WORDS."""
    gist = " ".join(sentences(summary)[:2]) or summary.strip()
    arc = sorted([e for e in entries if e.chapter != chapter] + [ArcEntry(chapter, gist)],
                 key=lambda e: e.chapter)  # fmt: skip
    for i, entry in enumerate(arc):
        if _words(arc) <= ARC_MAX_WORDS:
            break
        arc[i] = ArcEntry(entry.chapter, (sentences(entry.gist) or [entry.gist])[0])
    while len(arc) > 1 and _words(arc) > ARC_MAX_WORDS:
        arc.pop(0)
    return arc


def _words(arc: Sequence[ArcEntry]) -> int:
    return sum(len(e.gist.split()) for e in arc)


def bible_entries(data: Any) -> list[BibleEntry]:
    """The stored characters (a list of {name, about, state}), tolerant of anything else."""
    if not isinstance(data, list):
        return []
    return [
        BibleEntry(str(e["name"]), str(e.get("about") or ""), str(e.get("state") or ""))
        for e in data
        if isinstance(e, Mapping) and e.get("name")
    ]


def update_bible(
    known: Sequence[BibleEntry],
    seeds: Iterable[tuple[str, str]],
    chapter: int,
    summary: str,
) -> list[BibleEntry]:
    """Characters merged by name (case-insensitive): the stored ones, then the
    preferences' (`seeds`, (name, description); a description fills an empty `about`),
    each one's state updated from the last sentence of `chapter`'s summary naming them."""
    merged: dict[str, BibleEntry] = {e.name.lower(): e for e in known}
    for name, about in seeds:
        entry = merged.get(name.lower())
        if entry is None:
            merged[name.lower()] = BibleEntry(name, about)
        elif not entry.about and about:
            merged[name.lower()] = BibleEntry(entry.name, about, entry.state)
    said = sentences(summary)
    for key, entry in merged.items():
        naming = [s for s in said if re.search(rf"(?<!\w){re.escape(entry.name)}(?!\w)", s, re.I)]
        if naming:
            state = f"(chapter {chapter}) {naming[-1]}"[:STATE_MAX_CHARS]
            merged[key] = BibleEntry(entry.name, entry.about, state)
    return list(merged.values())
