"""`storyworker dashboard` as a process: it refuses to be public without credentials
(one line, exit 78) and a weak token, it says where it listens, serves under
gunicorn, and stops cleanly on TERM."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest

from tests.browser import Dashboard
from tests.service import free_port
from tests.terminal import ROOT, cli_env

pytestmark = pytest.mark.slow


def dashboard(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "dashboard"],
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "dashboard.example.com"])
def test_a_public_bind_without_a_token_exits_78_with_one_line(host, database_url):
    port = str(free_port())
    result = dashboard(
        {"DATABASE_URL": database_url, "DASHBOARD_HOST": host, "DASHBOARD_PORT": port}
    )
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("storyworker: error: DASHBOARD_HOST")
    assert "DASHBOARD_TOKEN is not set" in lines[0]
    assert result.stdout == ""


def test_a_short_token_exits_78_without_showing_it(database_url):
    result = dashboard(
        {"DATABASE_URL": database_url, "DASHBOARD_HOST": "0.0.0.0", "DASHBOARD_TOKEN": "hunter2"}
    )
    assert result.returncode == 78
    assert "at least 16 characters" in result.stderr and "hunter2" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_taken_port_exits_78(database_url, tmp_path):
    first = Dashboard(database_url, tmp_path).start()
    try:
        result = dashboard({"DATABASE_URL": database_url, "DASHBOARD_PORT": str(first.port)})
        assert result.returncode == 78
        assert f"DASHBOARD_PORT {first.port}" in result.stderr
    finally:
        first.stop()


def test_it_serves_under_gunicorn_and_stops_cleanly_on_term(database_url, tmp_path):
    token = "t" * 24
    served = Dashboard(database_url, tmp_path, DASHBOARD_HOST="0.0.0.0", DASHBOARD_TOKEN=token)
    served.start()
    try:
        request = urllib.request.Request(
            f"{served.url}/jobs", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            body = answer.read().decode()
        assert answer.status == 200 and "<h1>Jobs</h1>" in body
        assert f"dashboard on http://0.0.0.0:{served.port}/ (actions need" in served.logs()
        assert token not in served.logs() and database_url not in served.logs()
    finally:
        assert served.stop() == 0


def test_an_unmigrated_database_exits_69(pg):
    with pg.database() as dsn:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("drop schema storyworker cascade")
        result = dashboard({"DATABASE_URL": dsn, "DASHBOARD_PORT": str(free_port())})
    assert result.returncode == 69
    assert "storyworker migrate" in result.stderr
