"""Passage embeddings in a real PostgreSQL: stored with the chapter's `finish` (one
vector per passage, with its model), ranked by similarity without pgvector (in
Python, over the story's newest passages) and with it (in the database, also when
the extension lives in a schema of its own, as on Supabase), and fused with full-text
search so that a passage no bullet word finds is still offered."""

from __future__ import annotations

import math
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from generation.story.memory import passages
from supervisor.db import memory, queue, sql
from supervisor.db.memory import StoryMemory
from supervisor.worker.recall import Recaller
from tests.integration.test_story_memory import FILLER

MODEL = "test-embedding"
INTRANS = TransactionStatus.INTRANS
#: Said in other words than the bullet asks: full-text search cannot find it. Long
#: enough to be a passage of its own (generation/story/memory.PASSAGE_MIN_CHARS).
HIDDEN = (
    "The old woman kept the silver thimble in a tin beneath the loose floorboards of the "
    "back room, wrapped in a strip of blue flannel, and told nobody in the family where "
    "it was, not even on the night of the storm when the roof gave way above the stairs. "
    "She would take it out on winter evenings, turn it once in the lamplight, and put it "
    "back before anyone came down, as if the tin were a small grave she alone tended."
)
QUERY = "Where did the grandmother hide her sewing treasure by the harbour?"


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


#: What a "model" makes of each text: the hidden passage and the query point one way,
#: everything else elsewhere.
NEAR, FAR = unit(1, 0.1, 0, 0), unit(0, 0, 1, 0.2)


def embed(text: str) -> list[float]:
    if HIDDEN in text or text == QUERY:
        return NEAR
    seed = sum(map(ord, text)) % 7
    return unit(0.1 * seed, 0, 1, 0.2 + 0.1 * seed)


def finish(conn, claim, text: str, *, model: str = MODEL, embedded: bool = True) -> None:
    pieces = passages(text)
    queue.finish(
        conn,
        claim,
        summary="Summary.",
        embedding=[],
        embedding_model="",
        word_count=len(text.split()),
        checkpoint={},
        memory=StoryMemory(
            passages=pieces,
            config="english",
            arc=[],
            characters=[],
            facts=[],
            stale_after=None,
            vectors=[embed(body) for _, body in pieces] if embedded else (),
            embedding_model=model if embedded else "",
        ),
    )


@pytest.fixture
def story(conn, sequence_factory, chapter_factory, job_factory):
    seq = sequence_factory(title="Harbour")
    chapters = [chapter_factory(sequence_id=seq["id"], chapter_number=n) for n in range(1, 4)]

    def write(number: int, text: str, **options: Any):
        job_factory(chapter=chapters[number - 1])
        claim = queue.claim(conn, "w1")
        assert claim is not None and claim.context.chapter_number == number
        finish(conn, claim, text, **options)
        return claim

    def third():
        job_factory(chapter=chapters[2])
        return queue.claim(conn, "w1")

    return write, third


def test_finish_stores_a_vector_per_passage_with_its_model(conn, story):
    write, _ = story
    text = "\n\n".join([*FILLER, HIDDEN])
    claim = write(1, text)
    rows = conn.execute(
        "select body, embedding, embedding_model from storyworker.passages"
        " where chapter_id = %s order by ordinal",
        (claim.chapter_id,),
    ).fetchall()
    assert [r["body"] for r in rows] == [body for _, body in passages(text)]
    for row in rows:
        assert row["embedding_model"] == MODEL
        assert row["embedding"] == pytest.approx(embed(row["body"]), abs=1e-6)


def test_a_chapter_written_again_without_embeddings_keeps_no_stale_vector(conn, story):
    write, _ = story
    write(1, "\n\n".join([*FILLER, HIDDEN]))
    claim = write(1, "\n\n".join([*FILLER, HIDDEN]), embedded=False)
    rows = conn.execute(
        "select embedding, embedding_model from storyworker.passages where chapter_id = %s",
        (claim.chapter_id,),
    ).fetchall()
    assert rows and all(r["embedding"] is None and r["embedding_model"] is None for r in rows)


def planted(story) -> Any:
    """Two chapters, the hidden passage in the first; the claim of the third."""
    write, third = story
    write(1, "\n\n".join([HIDDEN, *FILLER, *FILLER]))
    write(2, "\n\n".join(FILLER * 3))
    return third()


def test_without_pgvector_the_worker_ranks_the_vectors_itself(conn, story):
    claim = planted(story)
    assert memory.vector_schema(conn) is None  # the suite's PostgreSQL: not installed
    (found,) = memory.recall_similar(conn, claim, [NEAR], model=MODEL, limit=4)
    assert found[0].chapter == 1 and HIDDEN in found[0].text
    assert len(found) == 4 and all(p.chapter < 3 for p in found)
    # Another model's vectors, or another size, are never compared.
    assert memory.recall_similar(conn, claim, [NEAR], model="other", limit=4) == [[]]
    assert memory.recall_similar(conn, claim, [[1.0, 0.0]], model=MODEL, limit=4) == [[]]


