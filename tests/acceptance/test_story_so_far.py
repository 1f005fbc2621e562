"""What chapter 3 of a story is told, through a real `storyworker run` and the real
SDKs against the fake Gemini and OpenAI servers: how chapter 2 ended, both earlier
summaries by number, the passage of chapter 1 that planted a fact its bullet names
(found by full-text search and embeddings, the passages' vectors stored), and the
story bible as the model extracted it from chapters 1 and 2 (the fakes extract by
rule: tests/fakememory.py); `jobs show` prints the manifest. And a chapter whose
extraction fails is complete all the same, with the extractive memory, the manifest
saying why."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from generation.story.prompts import DATA_CLOSE, DATA_OPEN
from tests.acceptance.test_gemini_service import gemini_env
from tests.acceptance.test_openai_service import openai_env
from tests.fakegemini import FakeGemini, text_response
from tests.fakegemini import Reply as GeminiReply
from tests.fakegemini import error_reply as gemini_error
from tests.fakememory import NEW_ABOUT
from tests.fakeopenai import EMBEDDING_MODEL, FakeOpenAI, completion
from tests.fakeopenai import Reply as OpenAIReply
from tests.fakeopenai import error_reply as openai_error
from tests.service import wait_for

pytestmark = pytest.mark.slow

PLANTED = (
    "Mara watched as Ilya opened his hand and showed her the crescent scar across his "
    "palm, white against the brown skin, a gift from the night the ferry went down."
)
OTHER = "Mara rowed across the bay alone, counting the buoys, and thought of nothing."
BEATS = "Ilya's scar: the truth about the night the ferry went down"
BULLETS = ["Mara asks Ilya where the crescent scar on his palm came from", "They part at dawn"]
PREFS = {
    "bullet_count": 2,
    "words_per_bullet": 50,
    "characters": [{"name": "Mara", "description": "the ferryman's daughter"}],
}


def data_of(user_text: str) -> dict[str, Any]:
    start = user_text.index(DATA_OPEN) + len(DATA_OPEN)
    return json.loads(user_text[start : user_text.index(DATA_CLOSE)])


class Gemini:
    env = staticmethod(gemini_env)
    embedding_model = "gemini-embedding-001"

    def __init__(self) -> None:
        self.server = FakeGemini().start()

    def embedded(self) -> list[list[str]]:
        return [
            [r["content"]["parts"][0]["text"] for r in call.body["requests"]]
            for call in self.server.calls("batchEmbedContents")
        ]

    def memory_fails(self, how: str) -> None:
        garbage = GeminiReply(body=text_response("Sure! Here is the memory: (none)"))
        # Both attempts the memory call makes answered 500.
        replies = [garbage] if how == "garbage" else [gemini_error(500)] * 2
        self.server.memory_replies.extend(replies)

    def prose(self, text: str) -> None:
        self.server.prose = text

    def outline_next(self, title: str, bullets: list[str]) -> None:
        body = text_response(json.dumps({"title": title, "bullets": bullets}))
        self.server.queue("generateContent", GeminiReply(body=body))

    def users(self, endpoint: str) -> list[str]:
        name = {"outline": "generateContent", "section": "streamGenerateContent"}[endpoint]
        return [r.body["contents"][-1]["parts"][0]["text"] for r in self.server.calls(name)]


class OpenAI:
    env = staticmethod(openai_env)
    embedding_model = EMBEDDING_MODEL

    def __init__(self) -> None:
        self.server = FakeOpenAI().start()

    def embedded(self) -> list[list[str]]:
        return [call.body["input"] for call in self.server.calls("embeddings")]

    def memory_fails(self, how: str) -> None:
        garbage = OpenAIReply(body=completion('{"summary": 42}'))
        replies = [garbage] if how == "garbage" else [openai_error(500, "busy")] * 2
        self.server.memory_replies.extend(replies)

    def prose(self, text: str) -> None:
        self.server.prose = text

    def outline_next(self, title: str, bullets: list[str]) -> None:
        body = completion(json.dumps({"title": title, "bullets": bullets}))
        self.server.queue("chat", OpenAIReply(body=body))

    def users(self, endpoint: str) -> list[str]:
        def wanted(body: dict[str, Any]) -> bool:
            if endpoint == "section":
                return bool(body.get("stream"))
            return "response_format" in body and "Plan chapter" in body["messages"][-1]["content"]

        chats = self.server.calls("chat") + self.server.calls("stream")
        return [r.body["messages"][-1]["content"] for r in chats if wanted(r.body)]


@pytest.fixture(params=[Gemini, OpenAI], ids=["gemini", "openai"])
def fake(request):
    made = request.param()
    yield made
    made.server.stop()


def test_chapter_three_is_told_the_story_so_far(service, conn, chapter_factory, job_factory, fake):
    chapters = [chapter_factory(chapter_number=1)]
    seq = {"id": chapters[0]["sequence_id"]}
    chapters += [chapter_factory(sequence_id=seq["id"], chapter_number=n) for n in (2, 3)]
    svc = service(WORKER_CONCURRENCY="1", **fake.env(fake.server)).start()

    def write(chapter: dict[str, Any], prose: str, **prefs: Any) -> dict[str, Any]:
        fake.prose(prose)
        job = job_factory(chapter=chapter, user_preferences={**PREFS, **prefs})
        wait_for(lambda: status(conn, job) == "completed", 60, f"chapter {chapter['id']}")
        return job

    write(chapters[0], PLANTED)
    write(chapters[1], OTHER)
    fake.outline_next("The Scar", BULLETS)
    third = write(chapters[2], OTHER, chapter_beats=BEATS)
    assert svc.stop() == 0

    rows = {
        r["chapter_number"]: r
        for r in conn.execute(
            "select chapter_number, content, summary from chapters where sequence_id = %s",
            (seq["id"],),
        )
    }
    outline = third_chapters(fake.users("outline"))[0]["story_so_far"]
    assert rows[2]["content"].endswith(outline["how_chapter_2_ended"])
    assert outline["recent_chapter_summaries"] == [
        {"chapter": 1, "summary": rows[1]["summary"]},
        {"chapter": 2, "summary": rows[2]["summary"]},
    ]
    # The outline is shown what the earlier chapters hold of the chapter's beats.
    planned = outline["relevant_passages_from_earlier_chapters"]
    assert planned[0]["chapter"] == 1 and "crescent scar" in planned[0]["text"]
    first = third_chapters(fake.users("section"))[0]
    so_far = first["story_so_far"]
    assert first["this_section"]["bullet"] == BULLETS[0]
    assert "how_chapter_2_ended" in so_far
    passages = so_far["relevant_passages_from_earlier_chapters"]
    assert passages[0]["chapter"] == 1 and "crescent scar" in passages[0]["text"]
    # The bible as the model extracted it: Mara (the author's, her description kept),
    # and Ilya, whom only the model found in chapter 1; each as a chapter left them.
    bible = so_far["story_bible"]
    assert bible["characters"] == [
        {
            "name": "Mara",
            "about": "the ferryman's daughter",
            "last_known_state": f"(chapter 2) {OTHER}",
        },
        {
            "name": "Ilya",
            "about": NEW_ABOUT.format(chapter=1),
            "last_known_state": f"(chapter 1) {PLANTED}",
        },
    ]
    assert bible["facts"] == [f"{PLANTED} (chapter 1)", f"{OTHER} (chapter 2)"]

    # Retrieval with embeddings: every passage stored with its vector, the beats (for
    # the outline) and the bullets each embedded in one request, and the manifest
    # saying so.
    stored = conn.execute(
        "select count(*) as n, count(embedding) as embedded, min(embedding_model) as model"
        " from storyworker.passages where sequence_id = %s",
        (seq["id"],),
    ).fetchone()
    assert stored["n"] == 3 == stored["embedded"] and stored["model"] == fake.embedding_model
    assert [BEATS] in fake.embedded() and BULLETS in fake.embedded()
    context = conn.execute(
        "select context from generation_jobs where id = %s", (third["id"],)
    ).fetchone()["context"]
    assert context["retrieval"]["by"] == "full-text+embeddings"
    assert context["retrieval"]["similar_found"] == 2 * len(BULLETS)  # both passages, twice
    assert context["memory"]["by"] == "model" and context["memory"]["input_tokens"] > 0

    shown = show(svc, third)
    assert "summaries of chapters 1,2" in shown and "end of chapter 2" in shown
    assert "passages ch1@" in shown and "characters Mara, Ilya" in shown
    assert "retrieval: full-text search + embeddings" in shown
    assert "memory: by the model: characters Mara" in shown


@pytest.mark.parametrize("how", ["garbage", "500"])
def test_a_chapter_whose_extraction_fails_is_complete_with_the_extractive_memory(
    service, conn, job_factory, fake, how
):
    fake.prose(PLANTED)
    fake.memory_fails(how)
    svc = service(WORKER_CONCURRENCY="1", **fake.env(fake.server)).start()
    job = job_factory(user_preferences=PREFS)
    wait_for(lambda: status(conn, job) == "completed", 90, "the chapter")
    assert svc.stop() == 0
    memory = conn.execute(
        "select m.characters, m.facts, m.arc, c.summary from storyworker.story_memory m"
        " join chapters c on c.sequence_id = m.sequence_id where c.id = %s",
        (job["chapter_id"],),
    ).fetchone()
    # The extractive memory: the author's character, her state from the plain summary;
    # nothing the model would have extracted (no Ilya, no facts).
    assert [c["name"] for c in memory["characters"]] == ["Mara"]
    assert memory["facts"] == [] and memory["summary"]
    assert memory["arc"] == [{"chapter": 1, "gist": memory["summary"]}]
    context = conn.execute(
        "select context from generation_jobs where id = %s", (job["id"],)
    ).fetchone()["context"]
    assert context["memory"]["by"] == "extractive"
    said = {"garbage": "chapter memory", "500": "HTTP 500 after 2 attempts"}[how]
    assert said in context["memory"]["error"]
    assert "the model's extraction failed" in show(svc, job)
    assert "extractive memory stands in" in svc.logs()


def third_chapters(users: list[str]) -> list[dict[str, Any]]:
    return [data for data in map(data_of, users) if data["chapter_number"] == 3]


def status(conn, job: dict[str, Any]) -> str:
    row = conn.execute("select status from generation_jobs where id = %s", (job["id"],))
    return row.fetchone()["status"]


def show(svc, job: dict[str, Any]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "jobs", "show", str(job["id"])],
        env=svc.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout
