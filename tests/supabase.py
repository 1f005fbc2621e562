"""A test database shaped like Supabase's, and sessions that act as PostgREST does.

Built from Supabase's own published SQL, the statements that shape the trust boundary
(adapted, not copied whole; their files are not part of this repository):
- supabase/postgres `migrations/db/init-scripts/00000000000000-initial-schema.sql`:
  the roles anon, authenticated, service_role (BYPASSRLS) and authenticator
  (NOINHERIT, granted the three), `grant usage on schema public`, and the default
  privileges that give all four ALL on every new table, function and sequence in
  `public`;
- `.../00000000000001-auth-schema.sql`: the auth schema, auth.users, usage on auth for
  the API roles, supabase_auth_admin owning auth's tables;
- `migrations/db/migrations/10000000000000_demote-postgres.sql`: `postgres` is not a
  superuser but has BYPASSRLS, CREATEDB, CREATEROLE and ALL on auth;
  `20230201083204_grant_auth_roles_to_postgres.sql` (anon, authenticated and
  service_role granted to postgres) and `20230529180330_alter_api_roles_for_inherit.sql`;
- supabase/auth `migrations/20220224000811_update_auth_functions.up.sql`: auth.uid()
  reading `request.jwt.claim.sub` or `request.jwt.claims ->> 'sub'`.

The test server's superuser is named `postgres`, so it plays `supabase_admin`, and
Supabase's demoted `postgres` is played by `sb_postgres`. Roles are per server, so
they are created once (idempotently); everything else is per database.

On top: the app's tables as an app starts them (created by sb_postgres, as the
Supabase CLI's migrations are), row level security on, and the naive own-row
policies ("users read, insert and update their own jobs").
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from supervisor.db.migrate import migrate
from tests.pg import PgServer

#: Supabase's `postgres`: the app's tables' owner and storyworker's worker role.
OWNER = "sb_postgres"

ROLES = """
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
        create role authenticated nologin noinherit;
        create role service_role nologin noinherit bypassrls;
        create role authenticator login noinherit;
        grant anon to authenticator;
        grant authenticated to authenticator;
        grant service_role to authenticator;
        alter role authenticated inherit;
        alter role anon inherit;
        alter role service_role inherit;
        create role supabase_auth_admin noinherit createrole login noreplication;
        create role sb_postgres nosuperuser createdb createrole login replication bypassrls;
        grant anon, authenticated, service_role to sb_postgres;
        grant supabase_auth_admin to sb_postgres;
        -- Test roles: one RLS would blind, one with BYPASSRLS that owns nothing, one
        -- that may create tables but cannot see auth.
        create role sw_blind login;
        create role sw_bypass login bypassrls;
        create role sw_limited login;
    end if;
exception when duplicate_object or unique_violation then
    null;  -- another session made them first
end
$$;
"""

PLATFORM = """
create publication supabase_realtime;
-- The init scripts run as postgres before it is demoted: it owns the publication.
alter publication supabase_realtime owner to sb_postgres;
grant usage on schema public to sb_postgres, anon, authenticated, service_role;
alter default privileges for role sb_postgres in schema public
    grant all on tables to sb_postgres, anon, authenticated, service_role;
alter default privileges for role sb_postgres in schema public
    grant all on functions to sb_postgres, anon, authenticated, service_role;
alter default privileges for role sb_postgres in schema public
    grant all on sequences to sb_postgres, anon, authenticated, service_role;
alter default privileges in schema public
    grant all on tables to sb_postgres, anon, authenticated, service_role;

create schema auth;
create table auth.users (
    instance_id uuid null,
    id uuid not null unique,
    aud varchar(255) null,
    "role" varchar(255) null,
    email varchar(255) null unique,
    encrypted_password varchar(255) null,
    raw_app_meta_data jsonb null,
    raw_user_meta_data jsonb null,
    created_at timestamptz null,
    updated_at timestamptz null,
    constraint users_pkey primary key (id)
);
create function auth.uid() returns uuid language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
grant usage on schema auth to anon, authenticated, service_role;
grant all privileges on schema auth to supabase_auth_admin;
alter table auth.users owner to supabase_auth_admin;
alter function auth.uid owner to supabase_auth_admin;
grant all on schema auth to sb_postgres;
grant all on all tables in schema auth to sb_postgres;
grant create on database {database} to sw_limited;
grant create on schema public to sw_limited;
"""

#: The app's own tables, as its first Supabase migration makes them (run as OWNER).
APP = """
create table sequences (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references auth.users (id) on delete cascade,
    title text not null default '',
    created_at timestamptz default now()
);
create table chapters (
    id uuid primary key default gen_random_uuid(),
    sequence_id uuid not null references sequences (id) on delete cascade,
    chapter_number int not null,
    title text,
    content text
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
alter table sequences enable row level security;
alter table chapters enable row level security;
alter table generation_jobs enable row level security;
create policy "own sequences" on sequences for all
    using (user_id = auth.uid()) with check (user_id = auth.uid());
create policy "own chapters" on chapters for all
    using (exists (select 1 from sequences s where s.id = sequence_id and s.user_id = auth.uid()));
create policy "read own jobs" on generation_jobs for select using (auth.uid() = user_id);
create policy "insert own jobs" on generation_jobs for insert with check (auth.uid() = user_id);
create policy "update own jobs" on generation_jobs for update
    using (auth.uid() = user_id) with check (auth.uid() = user_id);
"""


@dataclass
class SupabaseDb:
    server: PgServer
    name: str

    def dsn(self, role: str = OWNER) -> str:
        return make_conninfo(self.server.dsn(self.name), user=role)

    def connect(self, role: str = OWNER) -> psycopg.Connection:
        return psycopg.connect(self.dsn(role), autocommit=True, row_factory=dict_row)

    def migrate(self) -> list[str]:
        with self.connect() as conn:
            return migrate(conn)

    @contextlib.contextmanager
    def as_api(self, role: str, user_id: uuid.UUID | None = None) -> Iterator[psycopg.Connection]:
        """One PostgREST request: authenticator, `set local role`, the JWT's claims,
        in one transaction (committed when the block ends without an error)."""
        claims = {"role": role, **({"sub": str(user_id)} if user_id else {})}
        with self.connect("authenticator") as conn, conn.transaction():
            conn.execute(f"set local role {role}")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            yield conn

    def attempt(self, role: str, user_id: uuid.UUID | None, statement: str, *args: Any) -> str:
        """Run `statement` as a PostgREST request; "" when it went through, else the
        database's message (the request changed nothing)."""
        try:
            with self.as_api(role, user_id) as conn:
                conn.execute(statement, args or None)
        except psycopg.Error as exc:
            return exc.diag.message_primary or str(exc)
        return ""


def ensure_roles(server: PgServer) -> None:
    with server.admin() as conn:
        conn.execute(ROLES)


@contextlib.contextmanager
def supabase_database(server: PgServer, *, app_tables: bool = True) -> Iterator[SupabaseDb]:
    """A fresh Supabase-shaped database (not migrated), dropped afterwards."""
    ensure_roles(server)
    name = f"storyworker_supabase_{uuid.uuid4().hex[:12]}"
    with server.admin() as conn:
        conn.execute(f"create database {name} owner {OWNER} template template0")
    db = SupabaseDb(server, name)
    try:
        with psycopg.connect(server.dsn(name), autocommit=True) as conn:
            conn.execute(PLATFORM.format(database=name))
        if app_tables:
            with db.connect() as conn:
                conn.execute(APP)
        yield db
    finally:
        with server.admin() as conn:
            conn.execute(f"drop database if exists {name} with (force)")