def test_the_python_ranking_reads_the_newest_passages_only(conn, story, monkeypatch):
    claim = planted(story)
    newest = len(passages("\n\n".join(FILLER * 3)))  # chapter 2's
    monkeypatch.setattr(memory, "PYTHON_VECTOR_LIMIT", newest)
    (found,) = memory.recall_similar(conn, claim, [NEAR], model=MODEL, limit=newest + 2)
    assert len(found) == newest and {p.chapter for p in found} == {2}


def pgvector(conn: psycopg.Connection) -> None:
    row = conn.execute("select 1 from pg_available_extensions where name = 'vector'").fetchone()
    if row is None:
        pytest.skip("this PostgreSQL has no pgvector to install (pg_available_extensions)")


@pytest.mark.parametrize("schema", [None, "extensions"], ids=["public", "own-schema"])
def test_with_pgvector_the_database_ranks_them_the_same(conn, story, schema):
    pgvector(conn)
    claim = planted(story)
    (by_python,) = memory.recall_similar(conn, claim, [NEAR, FAR], model=MODEL, limit=4)[:1]
    if schema:  # Supabase's way: its own schema, not on the worker's search_path
        conn.execute(f"create schema {schema}")
        conn.execute(f"create extension vector with schema {schema}")
    else:
        conn.execute("create extension vector")
    memory._VECTOR_SCHEMA.pop(conn, None)
    assert memory.vector_schema(conn) == (schema or "public")
    near, far = memory.recall_similar(conn, claim, [NEAR, FAR], model=MODEL, limit=4)
    assert near == by_python and HIDDEN in near[0].text
    assert far and HIDDEN not in far[0].text
    assert memory.recall_similar(conn, claim, [NEAR], model="other", limit=4) == [[]]


class Embedder:
    """A provider's embedding side: `embed` above, under MODEL."""

    embedding_model = MODEL
    name = "test"

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.asked: list[list[str]] = []

    def embed_many(self, texts):
        self.asked.append(list(texts))
        if self.fail is not None:
            raise self.fail
        return [embed(t) for t in texts]


def test_both_rankings_are_read_in_one_transaction(conn, story, monkeypatch):
    claim = planted(story)
    worker = queue.WorkerQueue(conn)
    seen: list[tuple[str, Any]] = []
    run = sql.all_rows

    def recording(connection, name, params=None):
        seen.append((name, connection.info.transaction_status))
        return run(connection, name, params)

    monkeypatch.setattr(sql, "all_rows", recording)
    text, similar = worker.recall_with_vectors(
        claim, [QUERY], [NEAR], config="english", model=MODEL, limit=4
    )
    # An autocommit connection is in a transaction only inside an explicit block: the
    # two reads share one, so a chapter still pays one commit for its recall.
    assert seen == [("recall_passages", INTRANS), ("passage_vectors", INTRANS)]
    monkeypatch.setattr(sql, "all_rows", run)
    assert text == worker.recall(claim, [QUERY], config="english", limit=4)
    assert similar == memory.recall_similar(conn, claim, [NEAR], model=MODEL, limit=4)


def test_fusion_offers_the_passage_full_text_search_cannot_find(conn, story):
    claim = planted(story)
    worker = queue.WorkerQueue(conn)
    (by_text,) = worker.recall(claim, [QUERY], config="english", limit=4)
    assert by_text and all(HIDDEN not in p.text for p in by_text)  # no word of it asked
    notes: list[Any] = []
    provider = Embedder()
    recall = Recaller(worker, provider, claim, "english", True, notes.append)  # type: ignore[arg-type]
    (found,) = recall([QUERY])
    assert any(HIDDEN in p.text for p in found) and len(found) == 4
    assert provider.asked == [[QUERY]]  # one request for every bullet of the chapter
    similar = {"by": "full-text+embeddings", "embedding_model": MODEL, "similar_found": 4}
    assert notes == [similar]


def test_a_failed_embedding_of_the_bullets_leaves_full_text_search(conn, story):
    from generation.errors import ProviderUnavailableError

    claim = planted(story)
    worker = queue.WorkerQueue(conn)
    notes: list[Any] = []
    provider = Embedder(ProviderUnavailableError("503"))
    recall = Recaller(worker, provider, claim, "english", True, notes.append)  # type: ignore[arg-type]
    (found,) = recall([QUERY])
    (by_text,) = worker.recall(claim, [QUERY], config="english", limit=4)
    assert found == by_text
    assert notes == [{"by": "full-text", "embedding_error": "503"}]


def test_another_storys_vectors_are_never_offered(conn, story, sequence_factory, chapter_factory):
    claim = planted(story)
    other = sequence_factory(title="Elsewhere")
    chapter = chapter_factory(sequence_id=other["id"], chapter_number=1)
    conn.execute(
        "insert into storyworker.passages (chapter_id, ordinal, sequence_id, chapter_number,"
        " char_offset, body, embedding, embedding_model) values (%s, 0, %s, 1, 0, %s, %s, %s)",
        (chapter["id"], other["id"], f"Elsewhere {uuid.uuid4()}", NEAR, MODEL),
    )
    (found,) = memory.recall_similar(conn, claim, [NEAR], model=MODEL, limit=20)
    assert all("Elsewhere" not in p.text for p in found)
