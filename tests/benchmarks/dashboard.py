"""Section 9: the dashboard's server time at 1,000,000 jobs across 10,000 users
(issue 24): each page rendered by the app over the pool it uses in production, timed
from request to response, the database on the same host.

The data: 10,000 users with 10 stories of 10 chapters each, one job per chapter,
created over 30 days and stored in that order (as an app inserts them): 90%
completed, 4% failed, 3% cancelled, 2.8% pending, 0.2% processing; `usage` on the
ended ones, errors on the failed ones. Loaded with triggers off
(session_replication_role), then VACUUM ANALYZE, as autovacuum leaves a table in
steady state.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from supervisor.config import load_settings
from supervisor.dashboard import DashboardConfig, create_app
from supervisor.dashboard.server import STATEMENT_TIMEOUT_MS, THREADS
from supervisor.db import dashboard
from supervisor.db.connection import pool_for
from tests.benchmarks.harness import Bench, Result, connect

USERS, STORIES, CHAPTERS = 10_000, 10, 10
WARMUP, SAMPLES = 3, 30

SEED = [
    "set session_replication_role = replica",
    f"insert into auth.users (id) select gen_random_uuid() from generate_series(1, {USERS})",
    f"""insert into sequences (user_id, title, premise)
        select u.id, 'Story ' || n, 'A premise.'
          from auth.users u, generate_series(1, {STORIES}) n""",
    f"""insert into chapters (sequence_id, chapter_number, title, content, word_count)
        select s.id, n, 'Chapter ' || n, '', 0
          from sequences s, generate_series(1, {CHAPTERS}) n""",
    """insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences, status,
            created_at, started_at, completed_at, attempts, progress, current_step, locked_by,
            heartbeat_at, error_message, usage)
        select c.sequence_id, c.id, s.user_id, '{"bullet_count": 4}', g.status,
               g.created, case when g.status <> 'pending' then g.started end,
               case when g.status in ('completed', 'failed', 'cancelled') then g.ended end,
               case when g.status = 'pending' then 0 else 1 end,
               case when g.status = 'completed' then 100 else 0 end, g.status,
               case when g.status = 'processing' then 'bench/1' end,
               case when g.status = 'processing' then now() end,
               case when g.status = 'failed' then 'failed after 4 attempts: 503 the model is'
                    || ' overloaded (request ' || left(md5(c.id::text), 8) || ')' end,
               case when g.status in ('completed', 'failed') then jsonb_build_object(
                   'provider', g.provider, 'model', g.provider || '-model', 'calls', 6,
                   'input_tokens', 4000 + (random() * 1000)::int, 'output_tokens', 700,
                   'thinking_tokens', 0, 'embedding_tokens', 60, 'retries', 0) end
          from chapters c join sequences s on s.id = c.sequence_id,
               lateral (select r, created, created + interval '1 second' * (random() * 120)
                               as started,
                               least(now(), created + interval '1 second' * (60 + random() * 300))
                               as ended,
                               case when r < 0.90 then 'completed' when r < 0.94 then 'failed'
                                    when r < 0.97 then 'cancelled' when r < 0.998 then 'pending'
                                    else 'processing' end as status,
                               case when random() < 0.9 then 'gemini' else 'openai' end as provider
                          from (select random() as r,
                                       now() - interval '30 days' * random() as created
                                 where c.id is not null) x) g
         order by g.created""",
    "set session_replication_role = origin",
]


def seed(dsn: str) -> None:
    with connect(dsn) as conn:
        for statement in SEED:
            conn.execute(statement)
        conn.execute("vacuum analyze")


def timed(get: Callable[[], object]) -> list[float]:
    for _ in range(WARMUP):
        get()
    samples = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        get()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def pages(dsn: str) -> dict[str, str]:
    """The pages to time, by name; a real user, story, failed job and cursor."""
    with connect(dsn) as conn:
        user = conn.execute(
            "select user_id from generation_jobs where status = 'pending' limit 1"
        ).fetchone()["user_id"]
        failed = conn.execute(
            "select id, sequence_id from generation_jobs where status = 'failed' limit 1"
        ).fetchone()
        first = dashboard.jobs(conn, dashboard.JobFilter(), 50)
    hour_ago = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
    return {
        "Overview": "/",
        "Jobs, newest": "/jobs",
        "Jobs, page 2 (keyset)": f"/jobs?after={first.next.token()}",
        "Jobs, status failed": "/jobs?status=failed",
        "Jobs, one user": f"/jobs?user={user}",
        "Jobs, failed + error text": "/jobs?status=failed&q=overloaded",
        "Jobs, provider openai": "/jobs?provider=openai",
        "Jobs, created in the last hour": f"/jobs?from={hour_ago}",
        "Job": f"/jobs/{failed['id']}",
        "Job's live text": f"/jobs/{failed['id']}/text?offset=0",
        "Story": f"/stories/{failed['sequence_id']}",
        "Workers": "/workers",
    }


def measure(dsn: str) -> None:
    """Print one row per page for the database `dsn` (already seeded)."""
    settings = load_settings({"DATABASE_URL": dsn}, dotenv_path=None)
    pool = pool_for(
        settings,
        "dashboard bench",
        max_size=THREADS,
        configure=lambda conn: dashboard.configure(conn, STATEMENT_TIMEOUT_MS),
    )
    try:
        fresh = create_app(DashboardConfig(connection=pool.connection, slow_figures_seconds=0))
        first = fresh.test_client()
        samples = timed(lambda: first.get("/"))
        print(Result("Overview, nothing cached", "ms", samples, _note(samples, 200)).row())
        client = create_app(DashboardConfig(connection=pool.connection)).test_client()
        for name, path in pages(dsn).items():
            status = client.get(path).status_code
            samples = timed(lambda p=path: client.get(p))
            target = "target: p50 < 150" if name in ("Overview", "Jobs, newest") else ""
            print(Result(name, "ms", samples, _note(samples, status, target)).row(), flush=True)
    finally:
        pool.close()


def _note(samples: list[float], status: int, target: str = "") -> str:
    p95 = statistics.quantiles(samples, n=20)[-1]
    return f"p95 {p95:,.1f} ms{'' if status == 200 else f' HTTP {status}'}  {target}".rstrip()


def run(bench: Bench) -> None:
    print(
        f"\n## 9. dashboard server time: {USERS * STORIES * CHAPTERS:,} jobs,"
        f" {USERS:,} users ({SAMPLES} requests per page after {WARMUP} warm-up; ms)"
    )
    with bench.database() as dsn:
        started = time.monotonic()
        seed(dsn)
        print(f"{'(seeded and analysed in)':<58} {time.monotonic() - started:>12.0f} s", flush=True)
        measure(dsn)
