"""The story's memory in storyworker's own schema: a finished chapter's passages (with
their embeddings) and the story's arc and bible, stored in the transaction of the
chapter's `finish` (`supervisor.db.queue.finish`), and the passages recalled for a
later chapter's step: by full-text search (`recall`), and with it by embedding
similarity (`recall_with_vectors`: both rankings read in one transaction, so a chapter
still pays one read; the similarity by pgvector where it is installed, else ranked here
over the newest PYTHON_VECTOR_LIMIT passages).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from generation.story.retrieval import nearest
from generation.types import Passage
from supervisor.db import sql
from supervisor.db.jobs import Claim

#: Without pgvector, how many of a story's newest passage vectors the worker reads and
#: ranks itself (about 50 chapters' worth; full-text search still reads them all).
PYTHON_VECTOR_LIMIT = 1000
#: Per connection: the schema pgvector is installed in, or None (asked once).
_VECTOR_SCHEMA: weakref.WeakKeyDictionary[psycopg.Connection, str | None] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class StoryMemory:
    """What a finished chapter leaves the story's memory (generation/story/memory.py)."""

    passages: Sequence[tuple[int, str]]
    config: str
    arc: Any
    characters: Any
    facts: Any
    stale_after: int | None
    #: One embedding per passage, by `embedding_model`; empty when there are none.
    vectors: Sequence[Sequence[float]] = ()
    embedding_model: str = ""


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
            "vectors": [vector_literal(v) for v in memory.vectors]
            if memory.embedding_model
            else [],
            "embedding_model": memory.embedding_model or None,
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


def recall_with_vectors(
    conn: psycopg.Connection,
    claim: Claim,
    queries: Sequence[str],
    vectors: Sequence[Sequence[float]],
    *,
    config: str,
    model: str,
    limit: int,
) -> tuple[list[list[Passage]], list[list[Passage]]]:
    """For each query, its passages by full-text search (`recall`) and by the
    similarity of its vector (made by `model`; `recall_similar`), read in one
    transaction."""
    with conn.transaction():
        found = recall(conn, claim, queries, config=config, limit=limit)
        return found, recall_similar(conn, claim, vectors, model=model, limit=limit)


def recall_similar(
    conn: psycopg.Connection,
    claim: Claim,
    vectors: Sequence[Sequence[float]],
    *,
    model: str,
    limit: int,
) -> list[list[Passage]]:
    """For each query vector (made by `model`), the passages of the claim's story
    before its chapter whose embeddings by `model` are nearest to it, best first: by
    pgvector when it is installed, else ranked here over the newest
    PYTHON_VECTOR_LIMIT."""
    found: list[list[Passage]] = [[] for _ in vectors]
    if claim.context is None or not vectors or not model:
        return found
    params = {
        "sequence_id": claim.sequence_id,
        "before": claim.context.chapter_number,
        "model": model,
        "dimensions": len(vectors[0]),
    }
    schema = vector_schema(conn)
    if schema is None:
        rows = sql.all_rows(conn, "passage_vectors", {**params, "limit": PYTHON_VECTOR_LIMIT})
        pool = [(Passage(r["chapter_number"], r["char_offset"], r["body"]), r["embedding"])
                for r in rows]  # fmt: skip
        return nearest(vectors, pool, limit)
    query = {**params, "vectors": [vector_literal(v) for v in vectors], "limit": limit}
    for row in sql.composed_rows(conn, "recall_similar", query, schema=schema):
        passage = Passage(row["chapter_number"], row["char_offset"], row["body"])
        found[row["ord"] - 1].append(passage)
    return found


def vector_schema(conn: psycopg.Connection) -> str | None:
    """The schema pgvector is installed in, or None; asked once per connection (a
    worker reconnects, and so sees an extension installed since, after a restart)."""
    if conn not in _VECTOR_SCHEMA:
        row = sql.one(conn, "vector_extension")
        _VECTOR_SCHEMA[conn] = None if row is None else row["schema"]
    return _VECTOR_SCHEMA[conn]


def vector_literal(vector: Sequence[float]) -> str:
    """`vector` as a real[] literal, as the statements take vectors (repr keeps every
    digit a float32 holds)."""
    return "{" + ",".join(repr(float(v)) for v in vector) + "}"
