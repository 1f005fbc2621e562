"""`storyworker run` with the openai provider against the fake OpenAI-compatible server,
and with Gemini falling back to it (issue 11); what real servers do that OpenAI does not
(issue 29)."""

from __future__ import annotations

import psycopg
import pytest

from tests.acceptance.conftest import PREFS
from tests.acceptance.test_gemini_service import gemini_env
from tests.fakegemini import PROSE as GEMINI_PROSE
from tests.fakegemini import FakeGemini, Reply, refused_candidate
from tests.fakememory import is_memory
from tests.fakeopenai import (
    EMBEDDING_MODEL,
    EMBEDDING_SIZE,
    MODEL,
    OUTLINE_TITLE,
    PROSE,
    VALID_KEY,
    FakeOpenAI,
    error_reply,
    refusal_reply,
    refusal_stream,
    stream_reply,
)
from tests.service import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def fake():
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def gemini():
    server = FakeGemini().start()
    yield server
    server.stop()


def openai_env(server: FakeOpenAI, key: str = VALID_KEY, **extra: str) -> dict[str, str]:
    return {
        "GENERATION_PROVIDER": "openai",
        "OPENAI_API_KEY": key,
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_MODEL": MODEL,
        "OPENAI_EMBEDDING_MODEL": EMBEDDING_MODEL,
        "OPENAI_TIMEOUT_SECONDS": "5",
        "GENERATION_FALLBACK": "",
        **extra,
    }


def job_row(conn: psycopg.Connection, job: dict) -> dict:
    return conn.execute("select * from generation_jobs where id = %s", (job["id"],)).fetchone()


def chapter_row(conn: psycopg.Connection, job: dict) -> dict:
    return conn.execute("select * from chapters where id = %s", (job["chapter_id"],)).fetchone()


def settled(conn: psycopg.Connection, job: dict, status: str) -> bool:
    return job_row(conn, job)["status"] == status


def json_calls(fake: FakeOpenAI, memory: bool = False) -> list:
    """The requests for the outline (or, with `memory`, for the chapter memory) that
    asked for a response format."""
    return [
        c
        for c in fake.calls("chat")
        if "response_format" in c.body and is_memory(c.body["messages"][-1]["content"]) == memory
    ]


def test_jobs_complete_through_openai_with_streamed_sections_and_a_structured_outline(
    service, job_factory, conn, fake
):
    job = job_factory(user_preferences=PREFS)
    svc = service(WORKER_CONCURRENCY="1", **openai_env(fake)).start()
    wait_for(lambda: settled(conn, job, "completed"), 30, "the openai job")
    chapter = chapter_row(conn, job)
    assert chapter["content"].count(PROSE.split(",")[0]) == PREFS["bullet_count"]
    assert chapter["outline"]["title"] == OUTLINE_TITLE
    assert chapter["embedding_model"] == EMBEDDING_MODEL
    assert len(chapter["embedding"]) == EMBEDDING_SIZE
    (outline,) = json_calls(fake)
    assert outline.body["response_format"]["type"] == "json_schema"
    (memory,) = json_calls(fake, memory=True)  # summary, arc and bible: one call
    assert memory.body["response_format"]["json_schema"]["name"] == "chapter_memory"
    streams = fake.calls("stream")
    assert len(streams) == PREFS["bullet_count"]
    assert all(c.body["stream_options"] == {"include_usage": True} for c in streams)
    row = job_row(conn, job)
    assert row["checkpoint"]["sections"] == [{"provider": "openai", "model": MODEL}] * 4
    text, embedding = sorted(row["usage"], key=lambda entry: entry["model"] != MODEL)
    served = fake.served(MODEL)
    assert text["provider"] == "openai" and text["calls"] == served.calls == 1 + 4 + 1
    assert text["input_tokens"] == served.prompt_tokens and text["retries"] == 0
    assert embedding["model"] == EMBEDDING_MODEL and embedding["embedding_tokens"] == 7
    status, ready = svc.get("/ready")
    assert status == 200 and ready["checks"]["api_key"]["ok"] is True
    assert svc.stop() == 0
    assert VALID_KEY not in svc.logs()


