-- Every statement storyworker runs, by name: `-- name: NAME`, then at least one line
-- saying what it does. supervisor/db/sql.py loads and runs them; job statements are
-- called only from supervisor/db/queue.py. Statements made on behalf of a claim are
-- fenced: they match only while the job is still `processing` under the same owner
-- and attempt, so a worker that lost its job changes nothing.

-- name: enqueue
-- A new job for an existing chapter; user and sequence are taken from the chapter.
insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences)
select c.sequence_id, c.id, s.user_id, %(preferences)s
  from chapters c join sequences s on s.id = c.sequence_id
 where c.id = %(chapter_id)s
returning id;

-- name: claim
-- The oldest runnable job whose chapter nobody is writing. SKIP LOCKED lets any
-- number of workers on any number of hosts claim side by side without waiting.
-- It also returns what the job needs to start (its chapter, the sequence's owner, and
-- the story so far: the latest earlier summaries (newest first) and which earlier
-- chapters are written, how chapter N-1 ended, the story's memory), saving a round
-- trip per job. Missing chapters are those below this one not in `written`.
-- A session with `storyworker.claim_sequence` set (the demo on a database it was
-- given) claims only that sequence's jobs.
with next as (
    select j.id
      from generation_jobs j
     where j.status = 'pending'
       and (j.run_after is null or j.run_after <= now())
       and (nullif(current_setting('storyworker.claim_sequence', true), '') is null
            or j.sequence_id = current_setting('storyworker.claim_sequence', true)::uuid)
       and not exists (
           select 1 from generation_jobs busy
            where busy.chapter_id = j.chapter_id and busy.status = 'processing')
     order by j.created_at, j.id
     limit 1
       for update skip locked
)
update generation_jobs j
   set status = 'processing', attempts = j.attempts + 1, locked_by = %(owner)s,
       heartbeat_at = now(), started_at = now(), updated_at = now(),
       current_step = 'starting', run_after = null
  from next
 where j.id = next.id
returning j.id, j.locked_by, j.attempts, j.chapter_id, j.sequence_id, j.user_id,
       j.user_preferences, j.checkpoint, j.usage, (
    -- Only what the claim needs: no timestamp the app may have written (an
    -- `infinity` cannot even be loaded), and a NULL content reads as empty.
    select row_to_json(ctx) from (
        select c.sequence_id, c.chapter_number, coalesce(c.content, '') as content, s.user_id,
               s.title as sequence_title, s.premise,
               -- The app's own title: not one the worker wrote from a model's outline.
               case when c.outline is null or c.outline ->> 'title_source' = 'app'
                         or c.title is distinct from c.outline ->> 'title'
                    then nullif(btrim(c.title), '') end as chapter_title,
               (select count(*) from chapters a where a.sequence_id = c.sequence_id)
                   as chapter_count,
               (select min(a.chapter_number) from chapters a
                 where a.sequence_id = c.sequence_id) as first_chapter,
               array(select json_build_object('chapter', p.chapter_number,
                                              'summary', p.summary)
                       from chapters p
                      where p.sequence_id = c.sequence_id
                        and p.chapter_number < c.chapter_number
                        and p.summary is not null and p.summary <> ''
                      order by p.chapter_number desc
                      limit %(summaries)s) as recent_summaries,
               array(select p.chapter_number
                       from chapters p
                      where p.sequence_id = c.sequence_id
                        and p.chapter_number < c.chapter_number
                        and p.summary is not null and p.summary <> ''
                      order by p.chapter_number) as written,
               exists(select 1 from chapters p
                       where p.sequence_id = c.sequence_id
                         and p.chapter_number > c.chapter_number
                         and p.summary is not null and p.summary <> '') as later_written,
               (select right(coalesce(p.content, ''), %(ending_chars)s)
                  from chapters p
                 where p.sequence_id = c.sequence_id
                   and p.chapter_number = c.chapter_number - 1
                   and p.summary is not null and p.summary <> ''
                 order by p.updated_at desc
                 limit 1) as previous_ending,
               m.arc, m.characters, m.facts, m.stale_after
          from chapters c join sequences s on s.id = c.sequence_id
          left join storyworker.story_memory m on m.sequence_id = c.sequence_id
         where c.id = j.chapter_id
    ) ctx
) as chapter_context;

-- name: renew_leases
-- The supervisor's lease renewal: only the jobs its live workers say they hold (owner
-- and job id, from the heartbeat table). A job whose claim reply was lost is held in
-- the database but by no worker: it is not kept alive by its owner's name alone.
update generation_jobs j
   set heartbeat_at = now()
  from unnest(%(owners)s::text[], %(job_ids)s::uuid[]) as held(owner, job_id)
 where j.status = 'processing' and j.locked_by = held.owner and j.id = held.job_id;

