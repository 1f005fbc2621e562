-- Every statement storyworker runs, by name: `-- name: NAME`, then at least one line
-- saying what it does. supervisor/db/sql.py loads and runs them; job statements are
-- called only from supervisor/db/queue/. Statements made on behalf of a claim are
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
-- Claim the next runnable job: storyworker.claim_next (migration 0011) finds it and
-- locks it by the rule of README "Claim order" (a story's chapters one at a time, in
-- order; then priority, the user with the fewest jobs in flight, the oldest;
-- `max_per_user` leaves out users at the cap). The unique index
-- generation_jobs_one_writer_per_story_idx refuses a second writer for one story that
-- two snapshots could let through (the caller claims again).
-- It also returns what the job needs to start (its chapter, the sequence's owner, and
-- the story so far: the latest earlier summaries (newest first) and which earlier
-- chapters are written, how chapter N-1 ended, the story's memory), saving a round
-- trip per job. Missing chapters are those below this one not in `written`.
with next as (
    select storyworker.claim_next(%(max_per_user)s::int) as id
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
               -- The story's default preferences, merged under the job's own.
               s.preferences as story_preferences,
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

-- name: claim_user_lock
-- MAX_JOBS_PER_USER: claims for one user, on every host, count its jobs in flight one
-- at a time (a lock held to the end of the claim's transaction).
select pg_advisory_xact_lock(21, hashtext(%(user_id)s::text));

-- name: user_in_flight
-- MAX_JOBS_PER_USER: one user's jobs in flight, the claim in hand included.
select count(*)::int as running
  from generation_jobs where user_id = %(user_id)s and status = 'processing';

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

-- name: note_unknown_preferences
-- The job's preferences (or its story's) held keys no field reads: named on the job,
-- under `context`'s "unknown_preferences", not silently dropped. `noted` is false when
-- an earlier attempt named the same keys already (the worker logs them once a job).
update generation_jobs
   set context = coalesce(context, '{}'::jsonb)
                 || jsonb_build_object('unknown_preferences', %(keys)s::jsonb)
  from (select context -> 'unknown_preferences' as keys
          from generation_jobs where id = %(job_id)s) as before
 where id = %(job_id)s and locked_by = %(owner)s and attempts = %(attempt)s
   and status = 'processing'
returning 1 as jobs, before.keys is distinct from %(keys)s::jsonb as noted;

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
           context = coalesce(context || %(context)s::jsonb, %(context)s::jsonb, context)
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

-- name: memory_staleness
-- Whether a job's chapter was written from a story memory an earlier chapter's rewrite
-- has since made stale: the chapter's number and the story's `stale_after`.
select c.chapter_number, m.stale_after
  from generation_jobs j
  join chapters c on c.id = j.chapter_id
  left join storyworker.story_memory m on m.sequence_id = j.sequence_id
 where j.id = %(job_id)s;

-- name: recall_passages
-- For each query (a section's bullet), the passages of a story's earlier chapters most
-- relevant to it: full-text search, each query word weighted by how rare it is in the
-- story (inverse document frequency, so a scar outweighs a name on every page), newest
-- chapter first on a tie. One statement for every query of a chapter; one story's
-- passages are a few thousand rows at most.
with story as (
    select p.chapter_number, p.char_offset, p.body, p.search
      from storyworker.passages p
     where p.sequence_id = %(sequence_id)s and p.chapter_number < %(before)s
), queries as (
    select q.ord, q.query
      from unnest(%(queries)s::text[]) with ordinality as q(query, ord)
), terms as (
    select distinct queries.ord, t.lexeme
      from queries,
           unnest(tsvector_to_array(to_tsvector(%(config)s::regconfig, queries.query)))
               as t(lexeme)
), weights as (
    select terms.ord, terms.lexeme,
           ln((select count(*) from story) + 1.0) - ln(count(*) + 0.5) as idf
      from terms join story
        on story.search @@ to_tsquery('simple', quote_literal(terms.lexeme))
     group by terms.ord, terms.lexeme
), scored as (
    select w.ord, s.chapter_number, s.char_offset, s.body, sum(w.idf) as score
      from story s join weights w on s.search @@ to_tsquery('simple', quote_literal(w.lexeme))
     group by w.ord, s.chapter_number, s.char_offset, s.body
), ranked as (
    select scored.*, row_number() over (
               partition by ord order by score desc, chapter_number desc, char_offset) as rank
      from scored
)
select ord, chapter_number, char_offset, body from ranked
 where rank <= %(limit)s
 order by ord, rank;

-- name: store_passages
-- A finished chapter's passages (run in its `finish` transaction), replacing those an
-- earlier version of the chapter left, each with its embedding when there is one
-- (`vectors`: one real[] literal per passage, or none at all).
with gone as (
    delete from storyworker.passages
     where chapter_id = %(chapter_id)s and ordinal >= cardinality(%(offsets)s::int[])
)
insert into storyworker.passages
       (chapter_id, ordinal, sequence_id, chapter_number, char_offset, body, config,
        embedding, embedding_model)
select %(chapter_id)s, t.ordinal - 1, %(sequence_id)s, %(chapter_number)s, t.char_offset,
       t.body, %(config)s::regconfig, t.vector::real[],
       case when t.vector is not null then %(embedding_model)s::text end
  from unnest(%(offsets)s::int[], %(bodies)s::text[], %(vectors)s::text[]) with ordinality
       as t(char_offset, body, vector, ordinal)
 where t.body is not null
on conflict (chapter_id, ordinal) do update
   set sequence_id = excluded.sequence_id, chapter_number = excluded.chapter_number,
       char_offset = excluded.char_offset, body = excluded.body, config = excluded.config,
       embedding = excluded.embedding, embedding_model = excluded.embedding_model;

-- name: vector_extension
-- The schema the pgvector extension is installed in (Supabase: `extensions`); no row
-- where it is not installed.
select n.nspname as schema
  from pg_extension e join pg_namespace n on n.oid = e.extnamespace
 where e.extname = 'vector';

-- name: recall_similar
-- For each query vector (a section's bullet, embedded), the passages of a story's
-- earlier chapters nearest to it by cosine distance, ranked by pgvector in the database
-- ({schema} is pgvector's schema, filled in by the caller). Only vectors of the
-- query's model and size are compared; a story's passages are a few thousand rows at
-- most, so the ranking reads them all, with no vector index to keep up to date.
with queries as (
    select q.ord, q.vec::real[]::{schema}.vector as vec
      from unnest(%(vectors)s::text[]) with ordinality as q(vec, ord)
)
select queries.ord, p.chapter_number, p.char_offset, p.body
  from queries cross join lateral (
        select s.chapter_number, s.char_offset, s.body,
               s.embedding::{schema}.vector operator({schema}.<=>) queries.vec as distance
          from storyworker.passages s
         where s.sequence_id = %(sequence_id)s and s.chapter_number < %(before)s
           and s.embedding_model = %(model)s and cardinality(s.embedding) = %(dimensions)s
         order by distance, s.chapter_number desc, s.char_offset
         limit %(limit)s
       ) p
 order by queries.ord, p.distance, p.chapter_number desc, p.char_offset;

-- name: passage_vectors
-- The embeddings of a story's earlier passages made by one model, newest chapters
-- first, at most `limit` of them: what the worker ranks itself where pgvector is not
-- installed.
select chapter_number, char_offset, body, embedding
  from storyworker.passages
 where sequence_id = %(sequence_id)s and chapter_number < %(before)s
   and embedding_model = %(model)s and cardinality(embedding) = %(dimensions)s
 order by chapter_number desc, ordinal
 limit %(limit)s;

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
-- everything else is failed at once. `attempts` already counts this attempt. With
-- `cut_to`, the chapter is cut back to that length (its last checkpoint) in the same
-- statement: the reader never keeps half a section of a failed attempt.
with job as (
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
    returning id, status, chapter_id
), chapter as (
    update chapters c
       set content = left(coalesce(c.content, ''), %(cut_to)s::int), updated_at = now()
      from job
     where %(cut_to)s::int is not null and c.id = job.chapter_id
       and length(coalesce(c.content, '')) > %(cut_to)s::int
    returning c.id
)
select id, status from job;

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
            or sequence_id = any(string_to_array(
                current_setting('storyworker.claim_sequence', true), ',')::uuid[]))
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
-- The newest jobs first, each filter optional: status, user, story (sequence), chapter,
-- and `since` (seconds): jobs that ended that recently, or that have not ended and were
-- created that recently. `jobs retry` and `jobs cancel --status` match jobs the same way.
select * from generation_jobs
 where (%(status)s::text is null or status = %(status)s)
   and (%(user_id)s::uuid is null or user_id = %(user_id)s)
   and (%(sequence_id)s::uuid is null or sequence_id = %(sequence_id)s)
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

-- name: story_waits
-- `storyworker status`: pending jobs held back by their story (an earlier chapter live,
-- or another chapter being written), and the age of the oldest of them.
select count(*) as waiting,
       extract(epoch from now() - min(j.created_at) filter (where isfinite(j.created_at)))
           as oldest_wait
  from generation_jobs j
  left join chapters jc on jc.id = j.chapter_id
 where j.status = 'pending'
   and exists (
       select 1
         from generation_jobs s
         left join chapters sc on sc.id = s.chapter_id
        where s.sequence_id = j.sequence_id and s.id <> j.id
          and s.status in ('pending', 'processing')
          and (s.status = 'processing' or sc.chapter_number < jc.chapter_number));

-- name: user_backlog
-- `storyworker status`: the users with the most jobs pending, with their jobs in flight
-- and the age of their oldest pending job.
select user_id,
       count(*) filter (where status = 'pending') as pending,
       count(*) filter (where status = 'processing') as processing,
       extract(epoch from now() - min(created_at) filter (
           where status = 'pending' and isfinite(created_at))) as oldest_pending
  from generation_jobs
 where status in ('pending', 'processing')
 group by user_id
 order by pending desc, processing desc, user_id
 limit %(limit)s;

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

-- name: demo_story_order
-- The demo's report: one story's jobs in the order they started, with their chapters.
select c.chapter_number, j.started_at, j.completed_at
  from generation_jobs j join chapters c on c.id = j.chapter_id
 where j.sequence_id = %(sequence_id)s
 order by j.started_at, c.chapter_number;

-- name: demo_cleanup
-- The demo, on a database it was given, deletes its user: its story, chapters and
-- jobs go with it (on delete cascade).
delete from auth.users where id = %(user_id)s;

-- name: live_send
-- LIVE_TEXT=broadcast: one event of live text (a delta, or a reset) on the chapter's
-- private Realtime topic `chapter:<id>`, with Supabase's realtime.send, only while the
-- claim holds. The job row is locked FOR SHARE first, so a re-claim or a cancel cannot
-- commit between the check and the send; nothing else is written. realtime.send turns
-- its own failures into WARNINGs, which the caller counts.
with job as materialized (
    select chapter_id from generation_jobs
     where id = %(job_id)s and locked_by = %(owner)s and attempts = %(attempt)s
       and status = 'processing'
       for share
)
select 1 as jobs, realtime.send(%(payload)s::jsonb, %(event)s, 'chapter:' || job.chapter_id, true)
  from job;

-- name: live_text_check
-- Whether this role may send live text over Realtime Broadcast: Supabase's
-- realtime.send(jsonb, text, text, boolean) exists, the role may use its schema and
-- execute it, and may insert into realtime.messages (realtime.send runs as its caller).
-- Read from the catalogs: to_regprocedure would raise without USAGE on the schema.
with fn as (
    select p.oid, p.pronamespace from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'realtime' and p.proname = 'send'
       and oidvectortypes(p.proargtypes) = 'jsonb, text, text, boolean'
), messages as (
    select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'realtime' and c.relname = 'messages'
)
select exists (select 1 from fn) as found,
       coalesce((select has_schema_privilege(fn.pronamespace, 'USAGE')
                        and has_function_privilege(fn.oid, 'EXECUTE') from fn), false)
           as may_execute,
       coalesce((select has_table_privilege(messages.oid, 'INSERT') from messages), false)
           as may_insert;

-- name: live_text_probe
-- One event sent inside a transaction the caller rolls back, so it never reaches
-- Realtime (whose own authorization check inserts and rolls back the same way): any
-- WARNING it raises is a failure realtime.send would swallow on every delta.
select realtime.send('{"probe": true}'::jsonb, 'storyworker-probe', 'storyworker:probe', true);

-- Dashboard (`storyworker dashboard`, supervisor/db/dashboard.py): read-only views
-- that stay fast at millions of jobs. Its actions are `retry` and `cancel` above.

-- name: dashboard_session
-- A dashboard connection bounds every statement it runs: a page never holds the
-- database for long.
select set_config('statement_timeout', %(timeout)s, false);

-- name: dashboard_status_counts
-- Overview: jobs per status, counted exactly up to `cap` (an index-only scan per
-- status), with the planner's estimate beside each (pg_class.reltuples scaled to the
-- table's current size, times pg_stats' share of that status) for those above it.
with rel as (
    select c.oid, n.nspname, c.relname,
           case when c.reltuples < 0 then null
                when c.relpages > 0
                then c.reltuples / c.relpages
                     * (pg_relation_size(c.oid) / current_setting('block_size')::int)
                else c.reltuples end as total
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.oid = to_regclass('generation_jobs')
), shares as (
    select v.status, v.share
      from rel
      join pg_stats s on s.schemaname = rel.nspname and s.tablename = rel.relname
                     and s.attname = 'status',
           unnest(s.most_common_vals::text::text[], s.most_common_freqs) as v(status, share)
)
select s.status,
       (select count(*) from (select 1 from generation_jobs j
                               where j.status = s.status limit %(cap)s + 1) capped) as counted,
       round((select total from rel) * coalesce(sh.share, 0))::bigint as estimated
  from unnest(array['pending', 'processing', 'completed', 'failed', 'cancelled']) as s(status)
  left join shares sh on sh.status = s.status;

-- name: dashboard_oldest_pending
-- Overview: seconds the oldest runnable pending job has waited (the runnable index).
select extract(epoch from now() - min(created_at))::float8 as age
  from generation_jobs
 where status = 'pending' and (run_after is null or run_after <= now())
   and isfinite(created_at);

-- name: dashboard_throughput
-- Overview chart: jobs that ended (completed, failed) per bucket of `step` seconds
-- over the last `window` seconds, bucket 0 the oldest (the completed_at index).
select floor(extract(epoch from completed_at - (now() - make_interval(secs => %(window)s)))
             / %(step)s)::int as bucket,
       count(*) filter (where status = 'completed') as completed,
       count(*) filter (where status = 'failed') as failed
  from generation_jobs
 where completed_at >= now() - make_interval(secs => %(window)s) and completed_at <= now()
   and status in ('completed', 'failed')
 group by 1;

-- name: dashboard_latency
-- Overview chart: queue latency (enqueue to the latest start) of the jobs that started
-- in each bucket, median and 95th percentile in seconds. Every job that started in the
-- window has ended since (completed_at is not before started_at) or still runs.
with started as (
    select created_at, started_at from generation_jobs
     where completed_at >= now() - make_interval(secs => %(window)s)
    union all
    select created_at, started_at from generation_jobs where status = 'processing'
)
select floor(extract(epoch from started_at - (now() - make_interval(secs => %(window)s)))
             / %(step)s)::int as bucket,
       count(*) as jobs,
       percentile_cont(0.5) within group (
           order by extract(epoch from started_at - created_at))::float8 as p50,
       percentile_cont(0.95) within group (
           order by extract(epoch from started_at - created_at))::float8 as p95
  from started
 where started_at >= now() - make_interval(secs => %(window)s) and started_at <= now()
   and isfinite(created_at) and started_at >= created_at
 group by 1;

-- name: dashboard_waiting
-- Overview: pending jobs that wait for an earlier chapter of their story (one that is
-- pending or processing), oldest first, at most `limit`, with how many in all. Only
-- stories with two live jobs or more can hold one back, so only their chapters are read.
with live as (
    -- From the live jobs' index alone: no table read.
    select j.id, j.sequence_id, j.chapter_id, j.status, j.created_at
      from generation_jobs j where j.status in ('pending', 'processing')
), crowded as (
    select sequence_id from live group by sequence_id having count(*) > 1
), numbered as (
    select l.*, c.chapter_number,
           min(c.chapter_number) over (partition by l.sequence_id) as first_live
      from live l join crowded using (sequence_id) join chapters c on c.id = l.chapter_id
), waiting as (
    select n.*, count(*) over () as total
      from numbered n
     where n.status = 'pending' and n.chapter_number > n.first_live
)
select w.id, w.sequence_id, w.chapter_number, w.first_live as blocked_by, w.total,
       s.title as story_title
  from (select * from waiting order by created_at, id limit %(limit)s) w
  join sequences s on s.id = w.sequence_id
 order by w.created_at, w.id;

-- name: dashboard_backlog
-- Overview: the users with the most jobs pending or processing.
select user_id, count(*) filter (where status = 'pending') as pending,
       count(*) filter (where status = 'processing') as processing, count(*) as jobs
  from generation_jobs
 where status in ('pending', 'processing')
 group by user_id
 order by jobs desc, user_id
 limit %(limit)s;

-- name: dashboard_tokens
-- Overview: tokens spent per provider and model by the jobs that ended in the last
-- `window` seconds (`usage` is one object or a list of them).
select e->>'provider' as provider, e->>'model' as model, count(distinct j.id) as jobs,
       sum(coalesce((e->>'calls')::bigint, 0)) as calls,
       sum(coalesce((e->>'input_tokens')::bigint, 0)) as input_tokens,
       sum(coalesce((e->>'output_tokens')::bigint, 0)) as output_tokens,
       sum(coalesce((e->>'thinking_tokens')::bigint, 0)) as thinking_tokens,
       sum(coalesce((e->>'embedding_tokens')::bigint, 0)) as embedding_tokens,
       sum(coalesce((e->>'retries')::bigint, 0)) as retries
  from generation_jobs j,
       jsonb_array_elements(case jsonb_typeof(j.usage) when 'array' then j.usage
                                 when 'object' then jsonb_build_array(j.usage)
                                 else '[]'::jsonb end) e
 where j.completed_at >= now() - make_interval(secs => %(window)s)
   and jsonb_typeof(e) = 'object'
 group by 1, 2
 order by 1, 2;

-- name: dashboard_jobs
-- The Jobs page: newest first, every filter optional (status or statuses, user, story,
-- provider named in `usage`, text in error_message (an ILIKE pattern), created_at
-- range), keyset-paginated after (`after_at`, `after_id`). Bulk actions select their
-- jobs with it too, so they change exactly what the list shows.
select j.id, j.status, j.progress, j.current_step, j.attempts, j.user_id, j.sequence_id,
       j.chapter_id, j.created_at, j.started_at, j.completed_at, j.run_after,
       j.created_at::text as cursor_at, left(j.error_message, 300) as error,
       coalesce(j.usage->>'provider', j.usage->0->>'provider') as provider,
       coalesce(j.usage->>'model', j.usage->0->>'model') as model,
       s.title as story_title, c.chapter_number
  from generation_jobs j
  left join sequences s on s.id = j.sequence_id
  left join chapters c on c.id = j.chapter_id
 where (%(statuses)s::text[] is null or j.status = any(%(statuses)s::text[]))
   and (%(user_id)s::uuid is null or j.user_id = %(user_id)s::uuid)
   and (%(sequence_id)s::uuid is null or j.sequence_id = %(sequence_id)s::uuid)
   and (%(provider)s::text is null
        or jsonb_path_exists(j.usage, '$[*] ? (@.provider == $p)',
                             jsonb_build_object('p', %(provider)s::text)))
   and (%(pattern)s::text is null or j.error_message ilike %(pattern)s::text)
   and (%(created_from)s::timestamptz is null or j.created_at >= %(created_from)s::timestamptz)
   and (%(created_to)s::timestamptz is null or j.created_at < %(created_to)s::timestamptz)
   and (%(after_at)s::timestamptz is null
        or (j.created_at, j.id) < (%(after_at)s::timestamptz, %(after_id)s::uuid))
 order by j.created_at desc, j.id desc
 limit %(limit)s;

-- name: dashboard_job
-- The Job page: every column of the job (`context` too, where a migration added it),
-- with its story's title and its chapter's number, title and text so far.
select j.*, s.title as story_title, c.chapter_number, c.title as chapter_title,
       coalesce(c.content, '') as chapter_text, length(coalesce(c.content, '')) as text_length,
       c.word_count
  from generation_jobs j
  left join sequences s on s.id = j.sequence_id
  left join chapters c on c.id = j.chapter_id
 where j.id = %(job_id)s;

-- name: dashboard_text
-- The Job page's live text: the job's state and its chapter's text from character
-- `offset` on (all of it when the chapter is now shorter: it was cut back).
select j.status, j.progress, j.current_step, j.attempts, left(j.error_message, 300) as error,
       length(coalesce(c.content, '')) as length,
       case when length(coalesce(c.content, '')) < %(offset)s then coalesce(c.content, '')
            else substr(coalesce(c.content, ''), %(offset)s + 1) end as text,
       length(coalesce(c.content, '')) < %(offset)s as reset
  from generation_jobs j left join chapters c on c.id = j.chapter_id
 where j.id = %(job_id)s;

-- name: dashboard_story
-- The Story page: the story itself.
select id, user_id, title, premise, created_at from sequences where id = %(sequence_id)s;

-- name: dashboard_story_chapters
-- The Story page: its chapters in order, each with its word count, its newest job
-- and the job that last completed it (the one that wrote its text).
select c.id, c.chapter_number, c.title, c.word_count, length(coalesce(c.content, '')) as chars,
       latest.id as job_id, latest.status, latest.progress, latest.current_step,
       writer.id as writer_id, writer.completed_at as written_at
  from chapters c
  left join lateral (
      select id, status, progress, current_step from generation_jobs
       where chapter_id = c.id order by created_at desc, id desc limit 1) latest on true
  left join lateral (
      select id, completed_at from generation_jobs
       where chapter_id = c.id and status = 'completed'
       order by completed_at desc, id desc limit 1) writer on true
 where c.sequence_id = %(sequence_id)s
 order by c.chapter_number, c.id;
