"""What a newcomer and an operator run: the demo, watch, the systemd unit and the
supervisord program section (with Debian's real supervisord)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.acceptance.conftest import PREFS
from tests.service import FAST_ENV, free_port, process_table, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
#: Set in the environment of the processes a test starts; inherited by all they start.
TAG_VARIABLE = "STORYWORKER_TEST_TAG"


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GEMINI", "GOOGLE", "DATABASE_URL", "PYTHONPATH"))
    }
    if os.environ.get("PYTHONPATH") == str(ROOT):
        # The suite runs in a copy of the tree (python -m tests.mutations): the
        # storyworker it starts must be that copy too, not the installed one.
        env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@dataclass
class OwnProcesses:
    """The processes one test starts, and everything they start, wherever they sit in
    the process tree by now: a leftover is an orphan that init adopted, no longer a
    descendant of anything the test knows. They are found by what they inherited, the
    test's environment tag or its working directory. Both are needed: setproctitle (our
    titles, gunicorn's) overwrites the environment that /proc shows, and PostgreSQL
    moves into its data directory. Storyworker processes other people run on this
    machine have neither."""

    cwd: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(**{TAG_VARIABLE: self.tag, **extra})

    def storyworker_processes(self) -> set[int]:
        """Those still alive with `storyworker` in their command line or title."""
        return {
            pid
            for pid, (_, cmdline) in process_table().items()
            if b"storyworker" in cmdline and pid != os.getpid() and self._owns(pid)
        }

    def _owns(self, pid: int) -> bool:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            return False  # gone, or not ours to read
        tagged = f"{TAG_VARIABLE}={self.tag}".encode() in environ
        return tagged or cwd == self.cwd or self.cwd in cwd.parents


@pytest.fixture
def own(tmp_path: Path) -> OwnProcesses:
    return OwnProcesses(tmp_path)


def test_demo_runs_end_to_end_and_leaves_nothing_running(tmp_path, own):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "demo"],
        cwd=tmp_path,
        env=own.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    out = result.stdout
    assert "offline provider" in out and "Health: http://127.0.0.1:" in out
    final_lines = [line for line in out.splitlines() if line.startswith(("Ada ch", "Ben ch"))][-6:]
    assert len(final_lines) == 6
    assert all("100%" in line and "completed" in line for line in final_lines), final_lines
    assert "chapters 1, 2, 3, one at a time, in order" in out
    assert "The first lines of" in out and "words)" in out
    assert "Supervisor stopped (exit code 0)" in out
    time.sleep(0.5)
    assert own.storyworker_processes() == set()


def test_watch_follows_a_job_to_its_end(service, job_factory, database_url):
    job = job_factory(user_preferences=PREFS)
    svc = service(WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS="30")
    watch = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "watch", str(job["id"])],
        env=clean_env(DATABASE_URL=database_url),
        stdout=subprocess.PIPE,
        text=True,
    )
    svc.start()
    out, _ = watch.communicate(timeout=60)
    assert watch.returncode == 0, out
    lines = out.splitlines()
    assert "pending" in lines[0] and "100%" in lines[-1] and "completed" in lines[-1]
    assert any("section 2 of 4" in line for line in lines)  # driven by progress, not a timer
    svc.stop()


def test_watch_exits_non_zero_for_a_cancelled_job(job_factory, database_url, conn):
    job = job_factory(user_preferences=PREFS)
    watch = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "watch", str(job["id"])],
        env=clean_env(DATABASE_URL=database_url),
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    conn.execute("update generation_jobs set status = 'cancelled' where id = %s", (job["id"],))
    out, _ = watch.communicate(timeout=30)
    assert watch.returncode == 4 and "cancelled" in out.splitlines()[-1]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_unit_verifies(tmp_path):
    unit = (ROOT / "systemd" / "storyworker.service").read_text()
    unit = unit.replace("/opt/storyworker/.venv/bin/storyworker", str(VENV_BIN / "storyworker"))
    path = tmp_path / "storyworker.service"
    path.write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False
    )
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "storyworker.service" in line
    ]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr
    for needed in (
        "Type=notify",
        "NotifyAccess=main",
        "KillMode=mixed",
        "RestartPreventExitStatus=3 78",
        "OOMPolicy=continue",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert needed in unit


SUPERVISORD_CONF = """
[unix_http_server]
file={dir}/supervisor.sock

[supervisord]
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{dir}/supervisor.sock
"""


@pytest.mark.skipif(shutil.which("supervisord") is None, reason="supervisord is not installed")
def test_under_debian_supervisord(tmp_path, database_url, job_factory, conn):
    port = free_port()
    program = (ROOT / "systemd" / "supervisord-storyworker.conf").read_text()
    program = program.replace(
        "/opt/storyworker/.venv/bin/storyworker", str(VENV_BIN / "storyworker")
    )
    program = program.replace("/opt/storyworker", str(tmp_path)).replace(
        "/var/log/storyworker", str(tmp_path)
    )
    program = "\n".join(line for line in program.splitlines() if not line.startswith("user="))
    env = clean_env()
    # supervisord is Python too and imports its own `supervisor`: only the program it
    # starts may see a PYTHONPATH naming this tree.
    pythonpath = env.pop("PYTHONPATH", None)
    if pythonpath:
        program += f'\nenvironment=PYTHONPATH="{pythonpath}"'
    env_file = {
        **FAST_ENV,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "WORKER_CONCURRENCY": "2",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "OFFLINE_LATENCY_MS": "50",
    }
    (tmp_path / ".env").write_text("".join(f"{k}='{v}'\n" for k, v in env_file.items()))
    conf = tmp_path / "supervisord.conf"
    conf.write_text(SUPERVISORD_CONF.format(dir=tmp_path) + "\n" + program)
    daemon = subprocess.Popen(["supervisord", "-c", str(conf)], env=env, cwd=tmp_path)

    def ctl(*args: str) -> str:
        return subprocess.run(
            ["supervisorctl", "-c", str(conf), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    try:
        wait_for(lambda: "RUNNING" in ctl("status", "storyworker"), 30, "RUNNING", interval=0.5)
        for _ in range(3):
            job_factory(user_preferences={**PREFS, "words_per_bullet": 300})
        wait_for(
            lambda: (
                conn.execute(
                    "select count(*) as n from generation_jobs where status = 'processing'"
                ).fetchone()["n"]
                == 2
            ),
            30,
            "two jobs in flight",
        )
        stopped = ctl("stop", "storyworker")
        assert "stopped" in stopped, stopped
        assert "STOPPED" in ctl("status", "storyworker")
        rows = conn.execute(
            "select status, count(*) as n from generation_jobs group by status"
        ).fetchall()
        assert "processing" not in {r["status"] for r in rows}, rows
        log = (tmp_path / "storyworker.log").read_text()
        assert "supervisor stopped" in log and "exit_code=0" in log
    finally:
        ctl("shutdown")
        daemon.wait(timeout=30)