def test_a_server_without_json_schema_gets_json_mode_and_remembers(
    service, job_factory, conn, fake
):
    fake.json_schema = False
    first, second = (job_factory(user_preferences={**PREFS, "bullet_count": 2}) for _ in range(2))
    svc = service(WORKER_CONCURRENCY="1", **openai_env(fake)).start()
    wait_for(lambda: settled(conn, first, "completed"), 30, "the first job")
    wait_for(lambda: settled(conn, second, "completed"), 30, "the second job")
    formats = [c.body["response_format"]["type"] for c in json_calls(fake)]
    assert formats == ["json_schema", "json_object", "json_object"]  # asked once, remembered
    memory = [c.body["response_format"]["type"] for c in json_calls(fake, memory=True)]
    assert memory == ["json_object", "json_object"]  # the form the outline found
    assert chapter_row(conn, second)["outline"]["title"] == OUTLINE_TITLE
    assert svc.stop() == 0


def test_a_429_with_retry_after_is_retried_and_the_job_completes(service, job_factory, conn, fake):
    fake.queue("stream", error_reply(429, "Rate limit reached", retry_after=1))
    job = job_factory(user_preferences={**PREFS, "bullet_count": 2})
    svc = service(WORKER_CONCURRENCY="1", **openai_env(fake)).start()
    wait_for(lambda: settled(conn, job, "completed"), 30, "the job")
    first, second = fake.calls("stream")[:2]
    assert first.body == second.body  # the same section asked again, inside the call
    row = job_row(conn, job)
    assert row["attempts"] == 1
    assert sum(entry["retries"] for entry in row["usage"]) == 1
    assert svc.stop() == 0


def test_a_refusal_in_either_form_fails_the_job_once_saying_the_model_refused(
    service, job_factory, conn, fake
):
    svc = service(WORKER_CONCURRENCY="1", **openai_env(fake)).start()
    fake.queue("chat", refusal_reply())  # the outline: message.refusal
    outline_refused = job_factory(user_preferences=PREFS)
    wait_for(lambda: settled(conn, outline_refused, "failed"), 30, "the refused outline")
    fake.queue("stream", refusal_stream())  # a section: a refusal delta
    section_refused = job_factory(user_preferences=PREFS)
    wait_for(lambda: settled(conn, section_refused, "failed"), 30, "the refused section")
    for job in (outline_refused, section_refused):
        row = job_row(conn, job)
        assert "the model refused" in row["error_message"] and row["attempts"] == 1
    assert svc.stop() == 0


def test_a_rejected_key_stops_start_up_with_exit_code_3_without_printing_it(service, fake):
    secret = "sk-rejected-by-the-server-31337"
    svc = service(WORKER_CONCURRENCY="2", **openai_env(fake, key=secret))
    svc.start(ready=False)
    assert svc.proc.wait(60) == 3
    logs = svc.logs()
    assert "worker cannot boot" in logs and "rejected the API key" in logs
    assert secret not in logs  # the fake echoes it back in full


