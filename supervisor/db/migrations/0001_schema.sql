-- The app's tables as the contract describes them. Everything is "if not exists" so
-- that a Supabase database that already holds the app's tables only gains what is
-- missing: nothing is dropped, rewritten or re-typed.

-- Plain PostgreSQL has no Supabase auth schema; give it the minimal table the
-- foreign keys point at. On Supabase auth.users exists and is left alone.
do $$
begin
    if to_regclass('auth.users') is null then
        create schema if not exists auth;
        create table auth.users (id uuid primary key);
    end if;
end
$$;

create table if not exists sequences (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references auth.users (id) on delete cascade,
    title text not null default '',
    premise text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
alter table sequences add column if not exists premise text;
alter table sequences add column if not exists created_at timestamptz not null default now();
alter table sequences add column if not exists updated_at timestamptz not null default now();

create table if not exists chapters (
    id uuid primary key default gen_random_uuid(),
    sequence_id uuid not null references sequences (id) on delete cascade,
    chapter_number integer not null,
    title text,
    content text not null default '',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
alter table chapters add column if not exists title text;
alter table chapters add column if not exists outline jsonb;
alter table chapters add column if not exists summary text;
alter table chapters add column if not exists embedding real[];
alter table chapters add column if not exists embedding_model text;
alter table chapters add column if not exists word_count integer;
alter table chapters add column if not exists created_at timestamptz not null default now();
alter table chapters add column if not exists updated_at timestamptz not null default now();
create index if not exists chapters_sequence_number_idx on chapters (sequence_id, chapter_number);

-- The seed's table, exactly as the app created it.
create table if not exists generation_jobs (
    id uuid primary key default gen_random_uuid(),
    sequence_id uuid not null references sequences (id) on delete cascade,
    chapter_id uuid references chapters (id) on delete cascade,
    user_id uuid not null references auth.users (id) on delete cascade,
    user_preferences jsonb not null,
    status text not null default 'pending'
        check (status in ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    current_step text,
    progress integer default 0 check (progress >= 0 and progress <= 100),
    error_message text,
    created_at timestamptz default now(),
    started_at timestamptz,
    completed_at timestamptz,
    updated_at timestamptz default now()
);
create index if not exists idx_generation_jobs_status on generation_jobs (status);
create index if not exists idx_generation_jobs_user_id on generation_jobs (user_id);

-- The worker's columns. Adding a column with a constant default is a catalogue-only
-- change since PostgreSQL 11: no table rewrite, existing rows keep every value.
alter table generation_jobs add column if not exists attempts integer not null default 0;
alter table generation_jobs add column if not exists run_after timestamptz;
alter table generation_jobs add column if not exists locked_by text;
alter table generation_jobs add column if not exists heartbeat_at timestamptz;
alter table generation_jobs add column if not exists checkpoint jsonb;

-- Claim order and lease expiry are the two hot queries; both index only the few rows
-- they look at.
create index if not exists generation_jobs_runnable_idx
    on generation_jobs (created_at, id) where status = 'pending';
create index if not exists generation_jobs_lease_idx
    on generation_jobs (heartbeat_at) where status = 'processing';

-- Two jobs for one chapter must never write it at the same time (a double click in
-- the app inserts two). The claim skips a job whose chapter is being written; this
-- index makes the database itself refuse the rare race between two claims.
create unique index if not exists generation_jobs_one_writer_per_chapter_idx
    on generation_jobs (chapter_id) where status = 'processing';
