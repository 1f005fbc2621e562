-- A job's heartbeat, its live text and its checkpoints update its row without touching
-- any index (HOT updates), so a flush writes the row and nothing else.
-- `heartbeat_at` was the one indexed column these updates change (0001's lease index),
-- so each flush also wrote a new entry into every index of generation_jobs, sixteen
-- of them by now: 1,671 bytes of WAL per live-text flush against 595 without it, and
-- index bloat to vacuum. What the index served, the rescue's search for expired
-- leases, reads only the jobs in flight (a few per worker), which the one-writer
-- indexes of processing jobs already hold.
drop index if exists generation_jobs_lease_idx;
