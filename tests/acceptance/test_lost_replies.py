"""A claim that committed but whose reply never reached the worker (issue 13, item 1):
the job must not stay `processing` for as long as the worker lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service import wait_for
from tests.tcpproxy import LossyProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy(database_url):
    lossy = LossyProxy(database_url)
    yield lossy
    lossy.close()


def test_a_claim_whose_reply_was_lost_is_given_back_and_completes(
    service, jobs, conn, proxy, database_url
):
    svc = service(
        DATABASE_URL=proxy.dsn(database_url),
        WORKER_CONCURRENCY="1",
        LEASE_SECONDS="60",  # a rescue would come far too late to pass this test
    ).start()
    # The claim's reply is the only one that carries a chapter's context.
    proxy.drop_reply_containing(b'"sequence_title"')
    (job,) = jobs(1)
    wait_for(lambda: proxy.dropped == 1, 20, "the claim's reply to be lost")

    def settled() -> dict | None:
        row = conn.execute(
            "select status, attempts from generation_jobs where id = %s", (job["id"],)
        ).fetchone()
        return row if row["status"] == "completed" else None

    row = wait_for(settled, 30, "the job to complete after the lost reply")
    assert row["attempts"] == 1  # given back without using an attempt, not rescued

    assert "claimed by this worker but its reply was lost" in svc.logs()
    assert svc.stop() == 0


def test_a_worker_whose_connection_broke_mid_job_says_idle_in_its_title(service, jobs, conn):
    # Issue 13, item 7: the title said "busy job=…" until the next job.
    (job,) = jobs(1)
    svc = service(WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS="150", RETRY_BACKOFF_SECONDS="60")
    svc.start()

    def progress() -> int:
        row = conn.execute("select progress from generation_jobs where id = %s", (job["id"],))
        return row.fetchone()["progress"] or 0

    wait_for(lambda: progress() >= 30, 30, "the job past its first section")
    conn.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity"
        " where application_name = 'storyworker worker 0'"
    )
    (worker,) = svc.workers()

    def title() -> str:
        return Path(f"/proc/{worker['pid']}/cmdline").read_bytes().split(b"\0")[0].decode()

    def status() -> str:
        row = conn.execute("select status from generation_jobs where id = %s", (job["id"],))
        return row.fetchone()["status"]

    # Requeued (retry in a minute) once it has reconnected; idle meanwhile and after.
    wait_for(lambda: status() == "pending", 15, "the job requeued")
    wait_for(lambda: title() == "storyworker: worker 0 idle", 15, "the idle title")
    assert svc.stop() == 0
