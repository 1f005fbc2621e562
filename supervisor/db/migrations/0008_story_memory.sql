-- The story's memory (issue 22): what a later chapter is told of the earlier ones.
-- storyworker's own data, so in its own schema (no privileges for PUBLIC, anon or
-- authenticated: migrate revokes them after every migration), and deleted with the
-- story or the chapter it came from. Written in the transaction of the chapter's
-- `finish`, so it is fenced like it.

-- Paragraph-sized passages of finished chapters, searched by relevance when a later
-- chapter's step is written (full-text search, built in: no extension). `config` is
-- the story language's text search configuration, so that words are stemmed as that
-- language stems them.
create table if not exists storyworker.passages (
    chapter_id uuid not null references chapters (id) on delete cascade,
    ordinal integer not null,
    sequence_id uuid not null references sequences (id) on delete cascade,
    chapter_number integer not null,
    char_offset integer not null,
    body text not null,
    config regconfig not null default 'simple',
    search tsvector generated always as (to_tsvector(config, body)) stored,
    primary key (chapter_id, ordinal)
);
-- A step searches one story's earlier chapters: a few thousand rows at most.
create index if not exists passages_story_idx
    on storyworker.passages (sequence_id, chapter_number);

-- One row per story: the rolling arc (a list of {chapter, gist}), the story bible's
-- characters ({name, about, state}) and facts, and `stale_after`: an earlier chapter
-- was rewritten after later ones were written from the old one.
create table if not exists storyworker.story_memory (
    sequence_id uuid primary key references sequences (id) on delete cascade,
    arc jsonb not null default '[]',
    characters jsonb not null default '[]',
    facts jsonb not null default '[]',
    stale_after integer,
    updated_at timestamptz not null default now()
);

-- What each job's prompts held of the story so far, by step (outline, section N):
-- summaries by chapter, passages by chapter and offset, bible entries, tokens per part
-- and what was cut. Nullable, no default: a catalogue-only change.
alter table generation_jobs add column if not exists context jsonb;

-- `context` is a worker column: the app's roles may not write it (0006's guard, with
-- one more column; the rest of the function is unchanged).
create or replace function storyworker.guard_generation_jobs() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    worker_columns constant text[] := array[
        'attempts', 'locked_by', 'heartbeat_at', 'checkpoint', 'run_after', 'started_at',
        'completed_at', 'progress', 'current_step', 'error_message', 'usage', 'created_at',
        'context'];
    owner oid := (select relowner from pg_class where oid = tg_relid);
    col text;
begin
    if pg_has_role(current_user, owner, 'USAGE') then
        return new;
    end if;
    if tg_op = 'INSERT' then
        new.status := 'pending';
        new.attempts := 0;
        new.progress := 0;
        new.created_at := now();
        new.updated_at := now();
        new.locked_by := null;
        new.heartbeat_at := null;
        new.checkpoint := null;
        new.run_after := null;
        new.started_at := null;
        new.completed_at := null;
        new.current_step := null;
        new.error_message := null;
        new.usage := null;
        new.context := null;
        return new;
    end if;
    foreach col in array worker_columns loop
        if (to_jsonb(new) -> col) is distinct from (to_jsonb(old) -> col) then
            raise exception 'role % may not change generation_jobs.%: only storyworker writes it',
                current_user, col
                using errcode = 'insufficient_privilege',
                      hint = 'An app may only set status to ''cancelled''.';
        end if;
    end loop;
    if old.status = 'processing' and (new.chapter_id, new.sequence_id, new.user_id)
            is distinct from (old.chapter_id, old.sequence_id, old.user_id) then
        raise exception 'role % may not change which chapter a processing job writes',
            current_user
            using errcode = 'insufficient_privilege',
                  hint = 'Cancel the job and queue a new one.';
    end if;
    if new.status is distinct from old.status then
        if new.status <> 'cancelled' or old.status not in ('pending', 'processing') then
            raise exception 'role % may not set generation_jobs.status from % to %',
                current_user, old.status, new.status
                using errcode = 'insufficient_privilege',
                      hint = 'An app may only cancel a pending or processing job.';
        end if;
        new.current_step := 'cancelled';
        new.completed_at := now();
        new.heartbeat_at := null;
        new.updated_at := now();
    end if;
    if not isfinite(new.updated_at) then
        new.updated_at := now();
    end if;
    return new;
end
$$;
