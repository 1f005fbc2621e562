"""A story's default preferences and unknown keys against the real PostgreSQL (issue 23
items 5 and 6): `sequences.preferences` (migration 0010) is read by the claim and merged
under the job's own, so a job sent with {} keeps its series' language and point of
view all the way to the model's prompt; a bad story default fails the job naming the
story's field; keys no field reads are recorded on the job row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from generation.errors import RefusedError
from generation.providers.gemini import GeminiConfig, GeminiProvider
from generation.providers.offline import OfflineProvider
from generation.story.prompts import DATA_CLOSE, DATA_OPEN
from generation.types import ChapterRequest, Outline
from supervisor.db import queue
from supervisor.db.connection import connect
from supervisor.db.jobs import Status
from supervisor.db.migrate import migrate
from supervisor.errors import LeaseLostError, StoryworkerError
from supervisor.worker.runner import JobRunner, Settled
from tests.fakegemini import VALID_KEY, FakeGemini
from tests.integration.test_migrations import SEED

OWNER = "host/1"
#: A story's defaults: a French first-person series of short chapters (the fake
#: Gemini server's prose meets a 50-word target).
STORY = {"language": "French", "pov": "first person", "bullet_count": 3, "words_per_bullet": 50}


class RefusingProvider(OfflineProvider):
    """The offline provider, refusing the outline."""

    def outline(self, request: ChapterRequest) -> Outline:
        raise RefusedError("the model refused to write this content (test)")


@pytest.fixture
def worker_conn(database_url: str) -> Iterator[psycopg.Connection]:
    """The worker's own connection, made as a worker makes it."""
    with connect(database_url) as conn:
        yield conn


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture
def story_job(sequence_factory, chapter_factory, job_factory):
    """A job (`job` its user_preferences) for a new chapter of a new story whose
    preferences are `story` (None: it has none); `chapter` sets the chapter's columns."""

    def make(story: Any, job: Any, **chapter: Any) -> dict[str, Any]:
        sequence = sequence_factory(preferences=None if story is None else Jsonb(story))
        made = chapter_factory(sequence_id=sequence["id"], **chapter)
        return job_factory(made, user_preferences=job)

    return make


def run_one(conn: psycopg.Connection, provider: Any) -> Settled:
    worker = queue.WorkerQueue(conn)
    runner = JobRunner(
        queue=worker, provider=provider, owner=OWNER, max_retries=3, backoff_seconds=1.0
    )
    claim = worker.claim(OWNER)
    assert claim is not None
    return runner.run(claim)


