"""The story's memory, updated after each chapter: passages to retrieve later, the
rolling arc summary, the story bible. Pure functions over plain values; the worker
stores what they return with the chapter's `finish`, in one transaction.

The model writes the arc and the bible's entries for each chapter
(generation/story/extraction.py); they are merged here (`merge_bible`, `merge_facts`)
and bounded (`bound_arc`, MAX_CHARACTERS, MAX_FACTS). When the model's answer is
missing, the extractive rules stand in: the arc keeps the opening sentences of each
chapter's summary, and a character's state is the latest summary sentence that names
them. Either way it stays bounded however long the story grows.
"""

from __future__ import annotations

import dataclasses
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
ABOUT_MAX_CHARS = 300
NAME_MAX_CHARS = 100
FACT_MAX_CHARS = 300
#: The bible's bounds: the characters seen least recently and the oldest facts go first.
MAX_CHARACTERS = 60
MAX_FACTS = 80

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
class Fact:
    """An established fact of the story, and the chapter that established it."""

    chapter: int
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"chapter": self.chapter, "text": self.text}

    def shown(self) -> str:
        """As the model is shown it."""
        return f"{self.text} (chapter {self.chapter})" if self.chapter else self.text


def fact_entries(data: Any) -> list[Fact]:
    """The stored facts (a list of {chapter, text}; a plain string is a fact of no
    known chapter), tolerant of anything else."""
    if not isinstance(data, list):
        return []
    facts = []
    for item in data:
        if isinstance(item, str) and item.strip():
            facts.append(Fact(0, item.strip()))
        elif isinstance(item, Mapping) and isinstance(item.get("text"), str) and item["text"]:
            chapter = item.get("chapter")
            facts.append(Fact(chapter if isinstance(chapter, int) else 0, item["text"]))
    return facts


def merge_facts(known: Sequence[Fact], chapter: int, new: Iterable[str]) -> list[Fact]:
    """The stored facts with those `chapter` established in place of any it had
    established before (a rewritten chapter replaces its own), each said once
    (compared without case and spacing), the oldest dropped beyond MAX_FACTS."""
    kept = [f for f in known if f.chapter != chapter]
    seen = {_key(f.text) for f in kept}
    for said in new:
        text = " ".join(said.split())[:FACT_MAX_CHARS]
        if text and _key(text) not in seen:
            seen.add(_key(text))
            kept.append(Fact(chapter, text))
    kept.sort(key=lambda f: f.chapter)
    return kept[-MAX_FACTS:]


def _key(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


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
    arc = [e for e in entries if e.chapter != chapter] + [ArcEntry(chapter, gist_of(summary))]
    return bound_arc(arc)


def gist_of(summary: str) -> str:
    """A chapter's extractive gist: its summary's first two sentences."""
    return " ".join(sentences(summary)[:2]) or summary.strip()


def bound_arc(entries: Sequence[ArcEntry]) -> list[ArcEntry]:
    """`entries` by chapter, condensed oldest first (a gist to its first sentence, then
    the oldest gists dropped) until they are at most ARC_MAX_WORDS."""
    arc = sorted(entries, key=lambda e: e.chapter)
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
    """The stored characters (a list of {name, about, state, seen}), tolerant of
    anything else."""
    if not isinstance(data, list):
        return []
    return [
        BibleEntry(
            str(e["name"]),
            str(e.get("about") or ""),
            str(e.get("state") or ""),
            e["seen"] if isinstance(e.get("seen"), int) else 0,
        )
        for e in data
        if isinstance(e, Mapping) and e.get("name")
    ]


def seeded(known: Sequence[BibleEntry], seeds: Iterable[tuple[str, str]]) -> dict[str, BibleEntry]:
    """Characters by name (case-insensitive): the stored ones, then the preferences'
    (`seeds`, (name, description)); a description fills an empty `about`."""
    merged: dict[str, BibleEntry] = {e.name.lower(): e for e in known}
    for name, about in seeds:
        entry = merged.get(name.lower())
        if entry is None:
            merged[name.lower()] = BibleEntry(name, about)
        elif not entry.about and about:
            merged[name.lower()] = dataclasses.replace(entry, about=about)
    return merged


def merge_bible(
    known: Sequence[BibleEntry],
    seeds: Sequence[tuple[str, str]],
    chapter: int,
    shown: Iterable[BibleEntry],
) -> list[BibleEntry]:
    """The stored characters and the preferences' (`seeded`), with the model's entries
    for those `chapter` shows merged in by name: their state (marked with the chapter)
    and, but for the author's own characters (`seeds`, whose description stands), a
    new description; characters new to the story added. Beyond MAX_CHARACTERS, those
    seen least recently go (the author's never)."""
    merged = seeded(known, seeds)
    authored = {name.lower() for name, _ in seeds}
    for entry in shown:
        name = " ".join(entry.name.split())[:NAME_MAX_CHARS]
        if not name:
            continue
        old = merged.get(name.lower(), BibleEntry(name))
        about = old.about if name.lower() in authored and old.about else entry.about or old.about
        state = f"(chapter {chapter}) {entry.state.strip()}" if entry.state.strip() else old.state
        merged[name.lower()] = BibleEntry(
            old.name, about[:ABOUT_MAX_CHARS], state[:STATE_MAX_CHARS], chapter
        )
    return _bounded(list(merged.values()), authored)


def _bounded(entries: list[BibleEntry], authored: set[str]) -> list[BibleEntry]:
    if len(entries) <= MAX_CHARACTERS:
        return entries
    ranked = sorted(entries, key=lambda e: (e.name.lower() not in authored, -e.seen))
    keep = {id(e) for e in ranked[:MAX_CHARACTERS]}
    return [e for e in entries if id(e) in keep]


def update_bible(
    known: Sequence[BibleEntry],
    seeds: Iterable[tuple[str, str]],
    chapter: int,
    summary: str,
) -> list[BibleEntry]:
    """The extractive bible: characters merged by name (`seeded`), each one's state
    updated from the last sentence of `chapter`'s summary naming them."""
    merged = seeded(known, seeds)
    said = sentences(summary)
    for key, entry in merged.items():
        naming = [s for s in said if names(s, entry.name)]
        if naming:
            state = f"(chapter {chapter}) {naming[-1]}"[:STATE_MAX_CHARS]
            merged[key] = BibleEntry(entry.name, entry.about, state, chapter)
    return list(merged.values())


def names(text: str, name: str) -> bool:
    """Whether `text` names `name` (a whole word or words, any case)."""
    return bool(name) and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.I) is not None
