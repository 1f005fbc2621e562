"""The dashboard app through Flask's test client, against a real PostgreSQL: what each
page shows, the filters and keyset pages, the live text, the actions, and the rules
that keep it safe (read-only without a token, same-origin POSTs, escaping)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from supervisor.dashboard import DashboardConfig, create_app
from supervisor.db.connection import connect

TOKEN = "a-token-of-enough-length"
SAME = {"Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def client(database_url: str) -> Callable[..., Any]:
    def make(token: str | None = None, **limits: Any) -> Any:
        config = DashboardConfig(connection=lambda: connect(database_url), token=token, **limits)
        return create_app(config).test_client()

    return make


def logged_in(client: Any) -> Any:
    app = client(TOKEN)
    answer = app.post("/login", data={"token": TOKEN, "next": "/"}, headers=SAME)
    assert answer.status_code == 303
    return app


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def fail_job(conn: psycopg.Connection, job: dict, message: str = "boom") -> None:
    conn.execute(
        "update generation_jobs set status = 'failed', attempts = 4, error_message = %s,"
        " completed_at = now(), started_at = now() - interval '1 minute',"
        " current_step = 'failed', locked_by = 'host/1' where id = %s",
        (message, job["id"]),
    )


def status_of(conn: psycopg.Connection, job: dict) -> str:
    return conn.execute(
        "select status from generation_jobs where id = %s", (job["id"],)
    ).fetchone()["status"]


# --- Overview --------------------------------------------------------------------


def test_overview_counts_every_status_exactly_below_the_cap(client, conn, job_factory):
    for _ in range(3):
        job_factory()
    fail_job(conn, job_factory())
    page = client().get("/").get_data(as_text=True)
    counts = dict(
        re.findall(r'data-status="(\w+)" data-exact="yes">\s*<span class="n">(\d+)', page)
    )
    assert counts == {
        "pending": "3",
        "processing": "0",
        "completed": "0",
        "failed": "1",
        "cancelled": "0",
    }
    assert "estimated" not in page


def test_overview_estimates_counts_above_the_cap_and_says_so(client, conn, job_factory):
    for _ in range(6):
        job_factory()
    conn.execute("analyze generation_jobs")
    page = client(count_cap=4).get("/").get_data(as_text=True)
    pending = re.search(
        r'data-status="pending" data-exact="(\w+)">\s*<span class="n">([^<]+)', page
    )
    assert pending.group(1) == "no"
    assert pending.group(2).startswith("≈ ")
    assert int(pending.group(2)[2:].replace(",", "")) >= 5
    assert "estimated (over 4)" in page
    failed = re.search(r'data-status="failed" data-exact="(\w+)"', page)
    assert failed.group(1) == "yes"


def test_overview_shows_waiting_backlog_tokens_charts_and_a_paused_provider(
    client, conn, job_factory, chapter_factory, sequence_factory
):
    story = sequence_factory(title="Two Chapters")
    first = job_factory(chapter_factory(sequence_id=story["id"], chapter_number=1))
    second = job_factory(chapter_factory(sequence_id=story["id"], chapter_number=2))
    done = job_factory()
    usage = [
        {
            "provider": "gemini",
            "model": "gemini-x",
            "calls": 6,
            "input_tokens": 1200,
            "output_tokens": 3400,
            "thinking_tokens": 0,
            "embedding_tokens": 50,
            "retries": 1,
        },
        {"provider": "openai", "model": "gpt-y", "calls": 1, "input_tokens": 7, "output_tokens": 9},
    ]
    conn.execute(
        "update generation_jobs set status = 'completed', completed_at = now(),"
        " started_at = now() - interval '30 seconds', created_at = now() - interval '40 seconds',"
        " usage = %s where id = %s",
        (Jsonb(usage), done["id"]),
    )
    conn.execute(
        "insert into storyworker.supervisors (id, host, pid, provider, state, paused,"
        " paused_reason, workers) values (%s, 'vm-7', 4242, 'gemini', 'running', true,"
        " 'the API key was rejected', '[]')",
        (uuid.uuid4(),),
    )
    page = client().get("/").get_data(as_text=True)
    waiting = page.split("Waiting on an earlier chapter")[1].split("</section>")[0]
    assert str(second["id"])[:8] in waiting and str(first["id"])[:8] not in waiting
    assert "Two Chapters" in waiting
    backlog = page.split("Top users by backlog")[1].split("</section>")[0]
    assert f"/jobs?user={first['user_id']}" in backlog
    assert "vm-7" in page and "paused" in page and "the API key was rejected" in page
    tokens = page.split("Tokens, last day")[1].split("</section>")[0]
    assert "gemini-x" in tokens and "1,200" in tokens and "3,400" in tokens and "gpt-y" in tokens
    assert page.count("<svg") == 4
    assert '<rect class="ok"' in page  # the completed job is in the throughput chart
    assert '<rect class="p50"' in page  # and its 10 s wait in the latency chart


# --- Jobs --------------------------------------------------------------------------


def listed(page: str) -> list[str]:
    return re.findall(r'<a href="/jobs/([0-9a-f-]{36})">', page.split("<tbody>")[1])


def test_jobs_filters_by_status_user_story_provider_text_and_time(client, conn, job_factory):
    a, b, c = job_factory(), job_factory(), job_factory()
    fail_job(conn, a, "quota 100% spent_here")
    fail_job(conn, b, "timeout")
    conn.execute(
        "update generation_jobs set usage = %s, created_at = now() - interval '3 days'"
        " where id = %s",
        (Jsonb([{"provider": "openai", "model": "m"}]), b["id"]),
    )
    app = client()

    def ids(query: str) -> set[str]:
        answer = app.get(f"/jobs?{query}")
        assert answer.status_code == 200
        return set(listed(answer.get_data(as_text=True)))

    assert ids("") == {str(j["id"]) for j in (a, b, c)}
    assert ids("status=failed") == {str(a["id"]), str(b["id"])}
    assert ids(f"user={c['user_id']}") == {str(c["id"])}
    assert ids(f"story={a['sequence_id']}") == {str(a["id"])}
    assert ids("provider=openai") == {str(b["id"])}
    assert ids("q=100%25+spent_") == {str(a["id"])}  # % and _ taken literally
    assert ids("q=1%25+s") == set()  # as wildcards, they would match
    assert ids("q=spen_") == set()
    assert ids("from=2000-01-01T00:00&to=" + "2100-01-01T00:00") == {
        str(j["id"]) for j in (a, b, c)
    }
    recent = conn.execute("select (now() - interval '1 day')::text as t").fetchone()["t"]
    assert ids("from=" + recent.replace(" ", "T").replace("+", "%2B")) == {
        str(a["id"]),
        str(c["id"]),
    }
    page = app.get("/jobs?status=lost&user=nope").get_data(as_text=True)
    assert "status must be one of" in page and "user must be a user id" in page
    assert len(listed(page)) == 3


def test_jobs_pages_by_keyset_visit_every_job_once(client, conn, job_factory):
    made = [job_factory() for _ in range(8)]
    # Ties on created_at are ordered by id.
    conn.execute(
        "update generation_jobs set created_at = '2026-01-01T00:00:00Z' where id = any(%s)",
        ([j["id"] for j in made[:4]],),
    )
    app = client(page_size=3)
    seen, url = [], "/jobs"
    for _ in range(5):
        page = app.get(url).get_data(as_text=True)
        seen += listed(page)
        older = re.search(r'rel="next" href="([^"]+)"', page)
        if older is None:
            break
        url = older.group(1).replace("&amp;", "&")
    assert len(seen) == 8 and set(seen) == {str(j["id"]) for j in made}
    newest_first = conn.execute(
        "select id::text from generation_jobs order by created_at desc, id desc"
    ).fetchall()
    assert seen == [row["id"] for row in newest_first]
    assert "not a page cursor" in app.get("/jobs?after=garbage").get_data(as_text=True)


# --- Job and Story -----------------------------------------------------------------


def test_job_page_shows_timeline_usage_and_the_context_manifest_when_the_column_exists(
    client, conn, job_factory
):
    job = job_factory()
    fail_job(conn, job, "model refused the section")
    conn.execute(
        "update generation_jobs set usage = %s, checkpoint = %s where id = %s",
        (
            Jsonb({"provider": "gemini", "model": "gemini-x", "calls": 3, "input_tokens": 11}),
            Jsonb({"sections_done": 2, "sections": [{"provider": "gemini", "model": "gemini-x"}]}),
            job["id"],
        ),
    )
    page = client().get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "model refused the section" in page
    assert "attempt 4 started by host/1" in page and "failed</li>" in page
    assert "sections done: 2 (gemini gemini-x, written)" in page
    assert "gemini-x" in page.split("<h2>Usage</h2>")[1]
    assert "Context sent to the model" in page and "Not recorded for this job." in page
    conn.execute(
        "update generation_jobs set context = %s where id = %s",
        (Jsonb({"budget_tokens": 6000, "parts": [{"kind": "premise", "tokens": 40}]}), job["id"]),
    )
    page = client().get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "Context sent to the model" in page and "budget_tokens" in page
    # A database whose schema predates the column: no such section, no error.
    conn.execute("alter table generation_jobs drop column context")
    page = client().get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "Context sent to the model" not in page and "model refused the section" in page
    assert client().get(f"/jobs/{uuid.uuid4()}").status_code == 404


def test_live_text_follows_the_offset_and_starts_over_when_the_chapter_was_cut_back(
    client, conn, job_factory
):
    job = job_factory()
    conn.execute("update chapters set content = 'Once upon' where id = %s", (job["chapter_id"],))
    app = client()
    first = app.get(f"/jobs/{job['id']}/text?offset=0").get_json()
    assert (first["text"], first["length"], first["reset"]) == ("Once upon", 9, False)
    conn.execute(
        "update chapters set content = content || ' a time' where id = %s", (job["chapter_id"],)
    )
    assert app.get(f"/jobs/{job['id']}/text?offset=9").get_json()["text"] == " a time"
    conn.execute("update chapters set content = 'Once' where id = %s", (job["chapter_id"],))
    cut = app.get(f"/jobs/{job['id']}/text?offset=16").get_json()
    assert (cut["text"], cut["length"], cut["reset"]) == ("Once", 4, True)
    assert cut["status"] == "pending"
    assert app.get(f"/jobs/{uuid.uuid4()}/text?offset=0").status_code == 404


def test_story_page_lists_chapters_in_order_with_word_counts_and_writers(
    client, conn, sequence_factory, chapter_factory, job_factory
):
    story = sequence_factory(title="The Lighthouse")
    second = chapter_factory(sequence_id=story["id"], chapter_number=2, title="Second")
    first = chapter_factory(sequence_id=story["id"], chapter_number=1, title="First")
    writer = job_factory(first)
    conn.execute(
        "update generation_jobs set status = 'completed', completed_at = now() where id = %s",
        (writer["id"],),
    )
    conn.execute("update chapters set word_count = 1234 where id = %s", (first["id"],))
    newer = job_factory(first)
    running = job_factory(second)
    page = client().get(f"/stories/{story['id']}").get_data(as_text=True)
    rows = page.split("<tbody>")[1].split("</tr>")
    assert "First" in rows[0] and "1,234" in rows[0] and "Second" in rows[1]
    assert str(writer["id"])[:8] in rows[0] and str(newer["id"])[:8] in rows[0]
    assert str(running["id"])[:8] in rows[1]
    assert client().get(f"/stories/{uuid.uuid4()}").status_code == 404


# --- Safe by default -----------------------------------------------------------------


def test_read_only_shows_no_action_and_refuses_every_post(client, conn, job_factory):
    job = job_factory()
    fail_job(conn, job)
    app = client()
    for path in ("/", "/jobs", f"/jobs/{job['id']}", "/workers", "/jobs/bulk?action=retry"):
        page = app.get(path).get_data(as_text=True)
        assert "read-only" in page
        assert 'method="post"' not in page, path
    for path, data in (
        (f"/jobs/{job['id']}/retry", {}),
        ("/jobs/bulk", {"action": "retry", "status": "failed"}),
        ("/login", {"token": ""}),
    ):
        assert app.post(path, data=data, headers=SAME).status_code == 403
    assert status_of(conn, job) == "failed"


def test_with_a_token_every_page_needs_it_and_a_post_must_come_from_the_dashboard(
    client, conn, job_factory
):
    jobs = [job_factory() for _ in range(4)]
    for job in jobs:
        fail_job(conn, job)
    stranger = client(TOKEN)
    assert stranger.get("/jobs").status_code == 303
    assert stranger.get("/jobs").headers["Location"] == "/login?next=%2Fjobs"
    assert stranger.post("/login", data={"token": "wrong" * 5}, headers=SAME).status_code == 403
    retry = f"/jobs/{jobs[0]['id']}/retry"
    assert stranger.post(retry, headers=SAME).status_code == 401
    app = logged_in(client)
    page = app.get(f"/jobs/{jobs[0]['id']}").get_data(as_text=True)
    assert 'id="retry"' in page
    csrf = csrf_of(page)
    # Cross-site, even with the session cookie and the CSRF token: refused.
    assert (
        app.post(retry, data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}).status_code
        == 403
    )
    # No fetch metadata: the CSRF token decides, and a foreign Origin is refused.
    assert app.post(retry).status_code == 403
    assert app.post(retry, data={"csrf": "0" * 64}).status_code == 403
    assert (
        app.post(retry, data={"csrf": csrf}, headers={"Origin": "http://evil.example"}).status_code
        == 403
    )
    assert status_of(conn, jobs[0]) == "failed"
    assert app.post(retry, data={"csrf": csrf}).status_code == 303
    assert status_of(conn, jobs[0]) == "pending"
    assert app.post(f"/jobs/{jobs[1]['id']}/retry", headers=SAME).status_code == 303
    assert status_of(conn, jobs[1]) == "pending"
    # Bearer: a client or a proxy that sends the token; no browser adds it by itself.
    bearer = client(TOKEN)
    answer = bearer.post(
        f"/jobs/{jobs[2]['id']}/retry", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 303 and status_of(conn, jobs[2]) == "pending"
    # Retrying what is pending already is a conflict, said on a page.
    assert app.post(retry, headers=SAME).status_code == 409
    assert app.get(retry).status_code == 405


def test_bulk_action_shows_the_count_first_and_changes_at_most_the_limit(client, conn, job_factory):
    mine = [job_factory() for _ in range(5)]
    user = mine[0]["user_id"]
    conn.execute(
        "update generation_jobs set user_id = %s where id = any(%s)",
        (user, [j["id"] for j in mine]),
    )
    other = job_factory()
    app = client(TOKEN, bulk_limit=3)
    app.post("/login", data={"token": TOKEN}, headers=SAME)
    page = app.get(f"/jobs/bulk?action=cancel&user={user}").get_data(as_text=True)
    assert 'data-count="3" data-more="yes"' in page and "More than 3 jobs match" in page
    answer = app.post(
        "/jobs/bulk", data={"action": "cancel", "user": str(user), "csrf": csrf_of(page)}
    )
    assert answer.status_code == 303 and "done=cancel&n=3" in answer.headers["Location"]
    assert "Cancelled 3 jobs." in app.get(answer.headers["Location"]).get_data(as_text=True)
    counts = conn.execute(
        "select status, count(*) as n from generation_jobs where user_id = %s group by status",
        (user,),
    ).fetchall()
    assert {r["status"]: r["n"] for r in counts} == {"cancelled": 3, "pending": 2}
    assert status_of(conn, other) == "pending"
    page = app.get(f"/jobs/bulk?action=cancel&user={user}").get_data(as_text=True)
    assert 'data-count="2" data-more="no"' in page
    page = app.get(f"/jobs/bulk?action=retry&user={user}").get_data(as_text=True)
    assert 'data-count="3"' in page  # the cancelled ones can be retried


def test_user_content_is_escaped_everywhere(
    client, conn, sequence_factory, chapter_factory, job_factory
):
    evil = "<script>alert(1)</script>"
    story = sequence_factory(title=f"Title {evil}", premise=evil)
    chapter = chapter_factory(sequence_id=story["id"], title=evil)
    conn.execute("update chapters set content = %s where id = %s", (f"Text {evil}", chapter["id"]))
    job = job_factory(chapter)
    fail_job(conn, job, f"error {evil}")
    conn.execute(
        "insert into storyworker.supervisors (id, host, pid, provider, state, paused,"
        " paused_reason, workers) values (%s, %s, 1, 'gemini', 'running', true, %s, '[]')",
        (uuid.uuid4(), evil, evil),
    )
    app = client()
    for path in (
        "/",
        "/jobs",
        f"/jobs/{job['id']}",
        f"/stories/{story['id']}",
        "/workers",
        f"/jobs?q={evil}",
    ):
        page = app.get(path).get_data(as_text=True)
        assert "<script>alert" not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path


def test_no_page_names_the_database(client, conn, database_url, job_factory):
    job = job_factory()
    fail_job(conn, job)
    name = conn.execute("select current_database() as d").fetchone()["d"]
    app = client()
    for path in ("/", "/jobs", f"/jobs/{job['id']}", f"/stories/{job['sequence_id']}", "/workers"):
        answer = app.get(path)
        assert answer.status_code == 200
        assert name not in answer.get_data(as_text=True)
        assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Frame-Options"] == "DENY"


def test_a_database_that_does_not_answer_is_a_503_that_names_nothing(pg):
    dsn = pg.dsn("storyworker_no_such_database")
    app = create_app(DashboardConfig(connection=lambda: connect(dsn))).test_client()
    answer = app.get("/")
    assert answer.status_code == 503
    assert "storyworker_no_such_database" not in answer.get_data(as_text=True)
