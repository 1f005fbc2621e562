-- Stories in order, users served fairly (issue 21). The claim (queries.sql) takes a
-- job only when no other job of its story is processing and no earlier chapter of it
-- is pending or processing; among those, higher priority first, then the user with
-- the fewest jobs in flight, then the oldest. This migration gives it what it needs:
-- the app-set priority, the indexes it walks, a unique index that makes the database
-- itself refuse a second writer for one story, and triggers that cancel the older of
-- two live jobs for one chapter and keep a waiting job's current_step saying what it
-- waits for.

-- Higher first; the app sets it (for paying users, say). Not a worker column: the
-- guard (0006) lets the app's roles write it.
alter table generation_jobs add column if not exists priority integer not null default 0;

-- The claim's order among pending jobs, and the same per user (the best job of each
-- user with jobs in flight, and whether anyone else waits at all).
create index if not exists generation_jobs_claim_order_idx
    on generation_jobs (priority desc, created_at, id) where status = 'pending';
create index if not exists generation_jobs_user_pending_idx
    on generation_jobs (user_id, priority desc, created_at, id) where status = 'pending';
-- A story's live jobs: what a job waits behind (a handful per story).
create index if not exists generation_jobs_story_live_idx
    on generation_jobs (sequence_id) where status in ('pending', 'processing');
-- A chapter's live job: whether an earlier chapter still holds a story up.
create index if not exists generation_jobs_chapter_live_idx
    on generation_jobs (chapter_id) where status in ('pending', 'processing');

-- One story, one writer, whatever the claims saw: two claims that each judged a
-- different chapter runnable from their own snapshot (an earlier chapter queued while
-- a later one was being claimed) cannot both commit. Workers of a version before this
-- one may be writing two chapters of one story right now: wait for them a little.
do $$
declare
    tries integer := 0;
begin
    loop
        begin
            create unique index if not exists generation_jobs_one_writer_per_story_idx
                on generation_jobs (sequence_id) where status = 'processing';
            return;
        exception when unique_violation then
            tries := tries + 1;
            if tries >= 30 then
                raise;
            end if;
            perform pg_sleep(1);
        end;
    end loop;
end
$$;

-- The claim's last step: the first of `ids` (best first) still pending that no other
-- transaction holds, locked FOR UPDATE; null when every one is taken or gone. One
-- primary-key probe each, whatever the planner would guess of the array's length.
create or replace function storyworker.first_free(ids uuid[])
returns uuid
language plpgsql volatile as $$
declare
    candidate uuid;
    free uuid;
begin
    foreach candidate in array coalesce(ids, '{}') loop
        select j.id into free
          from generation_jobs j
         where j.id = candidate and j.status = 'pending'
           for update skip locked;
        if free is not null then
            return free;
        end if;
    end loop;
    return null;
end
$$;