-- name: start_chapter
-- The outline is written: the chapter starts over from empty text in the same
-- statement that records the checkpoint, so a retry never sees half of this.
with job as (
    update generation_jobs
       set progress = %(progress)s, current_step = 'outline', checkpoint = %(checkpoint)s,
           usage = coalesce(%(usage)s::jsonb, usage),
           heartbeat_at = now(), updated_at = now()
     where id = %(job_id)s and locked_by = %(owner)s and attempts = %(attempt)s
       and status = 'processing'
    returning chapter_id
), chapter as (
    update chapters c
       set outline = %(outline)s, title = coalesce(nullif(c.title, ''), %(title)s), content = '',
           updated_at = now()
      from job where c.id = job.chapter_id
    returning c.id
)
select (select count(*) from job) as jobs, (select count(*) from chapter) as chapters;

-- name: cut_back
-- Resume: drop the half-written section a dead attempt left after the last checkpoint.
with job as (
    update generation_jobs
       set heartbeat_at = now(), updated_at = now()
     where id = %(job_id)s and locked_by = %(owner)s and attempts = %(attempt)s
       and status = 'processing'
    returning chapter_id
), chapter as (
    update chapters c
       set content = left(coalesce(c.content, ''), %(length)s), updated_at = now()
      from job where c.id = job.chapter_id
       and length(coalesce(c.content, '')) <> %(length)s
    returning c.id
)
select (select count(*) from job) as jobs, (select count(*) from chapter) as chapters;

-- name: append_text
-- Live text while a section streams; not a checkpoint.
with job as (
    update generation_jobs
       set heartbeat_at = now()
     where id = %(job_id)s and locked_by = %(owner)s and attempts = %(attempt)s
       and status = 'processing'
    returning chapter_id
), chapter as (
    update chapters c
       set content = coalesce(c.content, '') || %(text)s, updated_at = now()
      from job where c.id = job.chapter_id
    returning c.id
)
select (select count(*) from job) as jobs, (select count(*) from chapter) as chapters;

-- name: checkpoint
-- A finished section: the rest of its text, progress, step, heartbeat and
-- checkpoint, all in one statement and so one transaction.
with job as (
    update generation_jobs
       set progress = %(progress)s, current_step = %(step)s, checkpoint = %(checkpoint)s,
           usage = coalesce(%(usage)s::jsonb, usage),
           heartbeat_at = now(), updated_at = now()
     where id = %(job_id)s and locked_by = %(owner)s and attempts = %(attempt)s
       and status = 'processing'
    returning chapter_id
), chapter as (
    update chapters c
       set content = coalesce(c.content, '') || %(text)s, updated_at = now()
      from job where c.id = job.chapter_id
    returning c.id
)
select (select count(*) from job) as jobs, (select count(*) from chapter) as chapters;

-- name: finish
-- The job is done: completed, with the chapter's summary, embedding and word count.
with job as (
    update generation_jobs
       set status = 'completed', progress = 100, current_step = 'completed',
           completed_at = now(), heartbeat_at = now(), updated_at = now(),
           error_message = null, checkpoint = %(checkpoint)s,
           usage = coalesce(%(usage)s::jsonb, usage),
           context = coalesce(%(context)s::jsonb, context)
     where id = %(job_id)s and locked_by = %(owner)s and attempts = %(attempt)s
       and status = 'processing'
    returning chapter_id
), chapter as (
    update chapters c
       set summary = %(summary)s, embedding = %(embedding)s,
           embedding_model = %(embedding_model)s, word_count = %(word_count)s,
           updated_at = now()
      from job where c.id = job.chapter_id
    returning c.id
)
select (select count(*) from job) as jobs, (select count(*) from chapter) as chapters;

