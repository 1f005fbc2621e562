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

-- What a pending job of `story` waits for, in words: the nearest earlier chapter with
-- a live job, else a chapter of the story being written; null when it waits for none.
-- (PL/pgSQL, here and below, so each statement's plan is kept for the session.)
create or replace function storyworker.story_wait(story uuid, job uuid, num integer)
returns text
language plpgsql stable as $$
declare
    found integer;
begin
    select max(c.chapter_number) into found
      from generation_jobs o join chapters c on c.id = o.chapter_id
     where o.sequence_id = story and o.id <> job
       and o.status in ('pending', 'processing') and c.chapter_number < num;
    if found is not null then
        return 'waiting for chapter ' || found;
    end if;
    return (select 'waiting for ' || coalesce('chapter ' || c.chapter_number, 'its story')
              from generation_jobs o left join chapters c on c.id = o.chapter_id
             where o.sequence_id = story and o.id <> job and o.status = 'processing'
             limit 1);
end
$$;

-- A job of chapter `num` of `story` became live or stopped being live: the pending
-- jobs whose wait may have changed are itself, the first one after it and the first
-- one of the story. Only a current_step that changes is written, and a wait that ended
-- reads 'queued'.
create or replace function storyworker.refresh_story_waits(story uuid, job uuid, num integer)
returns void
language plpgsql as $$
declare
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
    perform storyworker.refresh_story_waits(
        new.sequence_id, new.id, (select chapter_number from chapters where id = new.chapter_id));
    return null;
end
$$;

-- A job stopped being live (completed, failed, cancelled) or became live again (a
-- retry): the waits of its story's pending jobs around it.
create or replace function storyworker.story_job_settled() returns trigger
language plpgsql security definer as $$
begin
    perform storyworker.refresh_story_waits(
        new.sequence_id, new.id, (select chapter_number from chapters where id = new.chapter_id));
    return null;
end
$$;

-- SECURITY DEFINER functions resolve names in a fixed path: the app's schema (where
-- this migration creates or finds the tables) and nothing an app role could plant.
do $$
declare
    fn text;
begin
    foreach fn in array array['story_wait(uuid, uuid, integer)',
                              'refresh_story_waits(uuid, uuid, integer)',
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
