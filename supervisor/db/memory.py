"""The story's memory in storyworker's own schema: a finished chapter's passages and
the story's arc and bible, stored in the transaction of the chapter's `finish`
(`supervisor.db.queue.finish`), and the passages recalled for a later chapter's step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from generation.types import Passage
from supervisor.db import sql
from supervisor.db.jobs import Claim


@dataclass(frozen=True)
class StoryMemory:
    """What a finished chapter leaves the story's memory (generation/story/memory.py)."""

    passages: Sequence[tuple[int, str]]
    config: str
    arc: Any
    characters: Any
    facts: Any
    stale_after: int | None


def remember(conn: psycopg.Connection, claim: Claim, memory: StoryMemory) -> None:
    context = claim.context
    assert context is not None  # a claim without its chapter never finishes
    sql.run(
        conn,
        "store_passages",
        {
            "chapter_id": claim.chapter_id,
            "sequence_id": claim.sequence_id,
            "chapter_number": context.chapter_number,
            "offsets": [offset for offset, _ in memory.passages],
            "bodies": [body for _, body in memory.passages],
            "config": memory.config,
        },
    )
    sql.run(
        conn,
        "store_memory",
        {
            "sequence_id": claim.sequence_id,
            "arc": Jsonb(memory.arc),
            "characters": Jsonb(memory.characters),
            "facts": Jsonb(memory.facts),
            "stale_after": memory.stale_after,
        },
    )


def recall(
    conn: psycopg.Connection, claim: Claim, query: str, *, config: str, limit: int
) -> list[Passage]:
    """The passages of the claim's story before its chapter most relevant to `query`."""
    if claim.context is None:
        return []
    rows = sql.all_rows(
        conn,
        "recall_passages",
        {
            "sequence_id": claim.sequence_id,
            "before": claim.context.chapter_number,
            "config": config,
            "query": query,
            "limit": limit,
        },
    )
    return [Passage(r["chapter_number"], r["char_offset"], r["body"]) for r in rows]