-- name: recall_passages
-- The passages of a story's earlier chapters most relevant to a query (a section's
-- bullet): full-text search, each query word weighted by how rare it is in the story
-- (inverse document frequency, so a scar outweighs a name on every page), newest
-- chapter first on a tie. One story's passages are a few thousand rows at most.
with story as (
    select p.chapter_number, p.char_offset, p.body, p.search
      from storyworker.passages p
     where p.sequence_id = %(sequence_id)s and p.chapter_number < %(before)s
), terms as (
    select distinct t.lexeme
      from unnest(tsvector_to_array(to_tsvector(%(config)s::regconfig, %(query)s))) as t(lexeme)
), weights as (
    select terms.lexeme,
           ln((select count(*) from story) + 1.0) - ln(count(*) + 0.5) as idf
      from terms join story
        on story.search @@ to_tsquery('simple', quote_literal(terms.lexeme))
     group by terms.lexeme
)
select s.chapter_number, s.char_offset, s.body, sum(w.idf) as score
  from story s join weights w on s.search @@ to_tsquery('simple', quote_literal(w.lexeme))
 group by s.chapter_number, s.char_offset, s.body
 order by score desc, s.chapter_number desc, s.char_offset
 limit %(limit)s;

-- name: store_passages
-- A finished chapter's passages (run in its `finish` transaction), replacing those an
-- earlier version of the chapter left.
with gone as (
    delete from storyworker.passages
     where chapter_id = %(chapter_id)s and ordinal >= cardinality(%(offsets)s::int[])
)
insert into storyworker.passages
       (chapter_id, ordinal, sequence_id, chapter_number, char_offset, body, config)
select %(chapter_id)s, t.ordinal - 1, %(sequence_id)s, %(chapter_number)s, t.char_offset,
       t.body, %(config)s::regconfig
  from unnest(%(offsets)s::int[], %(bodies)s::text[]) with ordinality
       as t(char_offset, body, ordinal)
on conflict (chapter_id, ordinal) do update
   set sequence_id = excluded.sequence_id, chapter_number = excluded.chapter_number,
       char_offset = excluded.char_offset, body = excluded.body, config = excluded.config;

-- name: store_memory
-- The story's memory after a chapter (run in its `finish` transaction): the arc, the
-- story bible, and the first chapter after which the memory is stale.
insert into storyworker.story_memory (sequence_id, arc, characters, facts, stale_after)
values (%(sequence_id)s, %(arc)s, %(characters)s, %(facts)s, %(stale_after)s)
on conflict (sequence_id) do update
   set arc = excluded.arc, characters = excluded.characters, facts = excluded.facts,
       stale_after = excluded.stale_after, updated_at = now();

-- name: fail
-- Retryable failures go back to pending after a delay until the retries are spent;
-- everything else is failed at once. `attempts` already counts this attempt.
update generation_jobs
   set status = case when %(requeue)s then 'pending' else 'failed' end,
       run_after = case when %(requeue)s then now() + make_interval(secs => %(delay)s) end,
       completed_at = case when %(requeue)s then null else now() end,
       current_step = case when %(requeue)s then 'retry scheduled' else 'failed' end,
       locked_by = case when %(requeue)s then null else locked_by end,
       heartbeat_at = null, error_message = %(message)s, updated_at = now(),
       usage = coalesce(%(usage)s::jsonb, usage)
 where id = %(job_id)s and locked_by = %(owner)s and attempts = %(attempt)s
   and status = 'processing'
returning id, status;

-- name: release
-- Shutdown: back to pending at once, without using up a retry; checkpoint kept.
update generation_jobs
   set status = 'pending', attempts = attempts - 1, locked_by = null,
       heartbeat_at = null, run_after = null, current_step = 'released',
       updated_at = now(), usage = coalesce(%(usage)s::jsonb, usage)
 where id = %(job_id)s and locked_by = %(owner)s and attempts = %(attempt)s
   and status = 'processing'
returning id, status;

