"""A claim that committed but whose reply never reached the worker (issue 13, item 1):
the job must not stay `processing` for as long as the worker lives."""

from __future__ import annotations

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
    # The claim's reply is the first one that carries a job's `processing` row.
    proxy.drop_reply_containing(b"processing")
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
