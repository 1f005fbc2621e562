"""GENERATION_FALLBACK and the pool's breaker, through `storyworker run` with both fakes:
a Gemini key revoked while jobs run sends the calls to openai without pausing the pool;
with both providers at fault the pool pauses, and resumes as soon as either is back."""

from __future__ import annotations

import time

import pytest

from tests.acceptance.test_gemini_service import gemini_env
from tests.acceptance.test_openai_service import openai_env
from tests.acceptance.test_provider_faults import paused, progressed, statuses
from tests.fakegemini import VALID_KEY as GEMINI_KEY
from tests.fakegemini import FakeGemini
from tests.fakeopenai import VALID_KEY as OPENAI_KEY
from tests.fakeopenai import FakeOpenAI
from tests.service import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def fakes():
    gemini, openai = FakeGemini().start(), FakeOpenAI().start()
    yield gemini, openai
    gemini.stop()
    openai.stop()


def fallback_env(gemini: FakeGemini, openai: FakeOpenAI) -> dict[str, str]:
    return {
        **openai_env(openai),
        **gemini_env(gemini),
        "GENERATION_PROVIDER": "gemini",
        "GENERATION_FALLBACK": "openai",
        "PROVIDER_PROBE_SECONDS": "1",
        "AI_REQUESTS_PER_MINUTE": "240",  # slow enough that the fault lands mid-job
    }


def writers(conn, jobs) -> list[str]:
    rows = conn.execute(
        "select checkpoint from generation_jobs where id = any(%s)", ([j["id"] for j in jobs],)
    ).fetchall()
    return [s["provider"] for row in rows for s in (row["checkpoint"] or {}).get("sections", [])]


def test_a_gemini_key_revoked_mid_run_goes_to_openai_without_pausing(service, jobs, conn, fakes):
    gemini, openai = fakes
    batch = jobs(3)
    svc = service(WORKER_CONCURRENCY="2", **fallback_env(gemini, openai)).start()
    wait_for(lambda: progressed(conn, batch), 30, "a job past its first section")
    gemini.key = "a-rotated-key"
    wait_for(lambda: statuses(conn, batch) == {"completed": 3}, 60, "every job completed")
    assert "gemini" in writers(conn, batch) and "openai" in writers(conn, batch)
    logs = svc.logs()
    assert "its calls go to the next provider" in logs
    assert "every worker pauses" not in logs  # the breaker never opened
    assert svc.health()["provider"]["state"] != "paused"
    assert svc.stop() == 0
    assert GEMINI_KEY not in logs and OPENAI_KEY not in logs


def test_both_providers_at_fault_pause_the_pool_until_either_is_back(service, jobs, conn, fakes):
    gemini, openai = fakes
    batch = jobs(3)
    svc = service(WORKER_CONCURRENCY="2", **fallback_env(gemini, openai)).start()
    wait_for(lambda: progressed(conn, batch), 30, "a job past its first section")
    gemini.key, openai.key = "rotated", "rotated"
    wait_for(lambda: paused(svc, "API key"), 30, "the pool paused")
    time.sleep(2)  # a few probes fail meanwhile
    assert "failed" not in statuses(conn, batch)
    openai.key = OPENAI_KEY  # only the fallback comes back
    wait_for(lambda: statuses(conn, batch) == {"completed": 3}, 60, "every job completed")
    assert "the provider is available again; resuming" in svc.logs()
    assert svc.stop() == 0
