"""What a newcomer tripped on (issue 27, point 4), as real processes: an idle
worker's title, `jobs list` into a pipe or with --wide cutting nothing, and the bulk
commands' --help offering only the statuses they take."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from tests.service import wait_for
from tests.terminal import cli_env, run_in_pty

pytestmark = pytest.mark.slow

LONG_ERROR = "rescued: " + " ".join(f"word{i}" for i in range(60)) + " THE-END"


def storyworker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_jobs_list_cuts_no_error_into_a_pipe_nor_with_wide_on_a_terminal(job_factory, database_url):
    job = job_factory(status="failed", error_message=LONG_ERROR)
    env = {"DATABASE_URL": database_url}
    piped = storyworker("jobs", "list", env=env)
    assert piped.returncode == 0, piped.stderr
    (line,) = [line for line in piped.stdout.splitlines() if str(job["id"]) in line]
    assert line.endswith(LONG_ERROR), line
    code, narrow = run_in_pty("jobs", "list", env=cli_env({**env, "NO_COLOR": "1"}), columns=80)
    assert code == 0 and "THE-END" not in narrow  # a terminal is cut to its width
    code, wide = run_in_pty(
        "jobs", "list", "--wide", env=cli_env({**env, "NO_COLOR": "1"}), columns=80
    )
    assert code == 0 and LONG_ERROR in " ".join(wide.split()), wide


@pytest.mark.parametrize(
    ("command", "offered", "refused"),
    [("retry", "[failed|cancelled]", "pending"), ("cancel", "[pending|processing]", "failed")],
)
def test_bulk_help_offers_only_the_statuses_taken(command, offered, refused):
    shown = storyworker("jobs", command, "--help", env={}).stdout
    (option,) = [line for line in shown.splitlines() if line.strip().startswith("--status")]
    assert offered in option and refused not in option, option


def test_idle_workers_say_idle_before_their_first_job(service):
    svc = service(WORKER_CONCURRENCY="2").start()

    def titles() -> list[str]:
        found: list[Any] = []
        for worker in svc.workers():
            with open(f"/proc/{worker['pid']}/cmdline", "rb") as cmdline:
                found.append(cmdline.read().split(b"\0")[0].decode())
        return found

    wait_for(lambda: len(titles()) == 2, 15, "two workers")
    time.sleep(0.5)  # past the boot: both are waiting for work, no job was ever queued
    assert sorted(titles()) == ["storyworker: worker 0 idle", "storyworker: worker 1 idle"]
    assert svc.stop() == 0
