-- What `storyworker dashboard` needs to stay fast at millions of jobs: the Jobs page's
-- newest-first keyset order, alone and within a status; a story's and a chapter's
-- jobs; the jobs that ended lately (charts) and the live ones (backlog, waiting),
-- both readable from the index alone. `if not exists`: on a large table, create them
-- beforehand with `create index concurrently` under these names (README, Dashboard),
-- and this migration finds them there.
-- The two partial indexes hold only what they are for: a job enters the first when it
-- ends, and is in the second only while it is pending or processing.
create index if not exists generation_jobs_created_idx
    on generation_jobs (created_at, id);
create index if not exists generation_jobs_status_created_idx
    on generation_jobs (status, created_at, id);
create index if not exists generation_jobs_sequence_idx
    on generation_jobs (sequence_id, created_at);
create index if not exists generation_jobs_chapter_idx
    on generation_jobs (chapter_id, created_at);
create index if not exists generation_jobs_ended_idx
    on generation_jobs (completed_at) include (status, created_at, started_at)
    where completed_at is not null;
create index if not exists generation_jobs_live_idx
    on generation_jobs (sequence_id, chapter_id) include (id, user_id, created_at, status)
    where status in ('pending', 'processing');
