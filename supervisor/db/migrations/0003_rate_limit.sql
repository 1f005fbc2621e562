-- Shared rate limit on LLM calls for every worker on every host (GCRA: one row per
-- limiter holding its theoretical arrival time; a call is one single-row UPDATE).
create table if not exists storyworker_rate_limits (
    name text primary key,
    tat timestamptz not null default now()
);
