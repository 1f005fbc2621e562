"""Issue 13, as a real `storyworker run`: a database that refuses the chapter text
fails that job with the database's own reason (item 2), and a chapter cleared behind
the checkpoint's back is written again whole on `jobs retry` (item 3)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from generation.story.writer import SECTION_SEPARATOR
from tests.acceptance.conftest import PREFS
from tests.acceptance.test_deploy import clean_env
from tests.acceptance.test_invariants import fault_free_sections, job_state
from tests.acceptance.test_supervisor import busy_worker
from tests.service import wait_for

pytestmark = pytest.mark.slow

APP_CONSTRAINT = "chapters_app_length_limit"


def test_a_check_constraint_that_rejects_the_text_fails_the_job_naming_it(
    service, job_factory, chapter_factory, conn
):
    # The app's rule: chapter 7 may hold at most 20 characters. Other chapters are free.
    conn.execute(
        f"alter table chapters add constraint {APP_CONSTRAINT}"
        " check (chapter_number <> 7 or length(content) <= 20)"
    )
    refused = job_factory(chapter=chapter_factory(chapter_number=7), user_preferences=PREFS)
    good = job_factory(user_preferences=PREFS)
    svc = service(WORKER_CONCURRENCY="1").start()
    settled = lambda: (  # noqa: E731
        job_state(conn, good["id"])["status"] == "completed"
        and job_state(conn, refused["id"])["status"] not in ("pending", "processing")
    )
    wait_for(settled, 60, "both jobs to settle")
    row = job_state(conn, refused["id"])
    assert row["status"] == "failed", row
    assert row["attempts"] == 1, row  # permanent: no retry burnt on it
    assert APP_CONSTRAINT in row["error_message"], row["error_message"]
    assert "lost the database connection" not in row["error_message"]
    assert "Failing row contains" not in row["error_message"]  # no story text in it
    assert "database connection lost" not in svc.logs()
    assert svc.stop() == 0


def storyworker(*args: str, database_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        env=clean_env(DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_chapter_cleared_before_a_retry_is_written_again_whole(
    service, job_factory, conn, database_url
):
    prefs = {**PREFS, "words_per_bullet": 200}
    job = job_factory(user_preferences=prefs)
    sections = fault_free_sections(conn, job["chapter_id"], prefs)
    svc = service(WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS="40").start()
    wait_for(lambda: busy_worker(svc, min_progress=50), 30, "two sections written")
    assert storyworker("jobs", "cancel", str(job["id"]), database_url=database_url).returncode == 0
    wait_for(lambda: "job lost" in svc.logs(), 30, "the worker to notice the cancel")
    assert job_state(conn, job["id"])["checkpoint"]["sections_done"] >= 2
    conn.execute("update chapters set content = '' where id = %s", (job["chapter_id"],))

    retried = storyworker("jobs", "retry", str(job["id"]), database_url=database_url)
    assert retried.returncode == 0, retried.stderr
    completed = lambda: job_state(conn, job["id"])["status"] == "completed"  # noqa: E731
    wait_for(completed, 60, "the retried job to complete")
    final = job_state(conn, job["id"])
    assert final["content"] == "".join(sections)
    for index, section in enumerate(sections):
        body = section.removeprefix(SECTION_SEPARATOR)
        assert final["content"].count(body) == 1, f"section {index + 1} is not there once"
    assert "does not match its checkpoint" in svc.logs()
    assert svc.stop() == 0
