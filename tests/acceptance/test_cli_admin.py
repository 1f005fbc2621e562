"""The admin commands as a user runs them: real CLI in a subprocess, real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from psycopg.types.json import Jsonb

pytestmark = pytest.mark.slow


def storyworker(
    *args: str, env: dict[str, str] | None = None, cwd=None
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        check=False,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WORKER_CONCURRENCY": "lots"}, "WORKER_CONCURRENCY must be an integer"),
        ({"POLL_INTERVAL_MS": "-1"}, "POLL_INTERVAL_MS must be an integer >= 10"),
        ({"GENERATION_PROVIDER": "gpt"}, "GENERATION_PROVIDER must be one of gemini, offline"),
        ({}, "DATABASE_URL is not set"),
    ],
)
def test_bad_configuration_stops_with_one_line(tmp_path, env, expected):
    result = storyworker("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 78
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


@pytest.mark.parametrize(
    "dsn",
    [
        "host=127.0.0.1 port=1 user=app password = s3cr3t-spaced connect_timeout=2",
        "postgresql://app@127.0.0.1:1/app?password=s3cr3t-query&connect_timeout=2",
        "host=127.0.0.1 port=1 user=app password='s3cr3t two words' connect_timeout=2",
        "postgresql://app:s3cr3t-url@127.0.0.1:1/app?connect_timeout=2",
    ],
)
def test_no_form_of_the_dsn_password_is_ever_printed(tmp_path, dsn):
    for command in (("migrate",), ("jobs", "list"), ("run",)):
        # `run` would wait for the database (DATABASE_WAIT_SECONDS); its wait's own log
        # lines are checked in test_database_outage.py.
        env = {"DATABASE_URL": dsn, "GENERATION_PROVIDER": "offline", "DATABASE_WAIT_SECONDS": "0"}
        result = storyworker(*command, env=env, cwd=tmp_path)
        assert result.returncode == 69, result.stderr
        assert "s3cr3t" not in result.stderr + result.stdout, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("run", "--concurrency", "300"), {}, "--concurrency must be an integer from 1 to 256"),
        (("run",), {"DATABASE_URL": "host=x port=5432 password"}, "not a valid connection"),
        (("migrate",), {"DATABASE_URL": "hostaddr=x  = bogus"}, "not a valid connection"),
    ],
)
def test_operator_mistakes_exit_78_with_one_line(tmp_path, args, env, expected):
    env = {"DATABASE_URL": "postgresql://u@127.0.0.1:1/db", **env}
    result = storyworker(*args, env=env, cwd=tmp_path)
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_watch_tells_an_unknown_job_from_a_failed_one(tmp_path, database_url):
    result = storyworker("watch", str(uuid.uuid4()), env={"DATABASE_URL": database_url})
    assert result.returncode == 66 and "no job with id" in result.stderr


def test_unreachable_database_error_hides_the_password(tmp_path):
    dsn = "postgresql://app:hunter2-secret@127.0.0.1:1/app?connect_timeout=2"
    result = storyworker(
        "migrate", env={"DATABASE_URL": dsn, "GEMINI_API_KEY": "AIzaSecretKey"}, cwd=tmp_path
    )
    assert result.returncode == 69
    assert "hunter2" not in result.stderr + result.stdout
    assert "AIzaSecretKey" not in result.stderr + result.stdout
    assert "app:***@127.0.0.1" in result.stderr


def test_dotenv_in_the_working_directory_is_read(tmp_path, database_url):
    (tmp_path / ".env").write_text(f"DATABASE_URL='{database_url}'\n")
    result = storyworker("jobs", "list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("id")


def test_enqueue_show_cancel_retry(tmp_path, database_url, chapter_factory, conn):
    env = {"DATABASE_URL": database_url}
    chapter = chapter_factory()
    prefs = tmp_path / "prefs.json"
    prefs.write_text(json.dumps({"genre": "noir", "bullet_count": 3}))
    enq = storyworker("enqueue", "--chapter", str(chapter["id"]), "--prefs", f"@{prefs}", env=env)
    assert enq.returncode == 0, enq.stderr
    job_id = uuid.UUID(enq.stdout.strip())
    row = conn.execute("select * from generation_jobs where id = %s", (job_id,)).fetchone()
    assert row["user_preferences"] == {"genre": "noir", "bullet_count": 3}
    assert row["chapter_id"] == chapter["id"] and row["status"] == "pending"

    listing = storyworker("jobs", "list", "--status", "pending", env=env)
    assert str(job_id) in listing.stdout
    shown = storyworker("jobs", "show", str(job_id), "--json", env=env)
    assert json.loads(shown.stdout)["status"] == "pending"

    assert storyworker("jobs", "cancel", str(job_id), env=env).returncode == 0
    again = storyworker("jobs", "cancel", str(job_id), env=env)
    assert again.returncode == 1 and "is cancelled" in again.stderr
    retried = storyworker("jobs", "retry", str(job_id), env=env)
    assert retried.returncode == 0 and "pending again" in retried.stdout
    assert conn.execute(
        "select status from generation_jobs where id = %s", (job_id,)
    ).fetchone() == {"status": "pending"}


def test_jobs_show_names_the_unknown_preferences_apart_from_the_steps(
    database_url, job_factory, conn
):
    env = {"DATABASE_URL": database_url}
    job = job_factory()
    context = {"unknown_preferences": ["mood", "house_style"], "outline": {"used_tokens": 5}}
    conn.execute(
        "update generation_jobs set context = %s where id = %s", (Jsonb(context), job["id"])
    )
    shown = storyworker("jobs", "show", str(job["id"]), env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "unknown prefs:   mood, house_style (ignored; see the README)" in lines
    assert not any(line.strip().startswith("unknown_preferences") for line in lines)
    assert any(line.startswith("  outline: 5 of ? tokens") for line in lines)
    data = json.loads(storyworker("jobs", "show", str(job["id"]), "--json", env=env).stdout)
    assert data["context"]["unknown_preferences"] == ["mood", "house_style"]


def test_friendly_errors_for_bad_ids_and_prefs(database_url, chapter_factory):
    env = {"DATABASE_URL": database_url}
    missing = storyworker("jobs", "show", str(uuid.uuid4()), env=env)
    assert missing.returncode == 66 and "no job with id" in missing.stderr
    malformed = storyworker("jobs", "show", "not-a-uuid", env=env)
    assert malformed.returncode == 2 and "not a valid UUID" in malformed.stderr
    no_chapter = storyworker("enqueue", "--chapter", str(uuid.uuid4()), env=env)
    assert no_chapter.returncode == 66 and "no chapter with id" in no_chapter.stderr
    chapter = chapter_factory()
    bad_prefs = storyworker(
        "enqueue", "--chapter", str(chapter["id"]), "--prefs", '{"bullet_count": 99}', env=env
    )
    assert bad_prefs.returncode == 2 and "bullet_count" in bad_prefs.stderr
    bad_json = storyworker("enqueue", "--chapter", str(chapter["id"]), "--prefs", "{nope", env=env)
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
