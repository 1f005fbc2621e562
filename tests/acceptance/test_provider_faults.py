"""Faults that are the provider's, not the job's, through `storyworker run` and the
fake Gemini server: a retired model stops start-up; a key revoked or a model withdrawn
while jobs run pauses the pool, fails nothing, and the pool resumes by itself."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.acceptance.conftest import PREFS
from tests.acceptance.test_gemini_service import gemini_env
from tests.fakegemini import CATALOGUE, PROSE, VALID_KEY, FakeGemini
from tests.service import Service, wait_for

pytestmark = pytest.mark.slow

MODEL = "gemini-3.5-flash"


@pytest.fixture
def gemini():
    server = FakeGemini().start()
    yield server
    server.stop()


def statuses(conn: psycopg.Connection, jobs: list[dict]) -> dict[str, int]:
    rows = conn.execute(
        "select status, count(*) as n from generation_jobs where id = any(%s) group by status",
        ([j["id"] for j in jobs],),
    ).fetchall()
    return {row["status"]: row["n"] for row in rows}


def progressed(conn: psycopg.Connection, jobs: list[dict]) -> bool:
    row = conn.execute(
        "select max(progress) as p from generation_jobs where id = any(%s)",
        ([j["id"] for j in jobs],),
    ).fetchone()
    return (row["p"] or 0) >= 30


def paused(svc: Service, cause: str) -> bool:
    status, ready = svc.get("/ready")
    check = ready["checks"].get("provider", {}) if isinstance(ready, dict) else {}
    workers = svc.workers()
    return (
        status == 503
        and not check.get("ok", True)
        and cause in check.get("detail", "")
        and bool(workers)
        and all(w["state"] == "paused" for w in workers)
    )


def assert_each_section_once(conn: psycopg.Connection, jobs: list[dict]) -> None:
    for job in jobs:
        chapter = conn.execute(
            "select content from chapters where id = %s", (job["chapter_id"],)
        ).fetchone()
        assert chapter["content"].count(PROSE.split(",")[0]) == PREFS["bullet_count"]


def run_through_a_fault(service, jobs, conn, gemini, *, break_it, mend_it, cause: str) -> Service:
    batch = jobs(4)
    svc = service(
        WORKER_CONCURRENCY="2",
        AI_REQUESTS_PER_MINUTE="240",  # slow enough that the fault lands mid-job
        PROVIDER_PROBE_SECONDS="1",
        **gemini_env(gemini),
    ).start()
    wait_for(lambda: progressed(conn, batch), 30, "a job past its first section")
    break_it()
    wait_for(lambda: paused(svc, cause), 30, f"the pool paused for {cause!r}")
    time.sleep(3)  # a few probes fail meanwhile
    assert "failed" not in statuses(conn, batch)
    body = svc.health()
    assert body["provider"]["state"] == "paused" and cause in body["provider"]["reason"]
    mend_it()
    wait_for(lambda: statuses(conn, batch) == {"completed": 4}, 60, "every job completed")
    assert_each_section_once(conn, batch)
    logs = svc.logs()
    assert logs.count("every worker pauses until a probe passes") == 1  # once, not per job
    assert "the provider is available again; resuming" in logs
    # The cached key check failed during the pause; it is asked again within 10 s.
    wait_for(lambda: svc.get("/ready")[0] == 200, 20, "/ready 200 again")
    assert svc.stop() == 0
    return svc


def test_a_key_revoked_while_jobs_run_pauses_the_pool_and_fails_nothing(
    service, jobs, conn, gemini
):
    def revoke() -> None:
        gemini.key = "a-rotated-key"

    def restore() -> None:
        gemini.key = VALID_KEY

    svc = run_through_a_fault(
        service, jobs, conn, gemini, break_it=revoke, mend_it=restore, cause="API key"
    )
    assert VALID_KEY not in svc.logs()


def test_a_model_withdrawn_while_jobs_run_pauses_the_pool_and_fails_nothing(
    service, jobs, conn, gemini
):
    def withdraw() -> None:
        gemini.retire(MODEL)

    def reinstate() -> None:
        gemini.models[MODEL] = dict(CATALOGUE[MODEL])

    run_through_a_fault(
        service, jobs, conn, gemini, break_it=withdraw, mend_it=reinstate, cause=MODEL
    )


def test_a_retired_model_stops_start_up_and_touches_no_job(service, jobs, conn, gemini):
    (job,) = jobs(1)
    env = {**gemini_env(gemini), "GEMINI_MODEL": "gemini-2.5-flash"}
    svc = service(WORKER_CONCURRENCY="2", **env)
    started = time.monotonic()
    svc.start(ready=False)
    assert svc.proc.wait(60) == 3
    assert time.monotonic() - started < 30
    logs = svc.logs()
    boot_lines = [line for line in logs.splitlines() if "worker cannot boot" in line]
    assert boot_lines and all("gemini-2.5-flash" in line for line in boot_lines)
    assert all("GEMINI_MODEL" in line for line in boot_lines)
    assert "Traceback" not in logs
    row = conn.execute("select * from generation_jobs where id = %s", (job["id"],)).fetchone()
    assert row["status"] == "pending" and row["attempts"] == 0


def test_thinking_level_and_safety_threshold_reach_every_generation_request(
    service, jobs, conn, gemini
):
    gemini.usage = {**gemini.usage, "thoughtsTokenCount": 5}
    (job,) = jobs(1)
    env = {
        **gemini_env(gemini),
        "GEMINI_THINKING_LEVEL": "low",
        "GEMINI_SAFETY_THRESHOLD": "block_only_high",
    }
    svc = service(WORKER_CONCURRENCY="1", **env).start()
    wait_for(lambda: statuses(conn, [job]) == {"completed": 1}, 30, "the job")
    methods = (":generateContent", ":streamGenerateContent")
    generation = [r for r in gemini.requests if r.path.endswith(methods)]
    assert len(generation) == 1 + PREFS["bullet_count"] + 1  # outline, sections, summary
    for request in generation:
        config = request.body["generationConfig"]
        thinking = config["thinkingConfig"]
        level = thinking.get("thinkingLevel", thinking.get("thinking_level"))
        assert str(level).lower() == "low"
        assert "thinkingBudget" not in thinking and "thinking_budget" not in thinking
        thresholds = {s["threshold"] for s in request.body["safetySettings"]}
        assert thresholds == {"BLOCK_ONLY_HIGH"}
    assert svc.stop() == 0
    assert_usage_matches_what_was_served(conn, job, gemini)


def assert_usage_matches_what_was_served(conn, job, gemini: FakeGemini) -> None:
    row = conn.execute("select usage from generation_jobs where id = %s", (job["id"],)).fetchone()
    text, embedding = sorted(row["usage"], key=lambda entry: entry["model"] != MODEL)
    served = gemini.served(MODEL)
    assert text["provider"] == "gemini" and text["model"] == MODEL
    assert text["calls"] == sum(served.calls.values()) == 1 + PREFS["bullet_count"] + 1
    assert text["input_tokens"] == served.prompt_tokens > 0
    assert text["thinking_tokens"] == served.thoughts_tokens > 0
    assert text["output_tokens"] == served.candidates_tokens + served.thoughts_tokens
    assert text["retries"] == 0
    assert embedding["model"] == "gemini-embedding-001" and embedding["calls"] == 1