-- name: rescue
-- Jobs whose holder stopped renewing its lease (its process or host died), and
-- impossible leases: a heartbeat further in the future than one lease (`infinity`
-- included) was not written by a worker. Scoped like `claim` by
-- `storyworker.claim_sequence`.
with expired as (
    select id
      from generation_jobs
     where status = 'processing'
       and (nullif(current_setting('storyworker.claim_sequence', true), '') is null
            or sequence_id = current_setting('storyworker.claim_sequence', true)::uuid)
       and (heartbeat_at is null or heartbeat_at < now() - make_interval(secs => %(lease)s)
            or heartbeat_at > now() + make_interval(secs => %(lease)s))
       for update skip locked
)
update generation_jobs j
   set status = case when j.attempts > %(max_retries)s then 'failed' else 'pending' end,
       completed_at = case when j.attempts > %(max_retries)s then now() end,
       current_step = case when j.attempts > %(max_retries)s then 'failed' else 'rescued' end,
       error_message = format(
           'rescued: %%s stopped renewing its lease during attempt %%s (last heartbeat %%s)%%s',
           coalesce(j.locked_by, 'a worker'), j.attempts,
           coalesce(case when isfinite(j.heartbeat_at)
                         then to_char(j.heartbeat_at, 'YYYY-MM-DD"T"HH24:MI:SSOF')
                         else j.heartbeat_at::text end, 'never'),
           case when j.attempts > %(max_retries)s then '; no retries left' else '' end),
       locked_by = null, heartbeat_at = null, run_after = null, updated_at = now()
  from expired
 where j.id = expired.id
returning j.id, j.status;

-- name: get
-- One job, every column.
select * from generation_jobs where id = %(job_id)s;

-- name: list
-- The newest jobs first, each filter optional: status, user, chapter, and `since`
-- (seconds): jobs that ended that recently, or that have not ended and were created
-- that recently. `jobs retry` and `jobs cancel --status` match jobs the same way.
select * from generation_jobs
 where (%(status)s::text is null or status = %(status)s)
   and (%(user_id)s::uuid is null or user_id = %(user_id)s)
   and (%(chapter_id)s::uuid is null or chapter_id = %(chapter_id)s)
   and (%(since)s::float8 is null
        or coalesce(completed_at, created_at) >= now() - make_interval(secs => %(since)s))
 order by created_at desc, id
 limit %(limit)s;

-- name: cancel
-- The operator cancels a pending or processing job; its worker notices at its next write.
update generation_jobs
   set status = 'cancelled', current_step = 'cancelled', completed_at = now(),
       heartbeat_at = null, updated_at = now()
 where id = %(job_id)s and status in ('pending', 'processing')
returning *;

-- name: retry
-- A failed or cancelled job back to pending with fresh retries; `fresh` drops the checkpoint.
update generation_jobs
   set status = 'pending', attempts = 0, run_after = null, locked_by = null,
       heartbeat_at = null, completed_at = null, error_message = null,
       current_step = 'queued',
       checkpoint = case when %(fresh)s then null else checkpoint end,
       progress = case when %(fresh)s then 0 else progress end,
       updated_at = now()
 where id = %(job_id)s and status in ('failed', 'cancelled')
returning *;

-- name: retry_matching
-- Bulk `jobs retry --status S`: every failed or cancelled job the filter matches (as
-- `list` does) back to pending with fresh retries, as `retry` does one.
update generation_jobs
   set status = 'pending', attempts = 0, run_after = null, locked_by = null,
       heartbeat_at = null, completed_at = null, error_message = null,
       current_step = 'queued',
       checkpoint = case when %(fresh)s then null else checkpoint end,
       progress = case when %(fresh)s then 0 else progress end,
       updated_at = now()
 where (%(status)s::text is null or status = %(status)s)
   and (%(user_id)s::uuid is null or user_id = %(user_id)s)
   and (%(chapter_id)s::uuid is null or chapter_id = %(chapter_id)s)
   and (%(since)s::float8 is null
        or coalesce(completed_at, created_at) >= now() - make_interval(secs => %(since)s))
   and status in ('failed', 'cancelled')
returning id;

