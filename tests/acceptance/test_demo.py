"""`storyworker demo` and the databases around it (issue 13 items 14, 15): it never
writes into DATABASE_URL, `--database-url` touches only what the demo created, a
supervisor that dies ends the demo at once with its reason, and no way of ending it
leaves a temporary folder behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.acceptance.conftest import PREFS
from tests.acceptance.test_deploy import OwnProcesses
from tests.fakegemini import FakeGemini
from tests.service import wait_for

pytestmark = pytest.mark.slow

TABLES = ("auth.users", "sequences", "chapters", "generation_jobs")


@pytest.fixture
def own(tmp_path: Path) -> OwnProcesses:
    return OwnProcesses(tmp_path)


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A TMPDIR of the test's own: whatever the demo leaves in it is a leak. It is
    short (PostgreSQL's socket lives in it), and pgserver's lock file, shared by every
    pgserver on the machine by design, goes to an XDG_RUNTIME_DIR of its own."""
    folder = Path(tempfile.mkdtemp(prefix="sw-", dir="/tmp"))
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    yield folder, {"TMPDIR": str(folder), "XDG_RUNTIME_DIR": str(runtime)}
    shutil.rmtree(folder, ignore_errors=True)


def counts(conn: psycopg.Connection) -> dict[str, int]:
    return {t: conn.execute(f"select count(*) as n from {t}").fetchone()["n"] for t in TABLES}


def snapshot(conn: psycopg.Connection, job_id: Any) -> dict[str, Any]:
    return conn.execute(
        "select j.status, j.attempts, j.locked_by, j.heartbeat_at, j.checkpoint,"
        " j.updated_at, c.content from generation_jobs j"
        " join chapters c on c.id = j.chapter_id where j.id = %s",
        (job_id,),
    ).fetchone()


def other_jobs(conn: psycopg.Connection, job_factory) -> list[Any]:
    """A pending job, and a processing one whose holder died an hour ago (a rescue
    would take it): neither is the demo's to touch."""
    pending = job_factory(user_preferences=PREFS)
    stale = job_factory(user_preferences=PREFS)
    conn.execute(
        "update generation_jobs set status = 'processing', attempts = 1,"
        " locked_by = 'elsewhere/1', heartbeat_at = now() - interval '1 hour' where id = %s",
        (stale["id"],),
    )
    return [pending["id"], stale["id"]]


def demo(cwd: Path, env: dict[str, str], *args: str, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "demo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_completed_demo(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    # Two users' stories side by side (issue 21): six bars, each story in order.
    bars = [line for line in result.stdout.splitlines() if re.match(r"(Ada|Ben) ch \d  ", line)]
    final = bars[-6:]
    assert len(final) == 6 and all("100%" in line and "completed" in line for line in final), final
    assert "Ada's The Keeper: chapters 1, 2, 3, one at a time, in order" in result.stdout
    assert "Ben's The Salt Road: chapters 1, 2, 3, one at a time, in order" in result.stdout


def test_the_demo_never_writes_into_database_url(own, tmpdir_env, database_url, conn, job_factory):
    jobs = other_jobs(conn, job_factory)
    before = {job: snapshot(conn, job) for job in jobs}
    rows = counts(conn)
    (own.cwd / ".env").write_text(f"DATABASE_URL='{database_url}'\n")
    folder, tmp = tmpdir_env
    result = demo(own.cwd, own.env(DATABASE_URL=database_url, **tmp))
    assert_completed_demo(result)
    assert "throwaway PostgreSQL" in result.stdout
    assert {job: snapshot(conn, job) for job in jobs} == before
    assert counts(conn) == rows  # nothing of the demo's is left there
    wait_for(lambda: own.storyworker_processes() == set(), 15, "every demo process to exit")
    assert list(folder.iterdir()) == []  # a normal end leaves no temporary folder


def test_database_url_flag_touches_only_the_demos_own_jobs_and_removes_them(
    tmp_path, own, database_url, conn, job_factory
):
    jobs = other_jobs(conn, job_factory)
    before = {job: snapshot(conn, job) for job in jobs}
    rows = counts(conn)
    result = demo(tmp_path, own.env(), "--database-url", database_url)
    assert_completed_demo(result)
    assert {job: snapshot(conn, job) for job in jobs} == before
    assert counts(conn) == rows
    wait_for(lambda: own.storyworker_processes() == set(), 15, "every demo process to exit")


def test_a_supervisor_that_cannot_boot_ends_the_demo_at_once_with_its_reason(
    tmp_path, own, tmpdir_env
):
    folder, tmp = tmpdir_env
    with FakeGemini() as gemini:
        env = own.env(
            GEMINI_API_KEY="rejected-key",
            GEMINI_BASE_URL=gemini.base_url,
            GEMINI_TIMEOUT_SECONDS="5",
            **tmp,
        )
        started = time.monotonic()
        result = demo(tmp_path, env, timeout=90)
    assert result.returncode == 3, result.stdout + result.stderr
    assert time.monotonic() - started < 45
    assert "the supervisor exited with code 3" in result.stderr
    assert "cannot boot" in result.stderr and "rejected-key" not in result.stderr
    wait_for(lambda: own.storyworker_processes() == set(), 15, "every demo process to exit")
    assert list(folder.iterdir()) == []


def test_ctrl_c_during_the_demo_leaves_nothing_running_and_no_temporary_folder(
    tmp_path, own, tmpdir_env
):
    folder, tmp = tmpdir_env
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "demo"],
        cwd=tmp_path,
        env=own.env(OFFLINE_LATENCY_MS="200", **tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = ""
    while "processing" not in seen:
        line = proc.stdout.readline()
        assert line, seen
        seen += line
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    wait_for(lambda: own.storyworker_processes() == set(), 15, "every demo process to exit")
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, check=False)
    assert leftover.stdout == b""
    assert list(folder.iterdir()) == []
