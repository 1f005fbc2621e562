"""The database trust boundary on a Supabase-shaped database (issue 12): what the app's
roles can reach through PostgREST once storyworker has migrated, and how the claim and
the rescue treat values no worker wrote."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from supervisor.db import queue
from supervisor.db.migrate import MigrationRefused, applied, migrate, require_migrated, shipped
from supervisor.db.ratelimit import RateLimiter
from supervisor.errors import NotMigratedError
from tests.supabase import SupabaseDb, supabase_database

APP_TABLES = {"public.sequences", "public.chapters", "public.generation_jobs"}
RELATIONS = """
select c.oid, n.nspname || '.' || c.relname as name
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
   and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
"""
PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"


@pytest.fixture
def supa(pg) -> Iterator[SupabaseDb]:
    with supabase_database(pg) as db:
        db.migrate()
        yield db


@pytest.fixture
def world(supa: SupabaseDb) -> dict[str, Any]:
    """Alice and Bob, a story and a chapter each, and a job for each of them (made by
    the worker's role, as `storyworker enqueue` would)."""
    made: dict[str, Any] = {}
    with supa.connect() as conn:
        for who in ("alice", "bob"):
            user = conn.execute(
                "insert into auth.users (id) values (gen_random_uuid()) returning id"
            ).fetchone()["id"]
            story = conn.execute(
                "insert into sequences (user_id, title) values (%s, 'S') returning id", (user,)
            ).fetchone()["id"]
            chapter = conn.execute(
                "insert into chapters (sequence_id, chapter_number) values (%s, 1) returning id",
                (story,),
            ).fetchone()["id"]
            made[who] = {"user": user, "sequence": story, "chapter": chapter}
            made[who]["job"] = queue.enqueue(conn, chapter, {"bullet_count": 1})
    return made


def job(supa: SupabaseDb, job_id: uuid.UUID) -> dict[str, Any]:
    with supa.connect() as conn:
        return conn.execute("select * from generation_jobs where id = %s", (job_id,)).fetchone()


def test_app_roles_reach_nothing_migrate_created_but_the_app_tables(pg):
    with supabase_database(pg, app_tables=False) as db:
        with db.connect() as conn:
            before = {r["name"] for r in conn.execute(RELATIONS)}
        db.migrate()
        with db.connect() as conn:
            created = [r for r in conn.execute(RELATIONS) if r["name"] not in before]
            names = {r["name"] for r in created}
            assert names >= APP_TABLES and "storyworker.migrations" in names
            assert "storyworker.rate_limits" in names
            assert not [n for n in names if n.startswith("public.storyworker")]
            for role in ("anon", "authenticated", "public"):
                for rel in created:
                    if rel["name"] in APP_TABLES:
                        continue
                    granted = conn.execute(
                        "select has_table_privilege(%s, %s, %s) as p",
                        (role, rel["oid"], PRIVILEGES),
                    ).fetchone()["p"]
                    assert not granted, (role, rel["name"])
                usage = conn.execute(
                    "select has_schema_privilege(%s, 'storyworker', 'USAGE, CREATE') as p", (role,)
                ).fetchone()["p"]
                assert not usage, role


def test_the_anon_key_cannot_touch_storyworker_state(supa, world):
    for role in ("anon", "authenticated"):
        user = world["alice"]["user"] if role == "authenticated" else None
        for attack in (
            "update storyworker.rate_limits set tat = now() + interval '100 years'",
            "delete from storyworker.rate_limits",
            "delete from storyworker.migrations",
            "select * from storyworker.migrations",
        ):
            assert "permission denied" in supa.attempt(role, user, attack), (role, attack)
    with supa.connect() as conn:
        assert (
            conn.execute("select to_regclass('public.storyworker_rate_limits') as t").fetchone()[
                "t"
            ]
            is None
        )
        assert conn.execute("select count(*) as n from storyworker.migrations").fetchone()["n"] >= 6


ATTACKS = [
    "update generation_jobs set attempts = -50 where id = %s",
    "update generation_jobs set status = 'pending' where id = %s",
    "update generation_jobs set created_at = '1970-01-01' where id = %s",
    "update generation_jobs set heartbeat_at = 'infinity' where id = %s",
    "update generation_jobs set run_after = '-infinity' where id = %s",
    "update generation_jobs set started_at = 'infinity' where id = %s",
    "update generation_jobs set locked_by = 'me', checkpoint = '{}' where id = %s",
    "update generation_jobs set progress = 100, error_message = 'x' where id = %s",
    "update generation_jobs set usage = '{}' where id = %s",
    "update generation_jobs set context = '{}' where id = %s",
    "update generation_jobs set status = 'completed' where id = %s",
]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("status", ["pending", "processing", "completed"])
def test_own_row_policies_cannot_rewrite_worker_columns(supa, world, attack, status):
    alice = world["alice"]
    with supa.connect() as conn:
        conn.execute(
            "update generation_jobs set status = %s, attempts = 1, locked_by = 'w/1',"
            " heartbeat_at = now() where id = %s",
            (status, alice["job"]),
        )
    before = job(supa, alice["job"])
    error = supa.attempt("authenticated", alice["user"], attack, alice["job"])
    if f"status = '{status}'" in attack:
        assert error == ""  # setting the status it already has changes nothing
    else:
        assert "may not" in error, error
    assert job(supa, alice["job"]) == before


def test_a_processing_job_cannot_be_pointed_at_another_chapter(supa, world):
    alice, bob = world["alice"], world["bob"]
    with supa.connect() as conn:
        claim = queue.claim(conn, "w/1")
    assert claim is not None and claim.job_id == alice["job"]
    redirect = "update generation_jobs set chapter_id = %s, sequence_id = %s where id = %s"
    error = supa.attempt(
        "authenticated", alice["user"], redirect, bob["chapter"], bob["sequence"], alice["job"]
    )
    assert "may not change which chapter" in error
    assert job(supa, alice["job"])["chapter_id"] == alice["chapter"]


def test_an_infinite_updated_at_becomes_now(supa, world):
    alice = world["alice"]
    statement = "update generation_jobs set updated_at = 'infinity' where id = %s"
    assert supa.attempt("authenticated", alice["user"], statement, alice["job"]) == ""
    assert job(supa, alice["job"])["updated_at"].year < 3000


def test_the_owner_and_a_superuser_are_the_worker(supa, world):
    """Supabase's postgres (the tables' owner) and supabase_admin (a superuser) write
    worker columns; service_role, anon and authenticated do not."""
    alice = world["alice"]
    superuser = psycopg.connect(supa.server.dsn(supa.name), autocommit=True)
    for conn in (supa.connect(), superuser):
        with conn:
            conn.execute(
                "update generation_jobs set attempts = attempts + 1 where id = %s", (alice["job"],)
            )
    assert job(supa, alice["job"])["attempts"] == 2


def test_service_role_cannot_rewrite_worker_columns_either(supa, world):
    alice = world["alice"]
    error = supa.attempt("service_role", None, ATTACKS[0], alice["job"])
    assert "may not change generation_jobs.attempts" in error
    assert job(supa, alice["job"])["attempts"] == 0


@pytest.mark.parametrize("status", ["pending", "processing"])
def test_a_user_still_cancels_their_own_job(supa, world, status):
    alice = world["alice"]
    with supa.connect() as conn:
        conn.execute("update generation_jobs set status = %s where id = %s", (status, alice["job"]))
    assert (
        supa.attempt(
            "authenticated",
            alice["user"],
            "update generation_jobs set status = 'cancelled' where id = %s",
            alice["job"],
        )
        == ""
    )
    row = job(supa, alice["job"])
    assert (row["status"], row["current_step"]) == ("cancelled", "cancelled")
    assert row["completed_at"] is not None and row["heartbeat_at"] is None
    # ...but not someone else's (RLS), nor a finished one back to life.
    bob = world["bob"]
    supa.attempt(
        "authenticated",
        alice["user"],
        "update generation_jobs set status = 'cancelled' where id = %s",
        bob["job"],
    )
    assert job(supa, bob["job"])["status"] == "pending"
    assert "may not set" in supa.attempt(
        "authenticated",
        alice["user"],
        "update generation_jobs set status = 'pending' where id = %s",
        alice["job"],
    )


PLANT = """
insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences, status,
                             locked_by, heartbeat_at, attempts, created_at, run_after, progress)
values (%s, %s, %s, '{}', 'processing', 'evil/1', 'infinity', -50, '1970-01-01', '-infinity', 99)
returning id
"""


def test_a_planted_processing_job_is_a_new_pending_job(supa, world):
    alice, bob = world["alice"], world["bob"]
    with supa.as_api("authenticated", alice["user"]) as conn:
        planted = conn.execute(
            PLANT, (alice["sequence"], bob["chapter"], alice["user"])
        ).fetchone()["id"]
    row = job(supa, planted)
    assert row["status"] == "pending"
    assert (row["attempts"], row["progress"], row["locked_by"], row["heartbeat_at"]) == (
        0,
        0,
        None,
        None,
    )
    assert row["run_after"] is None and row["created_at"].year >= 2026
    # Bob's real job, older, is claimed first; the planted one never blocks it.
    with supa.connect() as conn:
        first = queue.claim(conn, "w/1")
        assert first is not None and first.job_id == world["alice"]["job"]
        second = queue.claim(conn, "w/2")
        assert second is not None and second.job_id == bob["job"]


def plant_as_owner(supa: SupabaseDb, chapter: uuid.UUID, **values: Any) -> uuid.UUID:
    """A row with values only a pre-0006 app (or a careless owner) could have written."""
    with supa.connect() as conn:
        ids = conn.execute(
            "select c.sequence_id, s.user_id from chapters c"
            " join sequences s on s.id = c.sequence_id"
            " where c.id = %s",
            (chapter,),
        ).fetchone()
        columns = {
            "sequence_id": ids["sequence_id"],
            "chapter_id": chapter,
            "user_id": ids["user_id"],
            "user_preferences": Jsonb({}),
            **values,
        }
        names = ", ".join(columns)
        marks = ", ".join(f"%({k})s" for k in columns)
        return conn.execute(
            f"insert into generation_jobs ({names}) values ({marks}) returning id", columns
        ).fetchone()["id"]


@pytest.mark.parametrize("heartbeat", ["'infinity'", "now() + interval '1 day'"])
def test_an_impossible_lease_is_rescued(supa, world, heartbeat):
    bob = world["bob"]
    with supa.connect() as conn:
        stuck = plant_as_owner(
            supa, bob["chapter"], status="processing", locked_by="evil/1", attempts=1
        )
        conn.execute(
            f"update generation_jobs set heartbeat_at = {heartbeat} where id = %s", (stuck,)
        )
        outcomes = queue.rescue(conn, lease_seconds=60, max_retries=3)
        assert [o.job_id for o in outcomes] == [stuck]
        row = job(supa, stuck)
        assert row["status"] == "pending" and row["heartbeat_at"] is None
        assert "last heartbeat" in row["error_message"]
        # A live lease (renewed just now) is left alone.
        queue.claim(conn, "w/1")
        assert queue.rescue(conn, lease_seconds=60, max_retries=3) == []


def test_claim_survives_infinite_timestamps(supa, world):
    bob = world["bob"]
    with supa.connect() as conn:
        conn.execute("delete from generation_jobs")
        weird = plant_as_owner(
            supa,
            bob["chapter"],
            created_at="-infinity",
            run_after="-infinity",
            completed_at="infinity",
            updated_at="infinity",
        )
        claim = queue.claim(conn, "w/1")
        assert claim is not None and claim.job_id == weird
        stats = queue.stats(conn)
        assert stats.depth_by_status["processing"] == 1


def test_a_deleted_or_future_rate_limit_starts_over(supa):
    with supa.connect() as conn:
        limiter = RateLimiter(conn, 600, sleep=lambda s: None)
        limiter.acquire()
        conn.execute("update storyworker.rate_limits set tat = 'infinity'")
        assert limiter.acquire() == 0.0
        conn.execute("update storyworker.rate_limits set tat = now() + interval '100 years'")
        assert limiter.acquire() == 0.0
        conn.execute("delete from storyworker.rate_limits")
        assert limiter.acquire() < 1.0


def migrated_by_the_previous_version(conn: psycopg.Connection) -> None:
    """What a version before 0005 left: bookkeeping and rate limits in public."""
    conn.execute(
        "create table storyworker_migrations (version text primary key,"
        " applied_at timestamptz not null default now())"
    )
    for m in shipped()[:4]:
        conn.execute(m.sql)
        conn.execute("insert into storyworker_migrations (version) values (%s)", (m.version,))
    conn.execute("insert into storyworker_rate_limits values ('ai', '2030-01-01')")


def test_previous_version_state_moves_to_the_storyworker_schema(pg):
    with supabase_database(pg) as db, db.connect() as conn:
        migrated_by_the_previous_version(conn)
        # The hole issue 12 reports: Supabase's default privileges reach them in public.
        assert conn.execute(
            "select has_table_privilege('anon', 'storyworker_rate_limits', 'UPDATE') as p"
        ).fetchone()["p"]
        assert applied(conn) == {m.version for m in shipped()[:4]}
        with pytest.raises(NotMigratedError, match="0005"):
            require_migrated(conn)
        assert migrate(conn) == [m.version for m in shipped()[4:]]
        assert applied(conn) == {m.version for m in shipped()}
        assert migrate(conn) == []
        tat = conn.execute("select tat from storyworker.rate_limits").fetchone()["tat"]
        assert tat.year == 2030
        for gone in ("storyworker_migrations", "storyworker_rate_limits"):
            assert conn.execute("select to_regclass(%s) as t", (gone,)).fetchone()["t"] is None
        # In public they had Supabase's default grants; moved, they keep none of them.
        for role in ("anon", "authenticated", "public"):
            for table in ("storyworker.migrations", "storyworker.rate_limits"):
                granted = conn.execute(
                    "select has_table_privilege(%s, %s, %s) as p", (role, table, PRIVILEGES)
                ).fetchone()["p"]
                assert not granted, (role, table)


@pytest.mark.slow
def test_two_hosts_upgrade_a_previous_version_at_once(pg):
    with supabase_database(pg) as db:
        with db.connect() as conn:
            migrated_by_the_previous_version(conn)
        env = {**os.environ, "DATABASE_URL": db.dsn()}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "supervisor", "migrate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(*p.communicate(timeout=60), p.returncode) for p in procs]
        assert [r[2] for r in results] == [0, 0], results
        outputs = sorted(r[0].strip() for r in results)
        assert outputs[0] == "applied 0 migration(s)"
        assert outputs[1].startswith(f"applied {len(shipped()) - 4} migration(s)")
        with db.connect() as conn:
            assert applied(conn) == {m.version for m in shipped()}


def test_a_failed_first_migration_leaves_no_bookkeeping(pg):
    with supabase_database(pg) as db, db.connect() as conn:
        conn.execute("insert into auth.users (id) values (gen_random_uuid())")
        conn.execute("insert into sequences (user_id) select id from auth.users")
        conn.execute(
            "insert into chapters (sequence_id, chapter_number) select id, 1 from sequences"
        )
        two_writers = (
            "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences,"
            " status) select c.sequence_id, c.id, s.user_id, '{}', 'processing'"
            " from chapters c join sequences s on s.id = c.sequence_id, generate_series(1, 2)"
        )
        conn.execute(two_writers)
        with pytest.raises(MigrationRefused, match="migration 0001_schema: cannot create"):
            migrate(conn)
        assert conn.execute("select to_regnamespace('storyworker') as s").fetchone()["s"] is None
        assert applied(conn) == set()
        conn.execute(
            "delete from generation_jobs where ctid = (select min(ctid) from generation_jobs)"
        )
        assert migrate(conn) == [m.version for m in shipped()]


def readme_policies() -> str:
    """The generation_jobs policies README's Supabase section recommends."""
    readme = (Path(__file__).parents[2] / "README.md").read_text("utf-8")
    section = readme[readme.index("**The policies to put on `generation_jobs`**") :]
    return section[section.index("```sql") + len("```sql") : section.index("```\n", 10)]


def test_the_readme_policies_do_what_it_says(supa, world):
    alice, bob = world["alice"], world["bob"]
    with supa.connect() as conn:
        for name in ("read own jobs", "insert own jobs", "update own jobs"):
            conn.execute(f'drop policy "{name}" on generation_jobs')
        conn.execute(readme_policies())
    insert = (
        "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences)"
        " values (%s, %s, %s, '{}')"
    )
    user = alice["user"]
    assert (
        supa.attempt("authenticated", user, insert, alice["sequence"], alice["chapter"], user) == ""
    )
    refused = supa.attempt("authenticated", user, insert, bob["sequence"], bob["chapter"], user)
    assert "row-level security" in refused
    cancel = "update generation_jobs set status = 'cancelled' where id = %s"
    assert supa.attempt("authenticated", user, cancel, alice["job"]) == ""
    assert job(supa, alice["job"])["status"] == "cancelled"
    revive = "update generation_jobs set status = 'pending' where id = %s"
    supa.attempt("authenticated", user, revive, alice["job"])
    assert job(supa, alice["job"])["status"] == "cancelled"
    with supa.as_api("authenticated", user) as conn:
        seen = {r["user_id"] for r in conn.execute("select user_id from generation_jobs")}
    assert seen == {user}


def test_a_role_named_storyworker_keeps_the_app_tables_in_public(pg):
    """search_path's "$user" names storyworker's schema for a role called storyworker:
    the migrations still create the app's tables in public."""
    with pg.admin() as conn:
        exists = conn.execute("select 1 from pg_roles where rolname = 'storyworker'").fetchone()
        if not exists:
            conn.execute("create role storyworker login")
    with pg.database(template="template0") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("alter schema public owner to storyworker")
            conn.execute(f"alter database {conn.info.dbname} owner to storyworker")
        own = make_conninfo(dsn, user="storyworker")
        with psycopg.connect(own, autocommit=True, row_factory=dict_row) as conn:
            conn.execute("create schema auth")
            assert migrate(conn) == [m.version for m in shipped()]
            placed = conn.execute(
                "select relnamespace::regnamespace::text as s, relname from pg_class"
                " where relname in ('sequences', 'chapters', 'generation_jobs', 'migrations',"
                " 'rate_limits') and relkind = 'r' order by relname"
            ).fetchall()
        assert {(r["relname"], r["s"]) for r in placed} == {
            ("chapters", "public"),
            ("generation_jobs", "public"),
            ("sequences", "public"),
            ("migrations", "storyworker"),
            ("rate_limits", "storyworker"),
        }


def test_a_table_another_role_owns_is_named(pg):
    with supabase_database(pg) as db:
        with psycopg.connect(pg.dsn(db.name), autocommit=True) as admin:
            admin.execute("alter table chapters owner to postgres")  # supabase_admin's
        with db.connect() as conn:
            with pytest.raises(MigrationRefused) as refused:
                migrate(conn)
            assert "role sb_postgres: must be owner of table chapters" in str(refused.value)
            assert "owner to postgres" in str(refused.value)
            assert applied(conn) == set()


def test_an_app_double_click_cancels_the_older_job_and_priority_is_the_apps(supa, world):
    """Issue 21: the app's own insert (authenticated, through PostgREST) supersedes the
    older live job of the chapter, though the app may not write worker columns itself;
    it may set priority; a job naming someone else's chapter cancels nothing of theirs."""
    alice, bob = world["alice"], world["bob"]
    insert = (
        "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences,"
        " priority) values (%s, %s, %s, '{}', 7)"
    )
    user = alice["user"]
    assert (
        supa.attempt("authenticated", user, insert, alice["sequence"], alice["chapter"], user) == ""
    )
    older = job(supa, alice["job"])
    assert older["status"] == "cancelled" and older["error_message"].startswith("superseded by job")
    with supa.connect() as conn:
        newer = conn.execute(
            "select * from generation_jobs where chapter_id = %s and status = 'pending'",
            (alice["chapter"],),
        ).fetchone()
    assert newer["priority"] == 7 and str(newer["id"]) in older["error_message"]
    reprioritise = "update generation_jobs set priority = 1 where id = %s"
    assert supa.attempt("authenticated", user, reprioritise, newer["id"]) == ""
    # Alice naming Bob's chapter in her own story: Bob's job is left alone.
    supa.attempt("authenticated", user, insert, alice["sequence"], bob["chapter"], user)
    assert job(supa, bob["job"])["status"] == "pending"
