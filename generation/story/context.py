"""What the model is told of the story so far, assembled within a token budget.

One builder serves the outline, every section and the summary: `assemble` turns a
request's `StoryContext` (what the worker read of the story: a rolling arc summary, the
latest chapter summaries, how the last chapter ended, passages retrieved for this
step, the story bible) into the story-data fields of a prompt and a manifest of what
went in. It is pure: the same request gives the same prompt and the same manifest, so
the worker records exactly what the provider sent.

Parts are filled in order of how much the next words depend on them, each within its
share of the budget: how chapter N-1 ended (outline and section 1), the most recent
chapter summaries verbatim (labelled by chapter number), the arc summary of everything
before them, the story bible's entries, then retrieved passages. Whatever does not fit
is cut at a sentence boundary or left out, and the prompt says so with true counts.

Tokens are estimated (`estimate_tokens`): no tokenizer is loaded in the worker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from generation.types import BibleEntry, ChapterSummary, StoryContext

#: Shares of the budget, in the order parts are filled (a part's unused share is left
#: to the parts after it).
SHARES = {"ending": 0.12, "summaries": 0.33, "arc": 0.15, "bible": 0.12, "passages": 0.28}
#: How much of chapter N-1's end is shown (before the budget has its say).
ENDING_CHARS = 1800
#: Passages offered per step.
PASSAGES_PER_STEP = 4

# Characters of scripts written without spaces count about one token each.
_DENSE = re.compile(
    r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f\u2026][\"'\u201d\u2019)\]]*(?=\s|$)")


def estimate_tokens(text: str) -> int:
    """An honest estimate: one token per character of Chinese, Japanese, Korean or
    Thai, and one per four other characters (English BPE averages about four)."""
    dense = len(_DENSE.findall(text))
    return dense + math.ceil((len(text) - dense) / 4)


def cut_to_tokens(text: str, tokens: int, *, keep: str = "start") -> tuple[str, bool]:
    """`text` within about `tokens`, cut at a sentence boundary (else at a space), from
    its start (`keep="start"`) or keeping its end (`keep="end"`); and whether it was cut.
    Nothing is cut mid-word; a text with no boundary in reach is dropped whole."""
    if estimate_tokens(text) <= tokens:
        return text, False
    if tokens <= 0:
        return "", True
    # Walk in by characters until the estimate fits, then back to a boundary.
    limit = max(1, min(len(text), tokens * 4))
    while limit > 1 and estimate_tokens(_window(text, limit, keep)) > tokens:
        limit = int(limit * 0.9)
    return _at_boundary(_window(text, limit, keep), keep), True


def _window(text: str, limit: int, keep: str) -> str:
    return text[:limit] if keep == "start" else text[-limit:]


def _at_boundary(piece: str, keep: str) -> str:
    ends = [m.end() for m in _SENTENCE_END.finditer(piece)]
    if keep == "start":
        if ends:
            return piece[: ends[-1]].rstrip()
        space = piece.rfind(" ")
        return piece[:space].rstrip() if space > 0 else ""
    if ends and ends[0] < len(piece):
        return piece[ends[0] :].lstrip()
    space = piece.find(" ")
    return piece[space:].lstrip() if space >= 0 else ""


@dataclass
class Assembled:
    """The story-data fields of one prompt and the manifest of what they hold."""

    data: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def put(self, key: str, value: Any, part: str, tokens: int, **record: Any) -> None:
        self.data[key] = value
        self.manifest.setdefault("tokens", {})[part] = tokens
        if record:
            self.manifest[part] = record


def assemble(story: StoryContext, chapter: int, *, with_ending: bool, focus: str = "") -> Assembled:
    """The story so far for chapter `chapter` within `story.budget_tokens`: see the
    module docstring. `with_ending` adds how chapter N-1 ended (the outline and the
    first section); `focus` (a bullet, the chapter's beats) picks the bible entries
    that are named in it first."""
    out = Assembled()
    left = story.budget_tokens
    out.data["chapters_in_story"] = story.chapter_count or chapter
    if with_ending and story.previous_ending:
        left -= _ending(out, story, chapter, left)
    left -= _summaries(out, story, chapter, left)
    left -= _missing(out, story)
    left -= _bible(out, story, focus, left)
    left -= _passages(out, story, left, shown=out.data.get(_ending_key(chapter), ""))
    out.manifest["budget_tokens"] = story.budget_tokens
    out.manifest["used_tokens"] = story.budget_tokens - left
    if story.stale_after is not None and story.stale_after < chapter - 1:
        out.manifest["stale_after"] = story.stale_after
    return out


def _share(story: StoryContext, part: str, left: int) -> int:
    return min(left, int(story.budget_tokens * SHARES[part]))


def _ending_key(chapter: int) -> str:
    """The field that holds how the chapter before `chapter` ended."""
    return f"how_chapter_{chapter - 1}_ended"


def _ending(out: Assembled, story: StoryContext, chapter: int, left: int) -> int:
    tail = story.previous_ending[-ENDING_CHARS:]
    text, cut = cut_to_tokens(tail, _share(story, "ending", left), keep="end")
    if not text:
        return 0
    tokens = estimate_tokens(text)
    out.put(
        _ending_key(chapter),
        text,
        "previous_ending",
        tokens,
        chapter=chapter - 1,
        characters=len(text),
        cut=cut or len(text) < len(story.previous_ending),
    )
    return tokens


def _summaries(out: Assembled, story: StoryContext, chapter: int, left: int) -> int:
    """The newest summaries verbatim, then the arc for the chapters before them."""
    room = _share(story, "summaries", left)
    shown: list[dict[str, Any]] = []
    used = 0
    cut: list[int] = []
    for item in reversed(story.summaries):
        text, tokens = item.text, estimate_tokens(item.text)
        if not shown and tokens > room:
            # The latest chapter is the one the next words follow from: cut it at a
            # sentence rather than leave it out.
            text, _ = cut_to_tokens(item.text, room)
            tokens, cut = estimate_tokens(text), [item.chapter]
        if not text or used + tokens > room:
            break
        shown.insert(0, {"chapter": item.chapter, "summary": text})
        used += tokens
    first_shown = shown[0]["chapter"] if shown else chapter
    written = sorted({*story.written, *(s.chapter for s in story.summaries)})
    hidden = [n for n in written if n < first_shown]
    out.put(
        "recent_chapter_summaries",
        shown,
        "summaries",
        used,
        chapters=[s["chapter"] for s in shown],
        cut=cut,
    )
    if cut:
        out.data["recent_chapter_summaries_cut"] = (
            f"The summary of chapter {cut[0]} is cut short at a sentence to fit."
        )
    arc = [e for e in story.arc if e.chapter < first_shown]
    return used + _arc(out, story, arc, hidden, left - used)


def _arc(
    out: Assembled, story: StoryContext, arc: list[ChapterSummary], hidden: list[int], left: int
) -> int:
    """The arc's gists of the chapters whose summaries are not shown, cut from the
    oldest when over its share; and a plain word on whatever is not covered."""
    room = _share(story, "arc", left)
    kept: list[ChapterSummary] = []
    used = 0
    for entry in reversed(arc):
        line = f"Chapter {entry.chapter}: {entry.text}"
        tokens = estimate_tokens(line)
        if used + tokens > room:
            break
        kept.insert(0, entry)
        used += tokens
    if kept:
        text = " ".join(f"Chapter {e.chapter}: {e.text}" for e in kept)
        chapters = [e.chapter for e in kept]
        out.put("story_arc_so_far", text, "arc", used, chapters=chapters)
    covered = {e.chapter for e in kept}
    uncovered = [n for n in hidden if n not in covered]
    if uncovered:
        out.data["not_shown"] = (
            f"Nothing is shown of {_chapters(uncovered)} (written, but beyond what this "
            "prompt can hold): stay consistent with what is shown."
        )
        out.manifest["not_shown"] = uncovered
    return used


def _missing(out: Assembled, story: StoryContext) -> int:
    if not story.missing:
        return 0
    note = (
        f"{_chapters(list(story.missing)).capitalize()} of this story "
        f"{'has' if len(story.missing) == 1 else 'have'} not been written: "
        "nothing is known of what happens in them; do not invent their events, and "
        "write so that the story still reads on."
    )
    tokens = estimate_tokens(note)
    out.put("missing_chapters", note, "missing", tokens, chapters=list(story.missing))
    return tokens


def _bible(out: Assembled, story: StoryContext, focus: str, left: int) -> int:
    room = _share(story, "bible", left)
    named = [c for c in story.characters if _mentions(focus, c.name)]
    rest = [c for c in story.characters if c not in named]
    kept, used = _fill((c.to_json() for c in (*named, *rest)), room)
    facts, fact_tokens = _fill(_facts_first(story.facts, named), room - used)
    facts = [f for f in story.facts if f in facts]  # shown oldest first, as stored
    if not kept and not facts:
        return 0
    out.put(
        "story_bible",
        {"characters": kept, "facts": facts},
        "bible",
        used + fact_tokens,
        characters=[c["name"] for c in kept],
        facts=len(facts),
        left_out=len(story.characters) - len(kept) + len(story.facts) - len(facts),
    )
    return used + fact_tokens


def _facts_first(facts: Sequence[str], named: Sequence[BibleEntry]) -> list[str]:
    """The facts in the order they get room: those naming a character the step names,
    then the rest, each group newest first (a long story's oldest go first)."""
    newest = list(reversed(facts))
    about = [f for f in newest if any(_mentions(f, c.name) for c in named)]
    return about + [f for f in newest if f not in about]


def _passages(out: Assembled, story: StoryContext, left: int, *, shown: str) -> int:
    """The step's retrieved passages that fit, without what the prompt already holds
    as how the last chapter ended (`shown`): retrieval often finds the end of chapter
    N-1, and the model would read it twice. The manifest names the passages cut so."""
    room = _share(story, "passages", left)
    kept: list[dict[str, Any]] = []
    repeated: list[dict[str, int]] = []
    used = 0
    for passage in story.passages[:PASSAGES_PER_STEP]:
        text = _unshown(passage.text, shown)
        if text != passage.text:
            repeated.append({"chapter": passage.chapter, "offset": passage.offset})
        tokens = estimate_tokens(text)
        if not text or used + tokens > room:
            continue
        kept.append({"chapter": passage.chapter, "offset": passage.offset, "text": text})
        used += tokens
    if repeated:
        out.manifest["passages_in_ending"] = repeated
    if not kept:
        return 0
    out.put(
        "relevant_passages_from_earlier_chapters",
        [{"chapter": p["chapter"], "text": p["text"]} for p in kept],
        "passages",
        used,
        shown=[{"chapter": p["chapter"], "offset": p["offset"]} for p in kept],
    )
    return used


#: How much of a passage's end, whitespace aside, must be found in the ending shown for
#: the passage to overlap it (passages are whole paragraphs, hundreds of characters: an
#: end this long is not found by chance).
_TAIL_CHARS = 80


def _unshown(passage: str, shown: str) -> str:
    """What of `passage` the prompt's ending (`shown`, the end of the chapter the
    passage came from) does not already hold: all of it when its end is not in the
    ending; none when all of it is; when it runs into the ending from before it, the
    part before the ending begins."""
    tail = " ".join(passage.split())[-_TAIL_CHARS:]
    if not tail or tail not in " ".join(shown.split()):
        return passage
    # `shown` holds the tail, so it has words: find where its first ones begin.
    opening = shown.split()[:8]
    start = re.search(r"\s+".join(map(re.escape, opening)), passage)
    return passage[: start.start()].rstrip() if start else ""


def _fill(items: Iterable[Any], room: int) -> tuple[list[Any], int]:
    kept, used = [], 0
    for item in items:
        tokens = estimate_tokens(str(item))
        if used + tokens > room:
            continue
        kept.append(item)
        used += tokens
    return kept, used


def _mentions(text: str, name: str) -> bool:
    return bool(name) and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.I) is not None


def _chapters(numbers: list[int]) -> str:
    """ "chapter 3", "chapters 1-4", "chapters 1-2, 5"."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    spans = [f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs]
    word = "chapter" if len(numbers) == 1 else "chapters"
    return f"{word} {', '.join(spans)}"
