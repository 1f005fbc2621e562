"""Supabase Realtime's side of a Supabase-shaped test database (tests/supabase.py): the
`realtime` schema as the Realtime server leaves it, and its join check.

Re-expressed, keeping only what storyworker touches, from the public definitions in the
supabase/realtime repository (lib/realtime/tenants/repo/migrations; their files are not
part of this repository):
- 20240401105812_create_realtime_admin_and_move_ownership: the NOLOGIN NOINHERIT role
  supabase_realtime_admin owning realtime's tables, granted to `postgres`;
- 20240523004032_redefine_authorization_tables: row level security on
  realtime.messages, SELECT/INSERT/UPDATE on it for postgres, anon, authenticated and
  service_role, and realtime.topic() reading the `realtime.topic` setting;
- 20241030150047_messages_partitioning and 20241108114728_messages_using_uuid: the
  table partitioned by range of `inserted_at` (a timestamp without time zone), primary
  key (id uuid, inserted_at), `private` defaulting to false;
- 20250905041441_create_messages_replay_index: the partial replay index;
- 20260514120000_add_binary_payload_to_messages: the `binary_payload bytea` column
  (null for every JSON send) and the NOT VALID check that a row has one payload at most;
- 20251103001201_broadcast_send_include_payload_id and 20260605120000_rename_
  broadcast_send_warning: realtime.send(payload jsonb, event text, topic text, private
  boolean default true), which adds the row's id to a payload that has none, sets
  `realtime.topic` for the transaction, inserts with extension 'broadcast', and turns
  any error into `RAISE WARNING 'WarnSendingBroadcastMessage: %'`;
- lib/realtime/tenants.ex, create_messages_partitions: the server (not the function)
  makes one partition per day, from yesterday to three days ahead, named
  messages_YYYY_MM_DD and owned by supabase_realtime_admin. Without them every send
  fails, and so warns;
- lib/realtime/tenants/authorization.ex: a private channel's join inserts a probe row
  as the admin, sets `role`, `realtime.topic`, `request.jwt.claims` and
  `request.jwt.claim.sub` for the transaction, selects the row back (visible: the user
  may read the topic) and rolls back.

Our `sb_postgres` plays Supabase's `postgres`, and the test server's superuser plays
supabase_admin, who owns realtime.send (EXECUTE through PUBLIC, as on Supabase).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import psycopg

from tests.supabase import OWNER, SupabaseDb

ADMIN = "supabase_realtime_admin"

ROLE = f"""
do $$
begin
    if not exists (select 1 from pg_roles where rolname = '{ADMIN}') then
        create role {ADMIN} nologin noinherit noreplication;
    end if;
exception when duplicate_object or unique_violation then
    null;  -- another session made it first
end
$$;
"""

SCHEMA = f"""
create schema realtime;
grant all on schema realtime to {ADMIN};
grant usage on schema realtime to {OWNER}, anon, authenticated, service_role;

create table realtime.messages (
    topic text not null,
    extension text not null,
    payload jsonb,
    event text,
    private boolean default false,
    updated_at timestamp not null default now(),
    inserted_at timestamp not null default now(),
    id uuid not null default gen_random_uuid(),
    primary key (id, inserted_at)
) partition by range (inserted_at);
alter table realtime.messages add column binary_payload bytea;
alter table realtime.messages add constraint messages_payload_exclusive
    check (payload is null or binary_payload is null) not valid;
create index messages_inserted_at_topic_index on realtime.messages (inserted_at desc, topic)
    where extension = 'broadcast' and private is true;
alter table realtime.messages enable row level security;
alter table realtime.messages owner to {ADMIN};
grant select, insert, update on realtime.messages to {OWNER}, anon, authenticated, service_role;
grant {ADMIN} to {OWNER};

create function realtime.topic() returns text language sql stable as $$
    select nullif(current_setting('realtime.topic', true), '')::text;
$$;
alter function realtime.topic() owner to {ADMIN};

create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void language plpgsql as $$
declare
    message_id uuid := gen_random_uuid();
begin
    begin
        if not payload ? 'id' then
            payload := jsonb_set(payload, '{{id}}', to_jsonb(message_id));
        end if;
        execute format('set local realtime.topic to %L', topic);
        insert into realtime.messages (id, payload, event, topic, private, extension)
        values (message_id, payload, event, topic, private, 'broadcast');
    exception when others then
        raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
    end;
end
$$;
"""


def install(db: SupabaseDb, *, partitions: bool = True) -> None:
    """Add the realtime schema to `db` (and today's partitions, as the server would)."""
    with db.server.admin() as conn:
        conn.execute(ROLE)
    with psycopg.connect(db.server.dsn(db.name), autocommit=True) as conn:
        conn.execute(SCHEMA)
        if partitions:
            make_partitions(conn)


def make_partitions(conn: psycopg.Connection) -> None:
    """The daily partitions the Realtime server keeps: yesterday to three days ahead."""
    today = dt.datetime.now(dt.UTC).date()
    for days in range(-1, 4):
        day = today + dt.timedelta(days=days)
        name = f"messages_{day:%Y_%m_%d}"
        conn.execute(
            f"create table if not exists realtime.{name} partition of realtime.messages"
            f" for values from ('{day}') to ('{day + dt.timedelta(days=1)}')"
        )
        conn.execute(f"alter table realtime.{name} owner to {ADMIN}")


def messages(db: SupabaseDb, topic: str) -> list[dict]:
    """Every message sent on `topic`, as the Realtime server reads them (no RLS)."""
    with db.connect() as conn:
        return conn.execute(
            "select event, payload, private, extension from realtime.messages"
            " where topic = %s order by inserted_at",
            (topic,),
        ).fetchall()


def may_join(db: SupabaseDb, topic: str, user_id: uuid.UUID | None) -> bool:
    """Realtime's read check for a private channel: may this user (None: anon) receive
    broadcasts on `topic`? A probe row is inserted, read back as the user, rolled back."""
    role = "authenticated" if user_id else "anon"
    claims = json.dumps({"role": role, **({"sub": str(user_id)} if user_id else {})})
    probe = uuid.uuid4()
    with psycopg.connect(db.server.dsn(db.name)) as conn:  # the Realtime server's admin
        conn.execute(
            "insert into realtime.messages (id, topic, extension) values (%s, %s, 'broadcast')",
            (probe, topic),
        )
        conn.execute(
            "select set_config('role', %s, true), set_config('realtime.topic', %s, true),"
            " set_config('request.jwt.claims', %s, true),"
            " set_config('request.jwt.claim.sub', %s, true)",
            (role, topic, claims, str(user_id or "")),
        )
        seen = conn.execute("select id from realtime.messages where id = %s", (probe,)).fetchall()
        conn.rollback()
    return bool(seen)


def rebuild(events: list[tuple[str, dict]], start: str = "") -> str:
    """What a reader who received every live text event shows: events in order of
    attempt, then seq; a reset cuts the text at its offset, a delta writes at its own."""
    text = start
    for event, payload in sorted(events, key=lambda e: (e[1]["attempt"], e[1]["seq"])):
        offset = payload["offset"]
        assert offset <= len(text), f"{event} at {offset} past the end ({len(text)}): a gap"
        text = text[:offset] + (payload.get("text", "") if event == "delta" else "")
    return text
