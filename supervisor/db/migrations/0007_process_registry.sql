-- The process registry: one row per running supervisor, on any host, so that
-- `storyworker status` shows the whole system. A supervisor inserts its row at start,
-- refreshes heartbeat_at (and its workers' state) with its lease renewal, and deletes
-- it on a clean exit. A row whose heartbeat is older than its own lease_seconds is
-- shown as dead; any supervisor prunes one that stayed dead long enough. Nothing is
-- written per job. In storyworker's schema: no privileges for PUBLIC, anon or
-- authenticated (migrate revokes them after every migration).
create table if not exists storyworker.supervisors (
    id uuid primary key,
    host text not null,
    pid integer not null,
    version text not null default '',
    started_at timestamptz not null default now(),
    heartbeat_at timestamptz not null default now(),
    lease_seconds double precision not null default 60,
    concurrency integer not null default 0,
    provider text not null default '',
    state text not null default 'starting',
    paused boolean not null default false,
    paused_reason text,
    -- [{index, pid, state, job_id, progress}], as the heartbeat table says.
    workers jsonb not null default '[]'
);
