-- storyworker's own state leaves `public`: there Supabase's default privileges grant
-- ALL on every new table to anon and authenticated, and PostgREST exposes it to
-- anyone holding the anon key. The schema `storyworker` is owned by the migrating
-- role and grants nothing to anyone (migrate revokes PUBLIC, anon and authenticated
-- again after every migration). The bookkeeping table was moved here already, in this
-- same transaction, by migrate itself.
create schema if not exists storyworker;

-- The rate limiter's state moves with its rows (the limiter's time is kept); a
-- database where it never existed gets it new.
do $$
declare
    legacy regclass := to_regclass('storyworker_rate_limits');
begin
    if legacy is not null and to_regclass('storyworker.rate_limits') is null then
        execute format('alter table %s set schema storyworker', legacy);
        alter table storyworker.storyworker_rate_limits rename to rate_limits;
    end if;
end
$$;
create table if not exists storyworker.rate_limits (
    name text primary key,
    tat timestamptz not null default now()
);
