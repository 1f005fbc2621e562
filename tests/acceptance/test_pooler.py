"""Behind a transaction-mode pooler (a real PgBouncer, as Supabase's port 6543): LISTEN
cannot work, so workers find that out by themselves, poll, and keep working."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from tests import pgbouncer as pooler
from tests.acceptance.conftest import PREFS
from tests.service import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not pooler.available(), reason="pgbouncer is not installed"),
]


@pytest.fixture
def pgbouncer(database_url):
    with pooler.pgbouncer(database_url, pool_size=20) as dsn:
        yield dsn


def test_workers_fall_back_to_polling_and_keep_working(service, jobs, pgbouncer):
    created = jobs(4, {**PREFS, "bullet_count": 2})
    svc = service(
        DATABASE_URL=pgbouncer,
        DATABASE_PREPARED_STATEMENTS="false",
        WORKER_CONCURRENCY="2",
        POLL_INTERVAL_MS="300",
    ).start()
    with psycopg.connect(
        pgbouncer, autocommit=True, prepare_threshold=None, row_factory=dict_row
    ) as conn:
        wait_for(
            lambda: (
                conn.execute(
                    "select count(*) as n from generation_jobs where status = 'completed'"
                ).fetchone()["n"]
                == len(created)
            ),
            60,
            "every job through the pooler",
        )
    logs = svc.logs()
    assert logs.count("polling instead") == 2  # said once by each worker
    assert "pickup=poll" in logs
    status, ready = svc.get("/ready")
    assert status == 200 and ready["checks"]["listener"]["detail"] == "poll"
    assert svc.stop() == 0