def job_row(conn: psycopg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    return conn.execute("select * from generation_jobs where id = %s", (job_id,)).fetchone()


def sent_preferences(body: dict) -> dict:
    """The preferences in the story-data block of one Gemini request's prompt."""
    text = body["contents"][0]["parts"][0]["text"]
    start, end = text.index(DATA_OPEN) + len(DATA_OPEN), text.index(DATA_CLOSE)
    return json.loads(text[start:end])["preferences"]


# --- the column and the claim ----------------------------------------------------------


def test_sequences_have_a_nullable_jsonb_preferences_column(conn):
    column = conn.execute(
        "select data_type, is_nullable, column_default from information_schema.columns"
        " where table_name = 'sequences' and column_name = 'preferences'"
    ).fetchone()
    assert column == {"data_type": "jsonb", "is_nullable": "YES", "column_default": None}


def test_the_claim_reads_the_storys_preferences(conn, story_job):
    story_job(STORY, {})
    claim = queue.claim(conn, OWNER)
    assert claim.context.story_preferences == STORY


def test_a_story_without_preferences_reads_as_none(conn, job_factory):
    job_factory()
    assert queue.claim(conn, OWNER).context.story_preferences is None


def test_an_app_column_of_json_is_kept_and_one_of_another_type_is_refused(pg):
    with pg.database(template="template0") as dsn, connect(dsn) as conn:
        conn.execute(SEED)
        conn.execute("alter table sequences add column preferences jsonb")
        conn.execute("""update sequences set preferences = '{"language": "de"}'""")
        migrate(conn)
        assert conn.execute("select preferences from sequences").fetchone() == {
            "preferences": {"language": "de"}
        }
    with pg.database(template="template0") as dsn, connect(dsn) as conn:
        conn.execute(SEED)
        conn.execute("alter table sequences add column preferences text")
        with pytest.raises(StoryworkerError) as info:
            migrate(conn)
        assert "sequences.preferences already exists as text, not jsonb" in str(info.value)


# --- through the worker ------------------------------------------------------------------


def test_a_job_sent_with_nothing_is_written_in_its_storys_language_and_pov(
    conn, worker_conn, story_job, fake_gemini
):
    job = story_job(STORY, {})
    provider = GeminiProvider(
        GeminiConfig(api_key=VALID_KEY, base_url=fake_gemini.base_url, backoff_base_seconds=0.01)
    )
    try:
        assert run_one(worker_conn, provider) is Settled.COMPLETED
    finally:
        provider.close()
    assert job_row(conn, job["id"])["status"] == Status.COMPLETED
    bodies = [r.body for e in ("generateContent", "streamGenerateContent")
              for r in fake_gemini.calls(e)]  # fmt: skip
    assert len(bodies) >= 5  # outline, 3 sections, summary
    for body in bodies:
        sent = sent_preferences(body)
        assert (sent["language"], sent["pov"]) == ("French", "first person")
        assert (sent["bullet_count"], sent["words_per_bullet"]) == (3, 50)
        assert sent["tense"] == "past"  # neither says: the default
    outline = conn.execute(
        "select outline from chapters where id = %s", (job["chapter_id"],)
    ).fetchone()["outline"]
    assert len(outline["bullets"]) == 3  # the story's bullet_count, not the default 4


def test_the_jobs_own_key_wins_over_the_storys(worker_conn, story_job, fake_gemini):
    story_job(STORY, {"language": "pt-br"})
    provider = GeminiProvider(GeminiConfig(api_key=VALID_KEY, base_url=fake_gemini.base_url))
    try:
        assert run_one(worker_conn, provider) is Settled.COMPLETED
    finally:
        provider.close()
    (outline,) = fake_gemini.calls("generateContent")[:1]
    sent = sent_preferences(outline.body)
    assert (sent["language"], sent["pov"]) == ("pt-BR", "first person")


def test_a_bad_story_default_fails_the_job_naming_the_storys_field(conn, worker_conn, story_job):
    job = story_job({"tense": "future"}, {}, content="The user's own text.")
    assert run_one(worker_conn, OfflineProvider()) is Settled.FAILED
    row = job_row(conn, job["id"])
    assert row["status"] == Status.FAILED
    assert row["error_message"] == "sequences.preferences.tense must be one of past, present"
    content = conn.execute("select content from chapters where id = %s", (job["chapter_id"],))
    assert content.fetchone()["content"] == "The user's own text."


# --- unknown keys --------------------------------------------------------------------------


def test_unknown_keys_are_recorded_on_the_job_row_beside_the_context_manifest(
    conn, worker_conn, story_job
):
    prefs = {"bullet_count": 2, "words_per_bullet": 60, "mood": "dark", "genre": "noir"}
    job = story_job({"house_style": "terse"}, prefs)
    assert run_one(worker_conn, OfflineProvider()) is Settled.COMPLETED
    context = job_row(conn, job["id"])["context"]
    assert context["unknown_preferences"] == ["house_style", "mood"]
    # finish merged the steps' manifest in; it did not replace the record
    assert {"outline", "section 1", "section 2"} <= set(context)


def test_a_job_that_fails_keeps_its_unknown_keys_recorded(conn, worker_conn, job_factory):
    job = job_factory(user_preferences={"bullet_count": 2, "colour": "blue"})
    assert run_one(worker_conn, RefusingProvider()) is Settled.FAILED
    row = job_row(conn, job["id"])
    assert row["status"] == Status.FAILED
    assert row["context"] == {"unknown_preferences": ["colour"]}


def test_a_job_without_unknown_keys_records_none(conn, worker_conn, job_factory):
    job = job_factory()
    assert run_one(worker_conn, OfflineProvider()) is Settled.COMPLETED
    assert "unknown_preferences" not in job_row(conn, job["id"])["context"]


def test_noting_says_whether_the_keys_are_new_to_the_job(conn, job_factory):
    job = job_factory(user_preferences={"mood": 1})
    claim = queue.claim(conn, OWNER)
    assert queue.note_unknown_preferences(conn, claim, ["mood"]) is True
    assert queue.note_unknown_preferences(conn, claim, ["mood"]) is False  # logged once
    assert queue.note_unknown_preferences(conn, claim, ["mood", "x"]) is True
    assert job_row(conn, job["id"])["context"] == {"unknown_preferences": ["mood", "x"]}
    queue.release(conn, claim)
    with pytest.raises(LeaseLostError):
        queue.note_unknown_preferences(conn, claim, ["y"])
    assert job_row(conn, job["id"])["context"] == {"unknown_preferences": ["mood", "x"]}
