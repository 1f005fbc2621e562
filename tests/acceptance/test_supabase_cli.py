"""The real CLI against a Supabase-shaped database (issue 12): `run` refuses a role RLS
would blind or the guard would refuse, `migrate` fails in one line and recovers, the
admin commands print timestamps no worker wrote, and a NULL chapter is written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from supervisor import exitcodes
from supervisor.db.migrate import shipped
from tests.service import Service, wait_for
from tests.supabase import OWNER, SupabaseDb, supabase_database


def cli(dsn: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI", "GOOGLE"))}
    env.update({"DATABASE_URL": dsn, "GENERATION_PROVIDER": "offline", "PORT": "0"})
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refusal, after checking there is nothing else."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("storyworker: error: "), lines
    return lines[0]


@pytest.fixture
def bare(pg) -> Iterator[SupabaseDb]:
    with supabase_database(pg, app_tables=False) as db:
        yield db


@pytest.fixture
def app(pg) -> Iterator[SupabaseDb]:
    with supabase_database(pg) as db:
        yield db


def seed_chapter(db: SupabaseDb) -> dict[str, object]:
    with db.connect() as conn:
        user = conn.execute("insert into auth.users (id) values (gen_random_uuid()) returning id")
        user_id = user.fetchone()["id"]
        story = conn.execute(
            "insert into sequences (user_id) values (%s) returning id", (user_id,)
        ).fetchone()["id"]
        chapter = conn.execute(
            "insert into chapters (sequence_id, chapter_number) values (%s, 1) returning id",
            (story,),
        ).fetchone()["id"]
    return {"user_id": user_id, "sequence_id": story, "chapter_id": chapter}


def test_run_refuses_a_role_rls_would_blind(app):
    app.migrate()
    result = cli(app.dsn("sw_blind"), "run")
    assert result.returncode == exitcodes.CONFIG, result.stderr
    line = one_line(result)
    assert "role sw_blind" in line and "BYPASSRLS" in line and "row level security" in line
    assert "generation_jobs" in line


def test_run_refuses_a_bypassrls_role_the_guard_does_not_trust(app):
    app.migrate()
    result = cli(app.dsn("sw_bypass"), "run")
    assert result.returncode == exitcodes.CONFIG, result.stderr
    line = one_line(result)
    assert "role sw_bypass is not storyworker's worker role" in line and OWNER in line


def test_migrate_without_privileges_is_one_line_and_leaves_nothing(bare):
    result = cli(bare.dsn("sw_limited"), "migrate")
    assert result.returncode == exitcodes.CONFIG, result.stderr
    line = one_line(result)
    assert "role sw_limited" in line and "permission denied" in line and "postgres" in line
    with bare.connect() as conn:
        left = conn.execute(
            "select to_regnamespace('storyworker') as s, to_regclass('storyworker_migrations') as t"
        ).fetchone()
        assert left == {"s": None, "t": None}
    result = cli(bare.dsn(), "migrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"applied {len(shipped())} migration(s)")


def test_migrate_names_the_one_writer_conflict_and_recovers(app):
    ids = seed_chapter(app)
    with app.connect() as conn:
        for _ in range(2):
            conn.execute(
                "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences,"
                " status) values (%(sequence_id)s, %(chapter_id)s, %(user_id)s, '{}',"
                " 'processing')",
                ids,
            )
    result = cli(app.dsn(), "migrate")
    assert result.returncode == exitcodes.CONFIG, result.stderr
    line = one_line(result)
    assert "generation_jobs_one_writer_per_chapter_idx" in line and "jobs cancel" in line
    with app.connect() as conn:
        conn.execute(
            "update generation_jobs set status = 'cancelled' where id ="
            " (select id from generation_jobs limit 1)"
        )
    assert cli(app.dsn(), "migrate").returncode == 0


def test_migrate_names_a_missing_column(app):
    with app.connect() as conn:
        conn.execute("alter table chapters drop column chapter_number")
    result = cli(app.dsn(), "migrate")
    assert result.returncode == exitcodes.CONFIG, result.stderr
    line = one_line(result)
    assert "table chapters has no column chapter_number" in line
    assert "alter table chapters add column chapter_number integer not null" in line


def test_migrate_names_a_missing_sequences_title(app):
    with app.connect() as conn:
        conn.execute("alter table sequences drop column title")
    result = cli(app.dsn(), "migrate")
    assert result.returncode == exitcodes.CONFIG, result.stderr
    assert "table sequences has no column title" in one_line(result)


def test_admin_commands_say_what_run_says_on_an_unmigrated_database(app):
    result = cli(app.dsn(), "jobs", "list")
    assert result.returncode == exitcodes.UNAVAILABLE, result.stderr
    assert "missing migrations" in one_line(result) and "storyworker migrate" in result.stderr


def test_jobs_list_and_show_print_infinite_timestamps(app):
    app.migrate()
    ids = seed_chapter(app)
    with app.connect() as conn:
        job = conn.execute(
            "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences,"
            " created_at, run_after, heartbeat_at) values (%(sequence_id)s, %(chapter_id)s,"
            " %(user_id)s, '{}', '-infinity', 'infinity', '50000-01-01') returning id",
            ids,
        ).fetchone()["id"]
    listed = cli(app.dsn(), "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    assert "-infinity" in listed.stdout and str(job) in listed.stdout
    shown = cli(app.dsn(), "jobs", "show", str(job))
    assert shown.returncode == 0, shown.stderr
    assert "run_after:       infinity" in shown.stdout
    assert "created_at:      -infinity" in shown.stdout


@pytest.mark.slow
def test_a_chapter_with_null_content_is_written(app, tmp_path):
    app.migrate()
    ids = seed_chapter(app)
    with app.connect() as conn:
        assert conn.execute("select content from chapters").fetchone()["content"] is None
        job = conn.execute(
            "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences)"
            " values (%(sequence_id)s, %(chapter_id)s, %(user_id)s,"
            ' \'{"bullet_count": 2, "words_per_bullet": 50}\') returning id',
            ids,
        ).fetchone()["id"]
    svc = Service(app.dsn(), tmp_path).start()
    try:

        def settled() -> dict[str, object] | None:
            with app.connect() as conn:
                row = conn.execute(
                    "select status, error_message, attempts from generation_jobs where id = %s",
                    (job,),
                ).fetchone()
            return row if row["status"] in ("completed", "failed") else None

        row = wait_for(settled, 60, "the job to settle")
    finally:
        svc.stop()
    assert row == {"status": "completed", "error_message": None, "attempts": 1}, svc.logs()[-3000:]
    with app.connect() as conn:
        assert conn.execute("select content from chapters").fetchone()["content"]
