-- What each job spent over all its attempts, per provider and model (calls, input,
-- output, thinking and embedding tokens, retries): written with the job's checkpoints
-- and settlement. Nullable, no default: a catalogue-only change, no table rewrite.
alter table generation_jobs add column if not exists usage jsonb;
