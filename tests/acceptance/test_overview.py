"""The operator's overview (issue 14), as an operator uses it: `storyworker status`
over two real supervisors on one database, `jobs list --json` and the bulk `jobs
retry` / `jobs cancel`, the health table, colour only on a terminal, and live bars
that fit a 50-column terminal (tmux)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid

import pytest

from tests.service import wait_for
from tests.terminal import ROOT, cli_env, have_tmux, run_in_pty, tmux

pytestmark = pytest.mark.slow

SLOW = {"OFFLINE_LATENCY_MS": "150"}
ESC = "\x1b["


def storyworker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def status_json(database_url: str) -> dict:
    result = storyworker("status", "--json", env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_pid(view: dict) -> dict[int, dict]:
    return {s["pid"]: s for s in view["supervisors"]}


def table_counts(conn) -> dict[str, int]:
    rows = conn.execute("select status, count(*) as n from generation_jobs group by status")
    counts = dict.fromkeys(("pending", "processing", "completed", "failed", "cancelled"), 0)
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def test_status_shows_two_supervisors_and_one_killed_goes_dead(service, jobs, conn, database_url):
    made = jobs(8, {"bullet_count": 6, "words_per_bullet": 200})
    first, second = service(**SLOW).start(), service(**SLOW).start()

    def both_busy() -> dict | None:
        view = status_json(database_url)
        sups = by_pid(view)
        busy = {
            pid: [w for w in s["workers"] if w["state"] == "busy" and w["job_id"]]
            for pid, s in sups.items()
        }
        ok = {first.pid, second.pid} <= set(sups) and all(busy.get(p) for p in sups)
        return view if ok else None

    view = wait_for(both_busy, 30, "both supervisors busy in `status --json`", interval=0.5)
    assert set(view) == {"queue", "oldest_pending_seconds", "last_hour", "stories", "supervisors"}
    assert set(view["last_hour"]) == {"completed", "failed"}
    assert set(view["stories"]) == {"waiting_on_story", "oldest_wait_seconds", "top_users"}
    made_ids = {str(j["id"]) for j in made}
    for svc in (first, second):
        sup = by_pid(view)[svc.pid]
        assert set(sup) == {
            "host",
            "pid",
            "state",
            "started_at",
            "heartbeat_age_seconds",
            "workers",
        }
        assert sup["state"] == "running" and sup["heartbeat_age_seconds"] < 5
        assert [w["index"] for w in sup["workers"]] == [0, 1]
        for worker in sup["workers"]:
            assert set(worker) == {"index", "pid", "state", "job_id", "progress"}
            assert worker["job_id"] is None or worker["job_id"] in made_ids
    busy = [w for s in view["supervisors"] for w in s["workers"] if w["state"] == "busy"]
    assert len({w["job_id"] for w in busy}) == len(busy)  # no job shown twice
    held = conn.execute(
        "select id::text, locked_by from generation_jobs where id::text = any(%s)",
        ([w["job_id"] for w in busy],),
    )
    pids = {w["job_id"]: w["pid"] for w in busy}
    for row in held:  # a job still processing is held by the worker shown with it
        assert row["locked_by"] is None or row["locked_by"].endswith(f"/{pids[row['id']]}")

    def counts_agree() -> bool:
        before = table_counts(conn)
        shown = status_json(database_url)["queue"]
        text = storyworker("status", env={"DATABASE_URL": database_url}).stdout
        line = next(line for line in text.splitlines() if line.startswith("queue "))
        words = line.split()[1:]
        assert len(words) == 10, text  # one line at 100 columns
        in_text = {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}
        return before == shown == in_text == table_counts(conn) and ESC not in text

    wait_for(counts_agree, 20, "status counts that match the table", interval=0.2)

    lease = float(first.env["LEASE_SECONDS"])
    killed_at = time.monotonic()
    first.kill_everything()

    def first_dead_or_gone() -> dict | None:
        sups = by_pid(status_json(database_url))
        gone = first.pid not in sups or sups[first.pid]["state"] == "dead"
        return sups if gone else None

    sups = wait_for(first_dead_or_gone, 2 * lease + 3, "the killed supervisor shown dead")
    assert time.monotonic() - killed_at <= 2 * lease + 3
    assert sups[second.pid]["state"] == "running"
    if first.pid in sups:
        assert all(w["state"] == "dead" for w in sups[first.pid]["workers"])
        text = storyworker("status", env={"DATABASE_URL": database_url}).stdout
        assert "supervisors  2 (1 dead)" in text

    assert second.stop() == 0
    after = by_pid(status_json(database_url))
    assert second.pid not in after  # a clean exit leaves the registry


def fail_jobs(conn, jobs, n: int) -> list[dict]:
    failed = []
    for i, job in enumerate(jobs(n)):
        failed.append(
            conn.execute(
                "update generation_jobs set status = 'failed', attempts = 4, completed_at = now(),"
                " error_message = %s, current_step = 'failed' where id = %s returning *",
                (f"attempt 4 of 4 failed: provider said no #{i}", job["id"]),
            ).fetchone()
        )
    return failed


def test_jobs_list_json_and_bulk_retry_of_failed_jobs(conn, jobs, database_url):
    env = {"DATABASE_URL": database_url}
    failed = fail_jobs(conn, jobs, 3)
    (waiting,) = jobs(1)
    listed = storyworker("jobs", "list", "--status", "failed", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["id"] for r in rows} == {str(j["id"]) for j in failed}
    for row in rows:
        assert row["status"] == "failed" and row["error_message"].startswith("attempt 4 of 4")
        assert {"id", "progress", "current_step", "attempts", "created_at", "user_id"} <= set(row)
        assert "checkpoint" not in row

    table = storyworker("jobs", "list", "--status", "failed", env=env).stdout
    assert "provider said no" in table and "failed     failed" not in table  # step once

    dry = storyworker("jobs", "retry", "--status", "failed", "--dry-run", env=env)
    assert dry.returncode == 0 and dry.stdout.startswith("would retry 3 jobs:")
    assert table_counts(conn)["failed"] == 3

    retried = storyworker("jobs", "retry", "--status", "failed", env=env)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == "retried 3 jobs"
    counts = table_counts(conn)
    assert counts["failed"] == 0 and counts["pending"] == 4
    row = conn.execute("select * from generation_jobs where id = %s", (failed[0]["id"],)).fetchone()
    assert row["attempts"] == 0 and row["error_message"] is None and row["run_after"] is None

    again = storyworker("jobs", "retry", "--status", "failed", env=env)
    assert again.stdout.strip() == "retried 0 jobs"
    cancelled = storyworker("jobs", "cancel", "--status", "pending", "--since", "1h", env=env)
    assert cancelled.stdout.strip() == "cancelled 4 jobs"
    assert table_counts(conn)["cancelled"] == 4 and waiting["id"]


def test_jobs_list_filters(conn, jobs, chapter_factory, database_url):
    env = {"DATABASE_URL": database_url}
    old, new = jobs(2)
    conn.execute(
        "update generation_jobs set created_at = now() - interval '3 days' where id = %s",
        (old["id"],),
    )

    def ids(*args: str) -> set[str]:
        result = storyworker("jobs", "list", "--json", *args, env=env)
        assert result.returncode == 0, result.stderr
        return {row["id"] for row in json.loads(result.stdout)}

    assert ids() == {str(old["id"]), str(new["id"])}
    assert ids("--since", "2h") == {str(new["id"])}
    assert ids("--since", "4d") == {str(old["id"]), str(new["id"])}
    assert ids("--user", str(old["user_id"])) == {str(old["id"])}
    assert ids("--chapter", str(new["chapter_id"])) == {str(new["id"])}
    assert ids("--limit", "1") == {str(new["id"])}
    assert ids("--user", str(uuid.uuid4())) == set()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("jobs", "list", "--since", "soon"), "is not a duration"),
        (("jobs", "retry", "--status", "pending"), "--status must be failed or cancelled"),
        (("jobs", "cancel", "--status", "failed"), "--status must be pending or processing"),
        (("jobs", "retry"), "give a job ID or --status"),
        (("jobs", "retry", str(uuid.uuid4()), "--dry-run"), "--since and --dry-run go with"),
    ],
)
def test_bulk_mistakes_are_one_line_and_exit_2(database_url, args, expected):
    result = storyworker(*args, env={"DATABASE_URL": database_url})
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_colour_only_on_a_terminal_and_never_with_no_color(conn, jobs, database_url):
    fail_jobs(conn, jobs, 1)
    env = {"DATABASE_URL": database_url}
    for args in (("jobs", "list"), ("status",)):
        code, shown = run_in_pty(*args, env=cli_env(env))
        assert code == 0 and ESC in shown and "failed" in shown, shown
        code, plain = run_in_pty(*args, env=cli_env({**env, "NO_COLOR": "1"}))
        assert code == 0 and ESC not in plain and "failed" in plain, plain
        piped = storyworker(*args, env=env)
        assert piped.returncode == 0 and ESC not in piped.stdout and "failed" in piped.stdout


def test_health_is_a_table_on_a_terminal_and_json_when_piped(service):
    svc = service().start()
    env = {"PORT": str(svc.port)}
    code, shown = run_in_pty("health", env=cli_env({**env, "NO_COLOR": "1"}))
    assert code == 0, shown
    assert shown.startswith("healthy  supervisor pid") and " #  pid" in shown
    assert not shown.lstrip().startswith("{")
    piped = storyworker("health", env=env)
    assert piped.returncode == 0 and json.loads(piped.stdout)["status"] == "healthy"
    code, raw = run_in_pty("health", "--json", env=cli_env(env))
    assert code == 0 and json.loads(raw)["status"] == "healthy"


needs_tmux = pytest.mark.skipif(not have_tmux(), reason="tmux is not installed (apt install tmux)")


@needs_tmux
def test_watch_bar_does_not_pile_up_in_50_columns(service, jobs, database_url):
    (job,) = jobs(1, {"bullet_count": 4, "words_per_bullet": 120})
    service(**SLOW).start()
    env = cli_env({"DATABASE_URL": database_url})
    with tmux([sys.executable, "-m", "supervisor", "watch", str(job["id"])], env, 50) as pane:
        seen = []
        while pane.exit_code() is None:
            screen = pane.screen()
            seen.append(screen)
            assert len([line for line in screen if "%" in line]) <= 1, screen
            time.sleep(0.3)
            assert len(seen) < 300, screen
        screen, code = pane.screen(), pane.exit_code()
    assert code == 0
    bars = [line for line in screen if "%" in line]
    assert len(bars) == 1 and "100%" in bars[0] and "completed" in bars[0], screen
    assert all(len(line) < 50 for line in screen), screen
    assert bars[0].count("completed") == 1  # status and step not both


@needs_tmux
def test_status_watch_redraws_in_place_in_50_columns(service, jobs, database_url):
    jobs(2, {"bullet_count": 6, "words_per_bullet": 200})
    service(**SLOW).start()
    env = cli_env({"DATABASE_URL": database_url})
    with tmux([sys.executable, "-m", "supervisor", "status", "--watch"], env, 50, 30) as pane:
        drawn = lambda: "  #  pid" in "\n".join(pane.screen())  # noqa: E731
        wait_for(drawn, 20, "a drawn status", interval=0.3)
        time.sleep(4.5)  # at least two more redraws
        screen = pane.screen()
        pane.send_interrupt()
        code = wait_for(pane.exit_code, 10, "status --watch to stop")
    assert len([line for line in screen if line.startswith("queue ")]) == 1, screen
    assert all(len(line) < 50 for line in screen), screen
    assert code == 130


@needs_tmux
def test_demo_bars_do_not_pile_up_in_50_columns(database_url):
    env = cli_env({"OFFLINE_LATENCY_MS": "40"})
    command = [sys.executable, "-m", "supervisor", "demo", "--database-url", database_url]
    with tmux(command, env, 50, 30) as pane:
        wait_for(lambda: pane.exit_code() is not None, 120, "the demo to end", interval=0.5)
        screen, code = pane.screen(), pane.exit_code()
    bars = [line for line in screen if re.match(r"(Ada|Ben) ch \d  \[", line)]
    assert code == 0, screen
    assert len(bars) == 6 and all("100%" in bar and len(bar) < 50 for bar in bars), screen
