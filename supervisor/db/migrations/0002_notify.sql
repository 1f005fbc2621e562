-- New jobs wake idle workers at once through LISTEN generation_jobs; polling is only
-- the fallback. The payload is the job id (well under NOTIFY's 8000-byte limit).
create or replace function storyworker_notify_job_inserted() returns trigger
language plpgsql as $$
begin
    perform pg_notify('generation_jobs', new.id::text);
    return new;
end
$$;

drop trigger if exists storyworker_job_inserted on generation_jobs;
create trigger storyworker_job_inserted
    after insert on generation_jobs
    for each row execute function storyworker_notify_job_inserted();

-- A job put back to pending (retry, release, rescue) wakes workers too, once its
-- run_after has come: those without run_after are runnable now.
create or replace function storyworker_notify_job_requeued() returns trigger
language plpgsql as $$
begin
    if new.run_after is null or new.run_after <= now() then
        perform pg_notify('generation_jobs', new.id::text);
    end if;
    return new;
end
$$;

drop trigger if exists storyworker_job_requeued on generation_jobs;
create trigger storyworker_job_requeued
    after update of status on generation_jobs
    for each row when (new.status = 'pending' and old.status is distinct from 'pending')
    execute function storyworker_notify_job_requeued();

-- Supabase Realtime: the app's UI watches chapters grow and jobs progress.
do $$
declare
    t text;
begin
    if exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
        foreach t in array array['chapters', 'generation_jobs'] loop
            if not exists (
                select 1 from pg_publication_tables
                where pubname = 'supabase_realtime'
                  and schemaname = current_schema() and tablename = t
            ) then
                execute format('alter publication supabase_realtime add table %I.%I',
                               current_schema(), t);
            end if;
        end loop;
    end if;
end
$$;

-- Progress for the app (and `storyworker watch`): one JSON payload per change of
-- progress, step or status, whoever made it.
create or replace function storyworker_notify_progress() returns trigger
language plpgsql as $$
begin
    perform pg_notify('generation_progress', json_build_object(
        'job_id', new.id,
        'chapter_id', new.chapter_id,
        'status', new.status,
        'progress', new.progress,
        'current_step', new.current_step
    )::text);
    return new;
end
$$;

drop trigger if exists storyworker_job_progress on generation_jobs;
create trigger storyworker_job_progress
    after update of progress, current_step, status on generation_jobs
    for each row when (
        old.progress is distinct from new.progress
        or old.current_step is distinct from new.current_step
        or old.status is distinct from new.status
    )
    execute function storyworker_notify_progress();
