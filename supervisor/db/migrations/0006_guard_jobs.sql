-- The worker's columns of generation_jobs are the worker's, whatever the app's row
-- level security policies allow: the app's users reach this table through PostgREST
-- as anon or authenticated (and app servers as service_role), never through
-- storyworker. "The worker" is any role with the privileges of the table's owner
-- (the owner itself, an inheriting member of it, or a superuser): the role that can
-- run `storyworker migrate` at all. On Supabase that is postgres (or supabase_admin);
-- service_role, anon and authenticated are not.
--
-- Every other role:
--   * an INSERT is a new job: pending, and every worker column at its default
--     (reset, not refused, so an app that sends status 'pending' or progress 0 works);
--   * an UPDATE may change status only to 'cancelled', from pending or processing
--     (which also stamps current_step, completed_at and clears heartbeat_at, as
--     `storyworker jobs cancel` does); any change to a worker column is refused, so
--     is a change of chapter_id, sequence_id or user_id while the job is processing
--     (the worker checked ownership when it claimed), and an infinite updated_at
--     becomes now().
-- The function is SECURITY INVOKER so that current_user is the role that wrote, and
-- it reads only the catalogue: a trigger's function needs no privilege of the caller.
create or replace function storyworker.guard_generation_jobs() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    worker_columns constant text[] := array[
        'attempts', 'locked_by', 'heartbeat_at', 'checkpoint', 'run_after', 'started_at',
        'completed_at', 'progress', 'current_step', 'error_message', 'usage', 'created_at'];
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
    -- The worker writes the chapter the job row names at each write: a running job
    -- must not be pointed at someone else's chapter after its ownership was checked.
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
    -- updated_at is the app's to touch too, but never to an infinity.
    if not isfinite(new.updated_at) then
        new.updated_at := now();
    end if;
    return new;
end
$$;

drop trigger if exists storyworker_guard on generation_jobs;
create trigger storyworker_guard
    before insert or update on generation_jobs
    for each row execute function storyworker.guard_generation_jobs();