def test_sections_gemini_refuses_are_written_by_openai_and_usage_names_both(
    service, job_factory, conn, fake, gemini
):
    refused = Reply(chunks=[refused_candidate("PROHIBITED_CONTENT")])
    gemini.queue("streamGenerateContent", refused, refused)  # sections 1 and 2
    job = job_factory(user_preferences=PREFS)
    env = {
        **openai_env(fake),
        **gemini_env(gemini),
        "GENERATION_PROVIDER": "gemini",
        "GENERATION_FALLBACK": "openai",
    }
    svc = service(WORKER_CONCURRENCY="1", **env).start()
    wait_for(lambda: settled(conn, job, "completed"), 30, "the job")
    content = chapter_row(conn, job)["content"]
    assert content.count(PROSE.split(",")[0]) == 2  # openai wrote two sections
    assert content.count(GEMINI_PROSE.split(",")[0]) == 2  # gemini the other two
    row = job_row(conn, job)
    writers = [entry["provider"] for entry in row["checkpoint"]["sections"]]
    assert writers == ["openai", "openai", "gemini", "gemini"]
    providers = {(entry["provider"], entry["model"]) for entry in row["usage"]}
    assert ("openai", MODEL) in providers and ("gemini", "gemini-3.5-flash") in providers
    openai_text = next(e for e in row["usage"] if e["provider"] == "openai")
    assert openai_text["calls"] == 2 == fake.served(MODEL).calls
    assert svc.stop() == 0
    assert "refused; asking the next one" in svc.logs()


def test_without_an_embedding_model_the_summary_is_stored_without_one_said_once(
    service, job_factory, conn, fake
):
    jobs = [job_factory(user_preferences={**PREFS, "bullet_count": 1}) for _ in range(2)]
    svc = service(WORKER_CONCURRENCY="1", **openai_env(fake, OPENAI_EMBEDDING_MODEL="")).start()
    for job in jobs:
        wait_for(lambda job=job: settled(conn, job, "completed"), 30, "the job")
        chapter = chapter_row(conn, job)
        assert chapter["summary"] and chapter["embedding"] is None
        assert chapter["embedding_model"] is None
    assert fake.calls("embeddings") == [] and fake.calls("model")[-1].path.endswith(MODEL)
    assert svc.stop() == 0
    assert svc.logs().count("stored without an embedding") == 1


def test_a_500_naming_response_format_falls_back_and_the_job_completes_without_a_pause(
    service, job_factory, conn, fake
):
    fake.json_schema, fake.format_status = False, 500  # llama-cpp-python 0.3's answer
    jobs = [job_factory(user_preferences={**PREFS, "bullet_count": 2}) for _ in range(2)]
    svc = service(WORKER_CONCURRENCY="1", PROVIDER_PROBE_SECONDS="1", **openai_env(fake)).start()
    for job in jobs:
        wait_for(lambda job=job: settled(conn, job, "completed"), 30, "the job")
        assert job_row(conn, job)["attempts"] == 1
    kinds = [
        (c.body["response_format"]["type"], "schema" in c.body["response_format"])
        for c in json_calls(fake)
    ]
    # The 500 once (not retried), then JSON mode with the schema, remembered.
    assert kinds == [("json_schema", False), ("json_object", True), ("json_object", True)]
    logs = svc.logs()
    assert "every worker pauses" not in logs and "provider is at fault" not in logs
    assert svc.stop() == 0


def test_a_stream_of_keep_alives_only_is_cut_at_the_deadline_and_the_section_retried(
    service, job_factory, conn, fake
):
    stalled = stream_reply(["Never sent."])
    stalled.stall = 60  # keep-alive comments only, for a minute
    fake.queue("stream", stalled)
    job = job_factory(user_preferences={**PREFS, "bullet_count": 2})
    svc = service(WORKER_CONCURRENCY="1", **openai_env(fake, OPENAI_TIMEOUT_SECONDS="2")).start()
    wait_for(lambda: settled(conn, job, "completed"), 30, "the job")
    first, second = fake.calls("stream")[:2]
    assert first.body == second.body  # the same section asked again
    assert 1.9 < second.at - first.at < 6.0  # cut at the 2 s deadline, not after 60 s
    assert fake.hangups  # the connection was closed under the keep-alives
    chapter = chapter_row(conn, job)
    assert "Never sent." not in chapter["content"]
    assert chapter["content"].count(PROSE.split(",")[0]) == 2
    row = job_row(conn, job)
    assert row["attempts"] == 1 and sum(entry["retries"] for entry in row["usage"]) == 1
    assert "provider is at fault" not in svc.logs()
    assert svc.stop() == 0