-- name: cancel_matching
-- Bulk `jobs cancel --status S`: every pending or processing job the filter matches
-- (as `list` does) cancelled, as `cancel` does one.
update generation_jobs
   set status = 'cancelled', current_step = 'cancelled', completed_at = now(),
       heartbeat_at = null, updated_at = now()
 where (%(status)s::text is null or status = %(status)s)
   and (%(user_id)s::uuid is null or user_id = %(user_id)s)
   and (%(chapter_id)s::uuid is null or chapter_id = %(chapter_id)s)
   and (%(since)s::float8 is null
        or coalesce(completed_at, created_at) >= now() - make_interval(secs => %(since)s))
   and status in ('pending', 'processing')
returning id;

-- name: matching
-- `--dry-run` of a bulk retry or cancel: the ids the filter matches (as `list` does).
select id from generation_jobs
 where (%(status)s::text is null or status = %(status)s)
   and (%(user_id)s::uuid is null or user_id = %(user_id)s)
   and (%(chapter_id)s::uuid is null or chapter_id = %(chapter_id)s)
   and (%(since)s::float8 is null
        or coalesce(completed_at, created_at) >= now() - make_interval(secs => %(since)s))
 order by created_at, id;

-- name: last_hour
-- `storyworker status`: jobs completed and failed in the last hour.
select count(*) filter (where status = 'completed') as completed,
       count(*) filter (where status = 'failed') as failed
  from generation_jobs
 where status in ('completed', 'failed') and completed_at >= now() - interval '1 hour';

-- name: queue_stats
-- Jobs per status (every status, zeros included) and how long the oldest runnable job
-- has waited since it became runnable: its insert, its retry delay's end (run_after),
-- or the moment it was put back to pending (retried, released, rescued: the worker's
-- own current_step says so, and updated_at is when).
select s.status, coalesce(c.n, 0) as jobs,
       (select extract(epoch from now() - min(greatest(
                   created_at, run_after,
                   case when current_step in ('queued', 'released', 'rescued')
                        then updated_at end)))
          from generation_jobs
         where status = 'pending' and (run_after is null or run_after <= now())
           and isfinite(created_at)
       ) as oldest_runnable_age
  from unnest(array['pending', 'processing', 'completed', 'failed', 'cancelled']) as s(status)
  left join (select status, count(*) as n from generation_jobs group by status) c
    on c.status = s.status;

-- name: rate_limit_init
-- Create a limiter's row the first time a worker uses it (or again, if it vanished).
insert into storyworker.rate_limits (name, tat) values (%(name)s, clock_timestamp())
on conflict (name) do nothing;

-- name: rate_limit_take
-- GCRA: a call may go when the theoretical arrival time has come; taking it pushes
-- that time one emission interval on. One single-row UPDATE, so every worker on
-- every host shares one limit. A time further ahead than any worker ever sets it
-- (two intervals, or a minute) was not written by a worker: it starts over from now.
update storyworker.rate_limits
   set tat = case when tat > clock_timestamp() + make_interval(secs => greatest(%(interval)s * 2, 60))
                  then clock_timestamp()
                  else greatest(tat, clock_timestamp()) end
             + make_interval(secs => %(interval)s)
 where name = %(name)s
   and (tat <= clock_timestamp()
        or tat > clock_timestamp() + make_interval(secs => greatest(%(interval)s * 2, 60)))
returning 0 as wait;

-- name: rate_limit_wait
-- Seconds until the limiter allows the next call (no row: none, it is created again).
select least(greatest(extract(epoch from tat - clock_timestamp()), 0), 60)::float8 as wait
  from storyworker.rate_limits where name = %(name)s and isfinite(tat);

-- name: rate_limit_state
-- `storyworker status`: each limiter and the seconds until it allows the next call.
select name, greatest(extract(epoch from tat - clock_timestamp()), 0)::float8 as wait
  from storyworker.rate_limits where isfinite(tat) order by name;

-- name: registry_beat
-- A supervisor's row in the process registry, inserted the first time (or again after
-- it was pruned while the database was out of reach) and refreshed with its lease
-- renewal: heartbeat, state, provider pause and its workers. The same statement
-- prunes rows dead for ten of their leases (five minutes at least), and dead rows of
-- this host and pid (the process that had this pid before, on a restarted container).
with pruned as (
    delete from storyworker.supervisors s
     where s.id <> %(id)s
       and (s.heartbeat_at < now() - make_interval(secs => greatest(s.lease_seconds * 10, 300))
            or (s.host = %(host)s and s.pid = %(pid)s
                and s.heartbeat_at < now() - make_interval(secs => s.lease_seconds)))
)
insert into storyworker.supervisors as s
       (id, host, pid, version, started_at, heartbeat_at, lease_seconds, concurrency,
        provider, state, paused, paused_reason, workers)
