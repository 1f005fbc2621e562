"""What reaches the reader is prose, through a real `storyworker run` and the real SDKs
against the fake Gemini and OpenAI servers: a section cut at the output limit is
continued without a break, meta lines never reach the chapter (live text included), a
far too short section is asked again, and a refusal part-way leaves nothing behind,
with and without a fallback; every request carries an output limit."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.acceptance.test_gemini_service import gemini_env
from tests.acceptance.test_openai_service import openai_env
from tests.fakegemini import FakeGemini
from tests.fakegemini import stream_reply as gemini_stream
from tests.fakeopenai import FakeOpenAI
from tests.fakeopenai import stream_reply as openai_stream
from tests.service import wait_for

pytestmark = pytest.mark.slow

PREFS = {"bullet_count": 2, "words_per_bullet": 50}
OPENING = (
    "The keeper climbed the stairs of the old lighthouse while the storm gathered over "
    "the bay, and the"
)
REST = (
    " gulls fled inland, crying, as the lamp began to turn. She counted every step out "
    "loud, the way her father had, and did not stop until the door at the top gave way."
)
META = ("Here is section", "Let me know", "Section 1:", "```")


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    server = FakeGemini().start()
    yield server
    server.stop()


@pytest.fixture
def openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


def job_row(conn: psycopg.Connection, job: dict[str, Any]) -> dict[str, Any]:
    return conn.execute(
        "select j.status, j.error_message, j.checkpoint, c.content from generation_jobs j"
        " join chapters c on c.id = j.chapter_id where j.id = %s",
        (job["id"],),
    ).fetchone()


def settled(conn: psycopg.Connection, job: dict[str, Any]) -> dict[str, Any]:
    return wait_for(
        lambda: (row := job_row(conn, job))["status"] in ("completed", "failed") and row,
        60,
        "the job to settle",
    )


class Watch:
    """Every version of the chapter's text a reader could have loaded meanwhile."""

    def __init__(self, dsn: str, chapter_id: Any) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(dsn, chapter_id), daemon=True)
        self._thread.start()

    def _run(self, dsn: str, chapter_id: Any) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not self._stop.wait(0.01):
                row = conn.execute("select content from chapters where id = %s", (chapter_id,))
                self.seen.add(row.fetchone()[0])

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join()
        return self.seen


def test_a_section_cut_at_max_tokens_is_continued_and_meta_never_reaches_the_reader(
    service, conn, database_url, job_factory, gemini
):
    gemini.queue(
        "streamGenerateContent",
        gemini_stream(["Here is section 1:\n\n", OPENING], finish="MAX_TOKENS", chunk_delay=0.3),
        gemini_stream(
            ["Here is the continuation:\n", REST, "\n\nLet me know if you'd like changes."],
            chunk_delay=0.3,
        ),
    )
    job = job_factory(user_preferences=PREFS)
    watch = Watch(database_url, job["chapter_id"])
    svc = service(WORKER_CONCURRENCY="1", **gemini_env(gemini)).start()
    row = settled(conn, job)
    seen = watch.stop()
    assert svc.stop() == 0
    assert row["status"] == "completed", row["error_message"]
    first = row["content"].split("\n\n")[0]
    assert first == OPENING + REST  # joined at the cut, no break, nothing repeated
    assert not [m for m in META for text in seen | {row["content"]} if m in text]
    streams = gemini.calls("streamGenerateContent")
    assert "was cut off mid-way" in json.dumps(streams[1].body)
    limits = [r.body["generationConfig"].get("maxOutputTokens") for r in gemini.requests
              if "generationConfig" in (r.body or {})]  # fmt: skip
    assert limits and all(isinstance(limit, int) and limit > 0 for limit in limits)


def test_a_far_too_short_section_is_asked_again_saying_why(service, conn, job_factory, gemini):
    gemini.queue("streamGenerateContent", gemini_stream(["It rained."]))
    job = job_factory(user_preferences=PREFS)
    svc = service(WORKER_CONCURRENCY="1", **gemini_env(gemini)).start()
    row = settled(conn, job)
    assert svc.stop() == 0
    assert row["status"] == "completed" and "It rained." not in row["content"]
    again = json.dumps(gemini.calls("streamGenerateContent")[1].body)
    assert "why_this_section_is_asked_again" in again and "2 words" in again


def refused_partway() -> Any:
    words = " ".join(f"word{i}" for i in range(200))
    pieces = [words[i : i + 60] for i in range(0, len(words), 60)]
    return gemini_stream(pieces, finish="PROHIBITED_CONTENT", chunk_delay=0.05)


def test_a_refusal_part_way_leaves_the_chapter_at_its_last_checkpoint(
    service, conn, database_url, job_factory, gemini
):
    # Section 1 as usual, then section 2 refused after 200 words streamed live.
    gemini.queue("streamGenerateContent", gemini_stream([gemini.prose]), refused_partway())
    job = job_factory(user_preferences=PREFS)
    watch = Watch(database_url, job["chapter_id"])
    svc = service(WORKER_CONCURRENCY="1", **gemini_env(gemini)).start()
    row = settled(conn, job)
    assert any("word1" in text for text in watch.stop())  # the reader saw it live...
    assert svc.stop() == 0
    assert row["status"] == "failed" and "refused" in row["error_message"]
    assert "word1" not in row["content"]  # ...and it was taken back with the failure
    assert len(row["content"]) == row["checkpoint"]["content_length"]


def test_with_a_fallback_a_refused_section_is_written_once_by_the_fallback(
    service, conn, job_factory, gemini, openai
):
    gemini.queue("streamGenerateContent", gemini_stream([gemini.prose]), refused_partway())
    job = job_factory(user_preferences=PREFS)
    env = {**openai_env(openai), **gemini_env(gemini), "GENERATION_FALLBACK": "openai"}
    svc = service(WORKER_CONCURRENCY="1", **env).start()
    row = settled(conn, job)
    assert svc.stop() == 0
    assert row["status"] == "completed", row["error_message"]
    assert "word1" not in row["content"]
    first, second = row["content"].split("\n\n")
    assert first == gemini.prose and second.startswith(openai.prose.split(",")[0])
    assert row["content"].count(openai.prose.split(",")[0]) == 1
    assert [s["provider"] for s in row["checkpoint"]["sections"]] == ["gemini", "openai"]


def test_an_openai_section_stopped_at_length_is_continued(service, conn, job_factory, openai):
    openai.queue(
        "stream",
        openai_stream(["Sure! Here is section 1:\n\n", OPENING], finish="length"),
        openai_stream([REST]),
    )
    job = job_factory(user_preferences=PREFS)
    svc = service(WORKER_CONCURRENCY="1", **openai_env(openai)).start()
    row = settled(conn, job)
    assert svc.stop() == 0
    assert row["status"] == "completed", row["error_message"]
    assert row["content"].split("\n\n")[0] == OPENING + REST
    streams = openai.calls("stream")
    assert all(r.body.get("max_tokens") or r.body.get("max_completion_tokens") for r in streams)
