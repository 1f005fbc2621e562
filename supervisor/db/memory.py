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


def stale_after(conn: psycopg.Connection, job_id: Any) -> int | None:
    """The earlier chapter whose rewrite left this job's chapter written from an older
    story (None when it is not, or the job has no chapter)."""
    row = sql.one(conn, "memory_staleness", {"job_id": job_id})
    if row is None or row["stale_after"] is None:
        return None
    return row["stale_after"] if row["chapter_number"] > row["stale_after"] else None


def recall(
    conn: psycopg.Connection,
    claim: Claim,
    queries: Sequence[str],
    *,
    config: str,
    limit: int,
) -> list[list[Passage]]:
    """For each query, the passages of the claim's story before its chapter most
    relevant to it (one statement for all of them)."""
    found: list[list[Passage]] = [[] for _ in queries]
    if claim.context is None or not queries:
        return found
    rows = sql.all_rows(
        conn,
        "recall_passages",
        {
            "sequence_id": claim.sequence_id,
            "before": claim.context.chapter_number,
            "config": config,
            "queries": list(queries),
            "limit": limit,
        },
    )
    for row in rows:
        passage = Passage(row["chapter_number"], row["char_offset"], row["body"])
        found[row["ord"] - 1].append(passage)
    return found
