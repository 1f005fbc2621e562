-- The claim's cost in a drain (issue 21): what a claim reads of the jobs that ended.
-- A job that ends leaves a dead entry in the partial indexes of live jobs until vacuum
-- comes, and a drain ends jobs faster than vacuum runs.
-- - Index scans, never bitmaps: a plain index scan marks each dead entry it meets, so
--   the next claim steps over it; a bitmap scan marks none, so each claim of a drain
--   read again every dead entry of the jobs in flight (282 after 500 jobs). The
--   planner picks a bitmap for the jobs in flight whenever it guesses more than a few.
-- - The jobs in flight are read from the one-writer-per-story index, never from the
--   app's index on status: there every processing job, live or ended, shares one key,
--   deduplicated into posting lists that are marked dead only when every job in them
--   ended, so a claim read hundreds of ended jobs (tests/integration/test_claim_plan.py).
-- - Whether anyone not in flight waits is probed between the users in flight, not from
--   the start of the index: the probe for the first user with a pending job walked the
--   dead entries of that user's finished jobs (49 buffers after 4,000 jobs, a third of
--   the claim).
-- - The candidates are locked by their primary key alone (storyworker.first_free): with
--   no statistics yet the planner probed the app's index on status instead.
-- The rule is 0011's, unchanged; both functions are restated whole, as CREATE OR
-- REPLACE needs, and their search path set again.

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
         where j.id = candidate
           -- An expression no index serves, so that the primary key finds the row:
           -- planned without statistics, the app's index on status was walked
           -- instead, every pending job's entry, live or ended.
           and (j.status = 'pending') is true
           for update skip locked;
        if free is not null then
            return free;
        end if;
    end loop;
    return null;
end
$$;

-- The claim: 0011 says what it takes and in which order; only how it reads changed.
create or replace function storyworker.claim_next(max_per_user integer)
returns uuid
language plpgsql volatile
set enable_sort = off
set enable_bitmapscan = off
as $$
declare
    scope uuid[] := string_to_array(
        nullif(current_setting('storyworker.claim_sequence', true), ''), ',')::uuid[];
begin
    return (
    with inflight as materialized (
        select p.user_id, count(*)::int as running
          from (
              -- Read from the one-writer-per-story index, in its order (sorts are
              -- off): an index on status alone keeps the entries of finished jobs
              -- in posting lists shared with live ones, where none can be marked dead.
              select g.user_id from generation_jobs g
               where g.status = 'processing'
               order by g.sequence_id) p
         group by p.user_id
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
        -- walking anyone's backlog: with nobody in flight, anyone with a pending job
        -- is such a user. Otherwise, the first user with a pending job below the
        -- lowest user in flight, and the next one after each user in flight (one
        -- ordered index probe each, landing past the entries of jobs that ended: the
        -- first probe once walked every dead entry of the lowest user's finished jobs).
        select not exists (select 1 from inflight)
            or exists (
            select 1
              from (select (select g.user_id from generation_jobs g
                             where g.status = 'pending'
                               and g.user_id < (select f.user_id from inflight f
                                                 order by f.user_id limit 1)
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

do $$
begin
    execute format('alter function storyworker.first_free(uuid[]) set search_path = %I, pg_temp',
                   current_schema());
    execute format('alter function storyworker.claim_next(integer) set search_path = %I, pg_temp',
                   current_schema());
end
$$;
