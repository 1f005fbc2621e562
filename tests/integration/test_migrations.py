"""Migrations: idempotent, safe on the app's existing tables, safe in parallel."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from psycopg.rows import dict_row

from supervisor.db.migrate import applied, migrate, shipped

SCHEMA_SNAPSHOT = """
select 'column' as kind, table_schema || '.' || table_name || '.' || column_name
       || ':' || data_type || ':' || coalesce(column_default, '') as item
  from information_schema.columns where table_schema in ('public', 'auth')
union all
select 'index', schemaname || '.' || indexname || ':' || indexdef
  from pg_indexes where schemaname in ('public', 'auth')
union all
select 'trigger', tgname from pg_trigger where not tgisinternal
order by 1, 2
"""

# The web app's seed schema, before storyworker ever ran against it.
SEED = """
create schema auth;
create table auth.users (id uuid primary key, email text);
create table sequences (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references auth.users (id),
    title text not null default '',
    created_at timestamptz default now()
);
create table chapters (
    id uuid primary key default gen_random_uuid(),
    sequence_id uuid not null references sequences (id) on delete cascade,
    chapter_number int not null,
    title text,
    content text not null default ''
);
create table generation_jobs (
    id uuid primary key default gen_random_uuid(),
    sequence_id uuid not null references sequences (id) on delete cascade,
    chapter_id uuid references chapters (id) on delete cascade,
    user_id uuid not null references auth.users (id) on delete cascade,
    user_preferences jsonb not null,
    status text not null default 'pending',
    current_step text,
    progress integer default 0,
    error_message text,
    created_at timestamptz default now(),
    started_at timestamptz,
    completed_at timestamptz,
    updated_at timestamptz default now()
);
create index idx_generation_jobs_status on generation_jobs (status);
create index idx_generation_jobs_user_id on generation_jobs (user_id);
insert into auth.users values ('00000000-0000-0000-0000-000000000001', 'a@example.com');
insert into sequences (id, user_id, title)
    values ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-000000000001', 'S');
insert into chapters (id, sequence_id, chapter_number, content)
    values ('00000000-0000-0000-0000-0000000000c1', '00000000-0000-0000-0000-0000000000a1', 1,
            'Existing prose.');
insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences, status, progress,
                             error_message)
select '00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000c1',
       '00000000-0000-0000-0000-000000000001', jsonb_build_object('n', n),
       (array['pending', 'completed', 'failed'])[1 + n % 3], n % 100, 'old ' || n
  from generate_series(1, 300) n;
"""


@pytest.fixture
def empty_database(pg):
    with pg.database(template="template0") as dsn:
        yield dsn


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, row_factory=dict_row)


def test_running_twice_changes_nothing(empty_database):
    with connect(empty_database) as conn:
        first = migrate(conn)
        assert first == [m.version for m in shipped()]
        snapshot = conn.execute(SCHEMA_SNAPSHOT).fetchall()
        assert migrate(conn) == []
        assert conn.execute(SCHEMA_SNAPSHOT).fetchall() == snapshot
        assert applied(conn) == set(first)
        # plain Postgres gets the minimal auth.users the foreign keys need
        assert conn.execute("select to_regclass('auth.users') as t").fetchone()["t"] is not None


def test_existing_app_tables_gain_columns_and_lose_no_row(empty_database):
    with connect(empty_database) as conn:
        conn.execute(SEED)
        before = conn.execute(
            "select id, user_preferences, status, progress, error_message, created_at"
            " from generation_jobs order by id"
        ).fetchall()
        migrate(conn)
        after = conn.execute(
            "select id, user_preferences, status, progress, error_message, created_at,"
            " attempts, run_after, locked_by, heartbeat_at, checkpoint"
            " from generation_jobs order by id"
        ).fetchall()
        assert len(after) == 300
        assert [{k: r[k] for k in before[0]} for r in after] == before
        assert {
            (r["attempts"], r["run_after"], r["locked_by"], r["checkpoint"]) for r in after
        } == {(0, None, None, None)}
        chapter = conn.execute("select * from chapters").fetchone()
        assert chapter["content"] == "Existing prose."
        assert {"outline", "summary", "embedding", "embedding_model", "word_count"} <= set(chapter)
        assert conn.execute("select email from auth.users").fetchone()["email"] == "a@example.com"
        indexes = {r["indexname"] for r in conn.execute("select indexname from pg_indexes")}
        assert {"idx_generation_jobs_status", "idx_generation_jobs_user_id"} <= indexes


def test_tables_join_the_supabase_realtime_publication(empty_database):
    with connect(empty_database) as conn:
        conn.execute("create publication supabase_realtime")
        migrate(conn)
        migrate(conn)
        tables = {
            r["tablename"]
            for r in conn.execute(
                "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
            )
        }
    assert tables == {"chapters", "generation_jobs"}


@pytest.mark.slow
def test_two_migrate_processes_at_once(empty_database):
    env = {**os.environ, "DATABASE_URL": empty_database}
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
    assert outputs[1].startswith(f"applied {len(shipped())} migration(s)")
    with connect(empty_database) as conn:
        assert applied(conn) == {m.version for m in shipped()}
