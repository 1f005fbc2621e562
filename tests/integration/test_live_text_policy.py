"""The README's policy on realtime.messages (read from the README itself): only the
story's owner may join `chapter:<id>` as a private channel and read its live text;
another signed-in user, anon, and nobody at all may send on it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import realtime
from tests.supabase import SupabaseDb, supabase_database

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def readme_policy() -> str:
    blocks = re.findall(r"```sql\n(.*?)```", README, flags=re.DOTALL)
    (policy,) = [b for b in blocks if "on realtime.messages" in b]
    return policy


@pytest.fixture
def db(pg) -> Iterator[SupabaseDb]:
    with supabase_database(pg) as db:
        db.migrate()
        realtime.install(db)
        with db.connect() as conn:  # Supabase's `postgres`, in the SQL editor
            conn.execute(readme_policy())
        yield db


def story(db: SupabaseDb) -> tuple[uuid.UUID, str]:
    """A user with one chapter; returns the user and the chapter's topic, on which two
    events were sent as storyworker sends them."""
    with db.connect() as conn:
        user = conn.execute("insert into auth.users (id) values (gen_random_uuid()) returning id")
        user_id = user.fetchone()["id"]
        seq = conn.execute(
            "insert into sequences (user_id) values (%s) returning id", (user_id,)
        ).fetchone()["id"]
        chapter = conn.execute(
            "insert into chapters (sequence_id, chapter_number) values (%s, 1) returning id",
            (seq,),
        ).fetchone()["id"]
        topic = f"chapter:{chapter}"
        for seq_no in range(2):
            conn.execute(
                "select realtime.send(%s::jsonb, 'delta', %s, true)",
                (f'{{"seq": {seq_no}, "offset": 0, "text": "secret"}}', topic),
            )
    return user_id, topic


def read_as(db: SupabaseDb, user_id: uuid.UUID, topic: str) -> int:
    """Messages of `topic` the user reads with the channel's topic set, as on a join."""
    with db.as_api("authenticated", user_id) as conn:
        conn.execute("select set_config('realtime.topic', %s, true)", (topic,))
        row = conn.execute(
            "select count(*) as n from realtime.messages where topic = %s", (topic,)
        ).fetchone()
    return row["n"]


def test_only_the_owner_may_join_and_read_the_chapters_topic(db):
    owner, topic = story(db)
    other, _ = story(db)
    assert realtime.may_join(db, topic, owner)
    assert not realtime.may_join(db, topic, other)
    assert not realtime.may_join(db, topic, None)
    assert read_as(db, owner, topic) == 2
    assert read_as(db, other, topic) == 0


def test_other_topics_are_neither_granted_nor_broken(db):
    owner, topic = story(db)
    for elsewhere in ("room:1", "chapter:not-a-uuid", topic.upper(), f"{topic}:x"):
        assert not realtime.may_join(db, elsewhere, owner), elsewhere


def test_no_reader_may_send_on_the_topic(db):
    owner, topic = story(db)
    refused = db.attempt(
        "authenticated",
        owner,
        "insert into realtime.messages (topic, extension, event, payload, private)"
        " values (%s, 'broadcast', 'delta', '{}', true)",
        topic,
    )
    assert "row-level security" in refused
