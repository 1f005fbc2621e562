"""The story's memory in a real PostgreSQL: written with the chapter's `finish` and
fenced like it, recalled by full-text search, out of the app roles' reach, deleted
with its story, and read back by the next chapter's claim."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from generation.story.memory import passages
from supervisor.db import queue
from supervisor.db.memory import StoryMemory
from supervisor.errors import LeaseLostError
from tests.supabase import SupabaseDb, supabase_database

FILLER = [
    "Mara walked the harbour wall at dusk and counted the boats coming home.",
    "The town slept under a low sky, and Mara listened to the bell of the old church.",
    "Ilya mended nets by the fish market and said little to anyone all morning.",
    "Rain came in from the sea, and Mara watched it darken the stones of the quay.",
]
PLANTED = "Ilya showed Mara the crescent scar across his left palm, a gift from the wreck."


def finish_chapter(conn, claim, text: str, summary: str, **memory: Any) -> None:
    defaults: dict[str, Any] = {
        "passages": passages(text),
        "config": "english",
        "arc": [{"chapter": claim.context.chapter_number, "gist": summary}],
        "characters": [{"name": "Mara", "about": "", "state": ""}],
        "facts": [],
        "stale_after": None,
    }
    queue.finish(
        conn,
        claim,
        summary=summary,
        embedding=[],
        embedding_model="",
        word_count=len(text.split()),
        checkpoint={},
        context={"outline": {"used_tokens": 1}},
        memory=StoryMemory(**{**defaults, **memory}),
    )


@pytest.fixture
def story(conn, sequence_factory, chapter_factory):
    seq = sequence_factory(title="Harbour", premise="A town by the sea.")
    chapters = [chapter_factory(sequence_id=seq["id"], chapter_number=n) for n in range(1, 5)]
    return seq, chapters


def write(conn, job_factory, chapter, text: str, summary: str, **memory: Any):
    job_factory(chapter=chapter)
    claim = queue.claim(conn, "w1")
    assert claim is not None and claim.chapter_id == chapter["id"]
    conn.execute("update chapters set content = %s where id = %s", (text, chapter["id"]))
    finish_chapter(conn, claim, text, summary, **memory)
    return claim


def test_finish_stores_the_chapters_passages_and_the_storys_memory(conn, job_factory, story):
    seq, chapters = story
    text = "\n\n".join([*FILLER, PLANTED])
    claim = write(conn, job_factory, chapters[0], text, "Chapter one.")
    rows = conn.execute(
        "select ordinal, chapter_number, char_offset, body from storyworker.passages"
        " where chapter_id = %s order by ordinal",
        (chapters[0]["id"],),
    ).fetchall()
    assert [(r["char_offset"], r["body"]) for r in rows] == passages(text)
    assert {r["chapter_number"] for r in rows} == {1}
    memory = conn.execute(
        "select * from storyworker.story_memory where sequence_id = %s", (seq["id"],)
    ).fetchone()
    assert memory["arc"] == [{"chapter": 1, "gist": "Chapter one."}]
    job = conn.execute(
        "select context from generation_jobs where id = %s", (claim.job_id,)
    ).fetchone()
    assert job["context"] == {"outline": {"used_tokens": 1}}


def test_a_finish_that_lost_its_claim_stores_no_memory(conn, job_factory, story):
    _, chapters = story
    job_factory(chapter=chapters[0])
    claim = queue.claim(conn, "w1")
    conn.execute("update generation_jobs set status = 'cancelled' where id = %s", (claim.job_id,))
    with pytest.raises(LeaseLostError):
        finish_chapter(conn, claim, PLANTED, "Lost.")
    for table in ("storyworker.passages", "storyworker.story_memory"):
        assert conn.execute(f"select count(*) as n from {table}").fetchone()["n"] == 0


def test_a_rewritten_chapter_replaces_its_passages(conn, job_factory, story):
    _, chapters = story
    long = "\n\n".join(FILLER * 3)
    write(conn, job_factory, chapters[0], long, "First version.")
    write(conn, job_factory, chapters[0], PLANTED, "Second version.")
    bodies = conn.execute(
        "select body from storyworker.passages where chapter_id = %s", (chapters[0]["id"],)
    ).fetchall()
    assert [b["body"] for b in bodies] == [PLANTED]


def test_recall_finds_the_planted_fact_among_the_storys_passages(conn, job_factory, story):
    _, chapters = story
    write(conn, job_factory, chapters[0], "\n\n".join(FILLER * 4), "One.")
    write(conn, job_factory, chapters[1], "\n\n".join([*FILLER, PLANTED, *FILLER]), "Two.")
    job_factory(chapter=chapters[3])
    claim = queue.claim(conn, "w1")
    found, other = queue.WorkerQueue(conn).recall(
        claim,
        ["Mara asks Ilya about the scar on his palm", "the bell of the old church"],
        config="english",
        limit=4,
    )
    assert other and all("church" in p.text for p in other)
    assert found and found[0].chapter == 2 and "crescent scar" in found[0].text
    # Only this story's earlier chapters: nothing of chapter 4 or later, or of others.
    assert all(p.chapter < 4 for p in found)


def test_the_next_claim_reads_the_story_so_far(conn, job_factory, story):
    _, chapters = story
    write(conn, job_factory, chapters[0], "Ch1 text.", "One happened.")
    ending = "\n\n".join(FILLER) + "\n\nThe lamp went out, and Mara was alone in the dark."
    write(conn, job_factory, chapters[2], ending, "Three happened.")
    job_factory(chapter=chapters[3])
    context = queue.claim(conn, "w1").context
    assert context.recent_summaries == ((1, "One happened."), (3, "Three happened."))
    assert context.missing == (2,) and context.written == (1, 3)
    assert context.previous_ending.endswith("Mara was alone in the dark.")
    assert context.arc == [{"chapter": 3, "gist": "Three happened."}]  # as the test stored it


def test_deleting_the_story_deletes_its_memory(conn, job_factory, story):
    seq, chapters = story
    write(conn, job_factory, chapters[0], PLANTED, "One.")
    conn.execute("delete from sequences where id = %s", (seq["id"],))
    for table in ("storyworker.passages", "storyworker.story_memory"):
        assert conn.execute(f"select count(*) as n from {table}").fetchone()["n"] == 0


@pytest.fixture
def supa(pg) -> Iterator[SupabaseDb]:
    with supabase_database(pg) as db:
        db.migrate()
        yield db


def test_app_roles_can_neither_read_nor_write_the_memory(supa):
    with supa.connect() as conn:
        user = conn.execute(
            "insert into auth.users (id) values (gen_random_uuid()) returning id"
        ).fetchone()["id"]
    for role, who in (("anon", None), ("authenticated", user), ("service_role", user)):
        for statement in (
            "select * from storyworker.passages",
            "select * from storyworker.story_memory",
            "delete from storyworker.story_memory",
            "insert into storyworker.story_memory (sequence_id) values (gen_random_uuid())",
        ):
            said = supa.attempt(role, who, statement)
            assert "permission denied" in said, (role, statement, said)


def test_a_rewritten_chapter_marks_the_later_ones_stale(conn, job_factory, story):
    from supervisor.db.memory import stale_after

    _, chapters = story
    write(conn, job_factory, chapters[0], "One.", "One.")
    third = write(conn, job_factory, chapters[2], "Three.", "Three.")
    assert stale_after(conn, third.job_id) is None
    # Chapter 1 written again after chapter 3: what the worker stores says so.
    rewrite = write(conn, job_factory, chapters[0], "One, again.", "One again.", stale_after=1)
    assert stale_after(conn, third.job_id) == 1
    assert stale_after(conn, rewrite.job_id) is None  # the rewrite itself is not stale