values (%(id)s, %(host)s, %(pid)s, %(version)s, %(started_at)s, now(), %(lease)s,
        %(concurrency)s, %(provider)s, %(state)s, %(paused)s, %(paused_reason)s, %(workers)s)
on conflict (id) do update
   set heartbeat_at = now(), lease_seconds = excluded.lease_seconds,
       concurrency = excluded.concurrency, provider = excluded.provider,
       state = excluded.state, paused = excluded.paused,
       paused_reason = excluded.paused_reason, workers = excluded.workers;

-- name: registry_leave
-- A supervisor that exits cleanly takes its row out of the registry.
delete from storyworker.supervisors where id = %(id)s;

-- name: registry_list
-- Every registered supervisor for `storyworker status`: its heartbeat's age by the
-- database's clock, and `dead` for a state when that is older than its lease.
select host, pid, version, started_at, concurrency, provider, paused, paused_reason,
       workers, extract(epoch from now() - heartbeat_at)::float8 as heartbeat_age,
       case when heartbeat_at < now() - make_interval(secs => lease_seconds) then 'dead'
            else state end as state
  from storyworker.supervisors
 order by host, started_at, pid;

-- name: release_owner
-- The supervisor's backstop when it stopped a worker on purpose (shutdown, reload,
-- scale-down) and the worker could not release its own job.
update generation_jobs
   set status = 'pending', attempts = greatest(attempts - 1, 0), locked_by = null,
       heartbeat_at = null, run_after = null, current_step = 'released', updated_at = now()
 where status = 'processing' and locked_by = %(owner)s
returning id, status;

-- name: rescue_owner
-- A worker died under its job (crash, kill -9, stuck and killed): the attempt counts,
-- so a job that kills its worker every time ends `failed` instead of looping.
update generation_jobs
   set status = case when attempts > %(max_retries)s then 'failed' else 'pending' end,
       completed_at = case when attempts > %(max_retries)s then now() end,
       current_step = case when attempts > %(max_retries)s then 'failed' else 'rescued' end,
       error_message = %(reason)s
           || case when attempts > %(max_retries)s then '; no retries left' else '' end,
       locked_by = null, heartbeat_at = null, run_after = null, updated_at = now()
 where status = 'processing' and locked_by = %(owner)s
returning id, status;

-- name: listen_jobs
-- An idle worker waits for new jobs (the insert and requeue triggers NOTIFY here).
listen generation_jobs;

-- name: unlisten_jobs
-- A worker that claimed a job stops listening: PostgreSQL wakes every listener for
-- every NOTIFY, and each wake-up costs the backend a transaction.
unlisten generation_jobs;

-- name: notify
-- A NOTIFY from another connection: the probe that proves LISTEN is delivered.
select pg_notify(%(channel)s, %(payload)s);

-- name: listen_progress
-- `watch` and the demo follow jobs' progress (the progress trigger NOTIFYs here).
listen generation_progress;

-- name: progress
-- What a progress bar shows for each of the given jobs.
select id, status, progress, current_step, error_message
  from generation_jobs where id = any(%(job_ids)s);

-- name: probe_timeout
-- Health probes bound every statement they run, so a stuck database cannot hold them.
select set_config('statement_timeout', %(timeout)s, false);

-- name: migration_lock
-- Migrations run one at a time, whichever host starts them (a session advisory lock).
select pg_advisory_lock(%(key)s);

-- name: migration_unlock
-- Let the next migrating session in.
select pg_advisory_unlock(%(key)s);

-- name: migration_lock_timeout
-- One migration's DDL waits at most this long behind running workers' row locks.
select set_config('lock_timeout', %(timeout)s, true);