-- The claim (queries.sql `claim` calls it): the id of the next runnable job, locked,
-- or null. Runnable: pending and due, in the claim's scope (`storyworker.claim_sequence`:
-- the demo's sequences, comma-separated; unset: all), nothing of its story being
-- written and no earlier chapter of its story live. Among runnable jobs: higher
-- priority first, then the user with the fewest jobs in flight on every host, then
-- the oldest; `max_per_user` (null: no cap) leaves out users at the cap.
-- The candidates are read without locks: the first four jobs of users with nothing in
-- flight, walked in claim order (only if there is such a user at all, found without
-- walking anyone's backlog), and the first four of each user in flight; the best one
-- nobody else is claiming is locked with SKIP LOCKED. When every one is being claimed
-- this instant, the first free one of the next 16 runnable jobs is. Four, not one:
-- workers that claim at once then take different jobs instead of all meeting on the
-- best one.
-- PL/pgSQL, so that its plan is kept for the session (behind a transaction-mode
-- pooler too, where a statement this size would be planned on every claim), and
-- planned with sorts discouraged: on a table without statistics yet (a burst of new
-- jobs) the planner would otherwise sort every pending job to take four.
create or replace function storyworker.claim_next(max_per_user integer)
returns uuid
language plpgsql volatile
set enable_sort = off
as $$
declare
    scope uuid[] := string_to_array(
        nullif(current_setting('storyworker.claim_sequence', true), ''), ',')::uuid[];
begin
    return (
    with inflight as materialized (
        select user_id, count(*)::int as running
          from generation_jobs
         where status = 'processing'
         group by user_id
    ), runnable as not materialized (
        select j.id, j.user_id, j.priority, j.created_at
          from generation_jobs j
         where j.status = 'pending'
           and (j.run_after > now()) is not true
           -- One scalar subquery, not a join: checked row by row as an index is
           -- walked in claim order, so the walk stops at the first runnable job.
           and (select (scope is null or j.sequence_id = any(scope))
                   -- Nothing of its story being written (one probe of a unique index).
                   and not exists (
                       select 1 from generation_jobs s
                        where s.sequence_id = j.sequence_id and s.status = 'processing')
                   -- No earlier chapter of its story live: its earlier chapters, each
                   -- probed for a live job (none to look at for a job with no chapter).
                   and not exists (
                       select 1
                         from chapters sc
                        where sc.sequence_id = j.sequence_id
                          and sc.chapter_number < (select jc.chapter_number from chapters jc
                                                    where jc.id = j.chapter_id)
                          and exists (select 1 from generation_jobs s
                                       where s.chapter_id = sc.id
                                         and s.status in ('pending', 'processing'))))
    ), others_waiting as (
        -- Whether a user with nothing in flight has a pending job at all, without
        -- walking the backlog of users in flight: the first user with a pending job,
        -- and the next one after each user in flight (one ordered index probe each);
        -- any of them not in flight is such a user, and if there is one, one of them is.
        select exists (
            select 1
              from (select (select g.user_id from generation_jobs g
                             where g.status = 'pending'
                             order by g.user_id limit 1) as next_user
                    union all
                    select (select g.user_id from generation_jobs g
                             where g.status = 'pending' and g.user_id > f.user_id
                             order by g.user_id limit 1)
                      from inflight f) probe
             where probe.next_user is not null
               and probe.next_user not in (select user_id from inflight)
        ) as waiting
    ), candidates as (
        (select r.id, r.priority, 0 as running, r.created_at
           from runnable r
          where (select waiting from others_waiting)
            and r.user_id not in (select user_id from inflight)
          order by r.priority desc, r.created_at, r.id
          limit 4)
        union all
        select best.*
          from inflight f
         cross join lateral (
             select r.id, r.priority, f.running, r.created_at
               from runnable r
              where r.user_id = f.user_id
              order by r.priority desc, r.created_at, r.id
              limit 4) best
         where f.running < coalesce(max_per_user, f.running + 1)
    )
    select coalesce(
        storyworker.first_free(array(
            select id from candidates order by priority desc, running, created_at, id)),
        -- Read only when every candidate is being claimed by another worker.
        storyworker.first_free(array(
            select r.id from runnable r
             where coalesce((select f.running from inflight f where f.user_id = r.user_id),
                            0) < coalesce(max_per_user, 2147483647)
             order by r.priority desc, r.created_at, r.id
             limit 16))));
end
$$;

-- What a pending job of `story` waits for, in words: the nearest earlier chapter with
-- a live job, else a chapter of the story being written; null when it waits for none.
-- (PL/pgSQL, here and below, so each statement's plan is kept for the session.)
create or replace function storyworker.story_wait(story uuid, job uuid, num integer)
returns text
language plpgsql stable as $$
declare
    nearest integer;
begin
    select max(c.chapter_number) into nearest
      from generation_jobs o join chapters c on c.id = o.chapter_id
     where o.sequence_id = story and o.id <> job
       and o.status in ('pending', 'processing') and c.chapter_number < num;
    if nearest is not null then
        return 'waiting for chapter ' || nearest;
    end if;
    return (select 'waiting for ' || coalesce('chapter ' || c.chapter_number, 'its story')
              from generation_jobs o left join chapters c on c.id = o.chapter_id
             where o.sequence_id = story and o.id <> job and o.status = 'processing'
             limit 1);
end
$$;

-- A job of `story` (for `chapter`, or none) became live or stopped being live: the
-- pending jobs whose wait may have changed are itself, the first one after it and the
-- first one of the story. Only a current_step that changes is written, and a wait
-- that ended reads 'queued'.
create or replace function storyworker.refresh_story_waits(story uuid, job uuid, chapter uuid)
returns void
language plpgsql as $$
declare
    num integer := (select c.chapter_number from chapters c where c.id = chapter);
    touched record;
    step text;
begin
    for touched in
        with live as (
            select o.id, o.current_step, c.chapter_number as n
              from generation_jobs o left join chapters c on c.id = o.chapter_id
             where o.sequence_id = story and o.status = 'pending'
        )
        select id, n, current_step from live where id = job
        union
        (select id, n, current_step from live where n > num order by n limit 1)
        union
        (select id, n, current_step from live order by n nulls last limit 1)
    loop
        step := coalesce(storyworker.story_wait(story, touched.id, touched.n),
                         case when touched.current_step like 'waiting for %' then 'queued'
                              else touched.current_step end);
        if step is distinct from touched.current_step then
            update generation_jobs set current_step = step, updated_at = now()
             where id = touched.id and status = 'pending';
        end if;
    end loop;
end
$$;

-- A new job for a chapter that already has a live one (a double click): the new one
-- wins. The older is cancelled, naming the job that superseded it, and whatever text
-- it already wrote (it had a checkpoint) leaves the chapter: the cancelled worker's
-- fenced writes then change nothing. Only jobs of the same user and story are touched,
-- so an app user cannot cancel someone else's job by naming their chapter.
create or replace function storyworker.story_job_queued() returns trigger
language plpgsql security definer as $$
declare
    written jsonb;
begin
    if new.status <> 'pending' then
        return null;
    end if;
    if new.chapter_id is not null then
        with older as (
            update generation_jobs o
               set status = 'cancelled', current_step = 'cancelled', completed_at = now(),
                   heartbeat_at = null, updated_at = now(),
                   error_message = format('superseded by job %s, queued later for the same chapter',
                                          new.id)
             where o.sequence_id = new.sequence_id and o.chapter_id = new.chapter_id
               and o.user_id = new.user_id and o.id <> new.id
               and o.status in ('pending', 'processing')
            returning o.checkpoint
        )
        select checkpoint into written from older where checkpoint is not null limit 1;
        if written is not null then
            update chapters c
               set content = '', outline = null, updated_at = now(),
                   title = case when c.title = written -> 'outline' ->> 'title' then null
                                else c.title end
             where c.id = new.chapter_id;
        end if;
    end if;
    perform storyworker.refresh_story_waits(new.sequence_id, new.id, new.chapter_id);
    return null;
end
$$;

-- A job stopped being live (completed, failed, cancelled) or became live again (a
-- retry): the waits of its story's pending jobs around it.
create or replace function storyworker.story_job_settled() returns trigger
language plpgsql security definer as $$
begin
    -- Most often (a story's last queued chapter done) no job of the story is pending:
    -- one probe of an index of live jobs, and nothing to refresh.
    if not exists (select 1 from generation_jobs o
                    where o.sequence_id = new.sequence_id and o.status = 'pending') then
        return null;
    end if;
    perform storyworker.refresh_story_waits(new.sequence_id, new.id, new.chapter_id);
    return null;
end
$$;

-- SECURITY DEFINER functions, and the claim's, resolve names in a fixed path: the
-- app's schema (where this migration creates or finds the tables) and nothing an app
-- role could plant.
do $$
declare
    fn text;
begin
    foreach fn in array array['first_free(uuid[])', 'claim_next(integer)',
                              'story_wait(uuid, uuid, integer)',
                              'refresh_story_waits(uuid, uuid, uuid)',
                              'story_job_queued()', 'story_job_settled()'] loop
        execute format('alter function storyworker.%s set search_path = %I, pg_temp',
                       fn, current_schema());
    end loop;
end
$$;

drop trigger if exists storyworker_story_job_queued on generation_jobs;
create trigger storyworker_story_job_queued
    after insert on generation_jobs
    for each row execute function storyworker.story_job_queued();

drop trigger if exists storyworker_story_job_settled on generation_jobs;
create trigger storyworker_story_job_settled
    after update of status on generation_jobs
    for each row when ((old.status in ('pending', 'processing'))
                       is distinct from (new.status in ('pending', 'processing')))
    execute function storyworker.story_job_settled();

-- Jobs already waiting when this migration runs say so too.
update generation_jobs j
   set current_step = w.step, updated_at = now()
  from (select j2.id, storyworker.story_wait(j2.sequence_id, j2.id, c.chapter_number) as step
          from generation_jobs j2 left join chapters c on c.id = j2.chapter_id
         where j2.status = 'pending') w
 where j.id = w.id and w.step is not null and j.current_step is distinct from w.step;
