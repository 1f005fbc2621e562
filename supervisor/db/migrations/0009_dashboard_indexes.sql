-- What `storyworker dashboard` needs to stay fast at millions of jobs: the Jobs page's
-- newest-first keyset order, alone and within a status; a story's and a chapter's
-- jobs; and the jobs that ended lately (charts, token usage). `if not exists`: on a
-- large table, create them beforehand with `create index concurrently` under these
-- names (see README, Dashboard), and this migration finds them there.
-- completed_at is set only when a job ends, so its index is partial: running jobs'
-- frequent updates never touch it.
create index if not exists generation_jobs_created_idx
    on generation_jobs (created_at, id);
create index if not exists generation_jobs_status_created_idx
    on generation_jobs (status, created_at, id);
create index if not exists generation_jobs_sequence_idx
    on generation_jobs (sequence_id, created_at);
create index if not exists generation_jobs_chapter_idx
    on generation_jobs (chapter_id, created_at);
create index if not exists generation_jobs_completed_idx
    on generation_jobs (completed_at) where completed_at is not null;