-- name: migration_search_path
-- A migration creates the app's objects where the search path puts them, but never in
-- storyworker's own schema (which "$user" names when the role is called storyworker).
select set_config('search_path', coalesce((
    select string_agg(quote_ident(s), ', ' order by n)
      from unnest(current_schemas(false)) with ordinality as t(s, n)
     where s <> 'storyworker'), ''), true);

-- name: migrations_table
-- Where the bookkeeping table is: `current` in storyworker's schema, `legacy` in the
-- search path where versions before 0005 kept it (both null: never migrated).
select to_regclass('storyworker.migrations')::text as current,
       to_regclass('storyworker_migrations')::text as legacy;

-- name: migrations_bootstrap
-- In the transaction of each migration (so a failed first attempt leaves nothing):
-- storyworker's schema and its bookkeeping table, moved there with its rows from
-- where versions before 0005 kept it, or created.
do $$
declare
    legacy regclass := to_regclass('storyworker_migrations');
begin
    create schema if not exists storyworker;
    if to_regclass('storyworker.migrations') is not null then
        return;
    end if;
    if legacy is not null then
        execute format('alter table %%s set schema storyworker', legacy);
        alter table storyworker.storyworker_migrations rename to migrations;
    else
        create table storyworker.migrations (
            version text primary key,
            applied_at timestamptz not null default now()
        );
    end if;
end
$$;

-- name: migrations_lockdown
-- After each migration, in its transaction: nothing in storyworker's schema for
-- PUBLIC, anon or authenticated (whatever default privileges granted).
do $$
declare
    grantee text;
begin
    foreach grantee in array array['public', 'anon', 'authenticated'] loop
        if grantee = 'public' or exists (select 1 from pg_roles where rolname = grantee) then
            execute format('revoke all on schema storyworker from %%s', grantee);
            execute format('revoke all on all tables in schema storyworker from %%s', grantee);
            execute format('revoke all on all sequences in schema storyworker from %%s', grantee);
            execute format('revoke all on all functions in schema storyworker from %%s', grantee);
        end if;
    end loop;
end
$$;

-- name: migrations_applied
-- Versions recorded as applied.
select version from storyworker.migrations;

-- name: migrations_applied_legacy
-- Versions recorded as applied by a version before 0005, which kept them in public.
select version from storyworker_migrations;

-- name: migration_record
-- Record one migration as applied, in the transaction that applied it.
insert into storyworker.migrations (version) values (%(version)s);

-- name: app_tables_shape
-- The columns of the app's tables that already exist, for the shape check before
-- migrating (migrations add what is missing, but cannot fix a column they need).
select c.relname as table_name, a.attname as column_name, not a.attnotnull as nullable
  from pg_class c
  join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
 where c.oid in (to_regclass('sequences'), to_regclass('chapters'),
                 to_regclass('generation_jobs'));

-- name: worker_role
-- Who the worker is, and the app tables row level security would filter for it:
-- `trusted` when it has its owner's privileges on generation_jobs (the guard lets
-- it write worker columns).
select current_user as role, (select rolname from pg_roles where oid = c.relowner) as owner,
       pg_has_role(current_user, c.relowner, 'USAGE') as trusted,
       array(select t from unnest(array['generation_jobs', 'chapters', 'sequences']) t
              where to_regclass(t) is not null and row_security_active(to_regclass(t))
             ) as blinded
  from pg_class c where c.oid = to_regclass('generation_jobs');

-- name: demo_user
-- The demo's user (on plain PostgreSQL, the minimal auth.users that migrate made).
insert into auth.users (id) values (gen_random_uuid()) returning id;

-- name: demo_sequence
-- The demo's story.
insert into sequences (user_id, title, premise)
values (%(user_id)s, %(title)s, %(premise)s) returning id;

-- name: demo_chapter
-- One empty chapter of the demo's story.
insert into chapters (sequence_id, chapter_number, title)
values (%(sequence_id)s, %(number)s, %(title)s) returning id;

-- name: demo_excerpt
-- The finished chapter the demo quotes at the end.
select c.title, c.content, c.word_count
  from generation_jobs j join chapters c on c.id = j.chapter_id
 where j.id = %(job_id)s;

-- name: demo_cleanup
-- The demo, on a database it was given, deletes its user: its story, chapters and
-- jobs go with it (on delete cascade).
delete from auth.users where id = %(user_id)s;
