"""The job queue: the one owner of job and chapter SQL.

Callers say what they mean (`claim`, `checkpoint`, `finish`, `release` …); the SQL
itself lives in `queries.sql`, by name (see `supervisor.db.sql`). Writes made on
behalf of a `Claim` are fenced: when the job was cancelled, rescued or re-claimed
meanwhile they change nothing and raise LeaseLostError, which tells the worker to stop.

Two modules: `steering` (producing and steering jobs: the app's, the operator's and
the dashboard's side) and `claims` (the worker's side: a claim and what is written on
its behalf). Callers import the queue, not its modules.
"""

from supervisor.db.queue.claims import (
    CLAIM_TRIES,
    CONTINUITY_SUMMARIES,
    ENDING_CHARS,
    ONE_WRITER,
    ONE_WRITER_PER_CHAPTER,
    ONE_WRITER_PER_STORY,
    WorkerQueue,
    append_text,
    checkpoint,
    claim,
    cut_back,
    fail,
    finish,
    note_unknown_preferences,
    recall,
    recall_with_vectors,
    release,
    release_owner,
    remember,
    renew_leases,
    rescue,
    rescue_owner,
    send_live,
    start_chapter,
)
from supervisor.db.queue.steering import (
    cancel,
    cancel_matching,
    enqueue,
    get,
    last_hour,
    list_jobs,
    matching,
    retry,
    retry_matching,
    stats,
    story_stats,
)

__all__ = [
    "CLAIM_TRIES",
    "CONTINUITY_SUMMARIES",
    "ENDING_CHARS",
    "ONE_WRITER",
    "ONE_WRITER_PER_CHAPTER",
    "ONE_WRITER_PER_STORY",
    "WorkerQueue",
    "append_text",
    "cancel",
    "cancel_matching",
    "checkpoint",
    "claim",
    "cut_back",
    "enqueue",
    "fail",
    "finish",
    "get",
    "last_hour",
    "list_jobs",
    "matching",
    "note_unknown_preferences",
    "recall",
    "recall_with_vectors",
    "release",
    "release_owner",
    "remember",
    "renew_leases",
    "rescue",
    "rescue_owner",
    "retry",
    "retry_matching",
    "send_live",
    "start_chapter",
    "stats",
    "story_stats",
]
