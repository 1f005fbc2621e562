"""One exit-code table (README "Exit codes", supervisor/exitcodes.py), every command
following it (issue 27): each documented code produced, per command, by the case that
should produce it, as a real process. Every non-zero exit but watch's 1 and 4 says why
in one line on stderr, never with a traceback.

Elsewhere: `run` exits 3 for a rejected key (test_openai_service, test_gemini_service)
and `demo` 3 and 130 (test_demo).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import uuid

import pytest

from supervisor import exitcodes
from tests.terminal import cli_env

pytestmark = pytest.mark.slow

UNREACHABLE = "postgresql://app:pw@127.0.0.1:1/app?connect_timeout=2"
MALFORMED = "postgresql://app:pw@127.0.0.1:abc/app"
MISSING = str(uuid.uuid4())

#: command -> [(arguments, environment, expected code, words of its one stderr line)].
#: In arguments, {pending}, {failed}, {cancelled}, {completed}, {chapter} are ids from
#: the test's database; in environments, "db" is its DATABASE_URL.
CASES: dict[str, list[tuple[tuple[str, ...], dict[str, str], int, str]]] = {
    "migrate": [
        (("migrate",), {"DATABASE_URL": "db"}, 0, ""),
        (("migrate", "--bogus"), {}, 2, "No such option"),
        (("migrate",), {"DATABASE_URL": UNREACHABLE}, 69, "cannot connect"),
        (("migrate",), {"DATABASE_URL": MALFORMED}, 78, "port that is not a number"),
        (("migrate",), {}, 78, "DATABASE_URL is not set"),
    ],
    "run": [
        (("run", "--bogus"), {}, 2, "No such option"),
        (("run", "--concurrency", "abc"), {"DATABASE_URL": "db"}, 78, "--concurrency must be"),
        (("run", "--port", "x"), {"DATABASE_URL": "db"}, 78, "--port must be"),
        (("run",), {"DATABASE_URL": "db", "WORKER_CONCURRENCY": "abc"}, 78, "WORKER_CONC"),
        (("run", "--provider", "gpt"), {"DATABASE_URL": "db"}, 78, "provider must be one of"),
        (("run",), {"DATABASE_URL": MALFORMED}, 78, "port that is not a number"),
        (("run",), {"DATABASE_URL": UNREACHABLE}, 69, "cannot connect"),
    ],
    "enqueue": [
        (("enqueue", "--chapter", "{chapter}"), {"DATABASE_URL": "db"}, 0, ""),
        (("enqueue", "--chapter", "{chapter}", "--prefs", "{"), {"DATABASE_URL": "db"}, 2, "JSON"),
        (("enqueue", "--chapter", "{chapter}", "--prefs", "@/nonexistent.json"),
         {"DATABASE_URL": "db"}, 2, "cannot read preferences file"),
        (("enqueue", "--chapter", MISSING), {"DATABASE_URL": "db"}, 66, "no chapter with id"),
        (("enqueue", "--chapter", MISSING), {"DATABASE_URL": UNREACHABLE}, 69, "cannot connect"),
        (("enqueue", "--chapter", MISSING), {"DATABASE_URL": MALFORMED}, 78, "port"),
    ],
    "jobs list": [
        (("jobs", "list"), {"DATABASE_URL": "db"}, 0, ""),
        (("jobs", "list", "--status", "done"), {"DATABASE_URL": "db"}, 2, "--status"),
        (("jobs", "list"), {"DATABASE_URL": UNREACHABLE}, 69, "cannot connect"),
        (("jobs", "list"), {"DATABASE_URL": MALFORMED}, 78, "port that is not a number"),
    ],
    "jobs show": [
        (("jobs", "show", "{pending}"), {"DATABASE_URL": "db"}, 0, ""),
        (("jobs", "show", "not-a-uuid"), {"DATABASE_URL": "db"}, 2, "not a valid UUID"),
        (("jobs", "show", MISSING), {"DATABASE_URL": "db"}, 66, "no job with id"),
        (("jobs", "show", MISSING), {"DATABASE_URL": UNREACHABLE}, 69, "cannot connect"),
        (("jobs", "show", MISSING), {"DATABASE_URL": MALFORMED}, 78, "port"),
    ],
    "jobs retry": [
        (("jobs", "retry", "{failed}"), {"DATABASE_URL": "db"}, 0, ""),
        (("jobs", "retry", "{completed}"), {"DATABASE_URL": "db"}, 1, "completed"),
        (("jobs", "retry", "--status", "pending"), {"DATABASE_URL": "db"}, 2,
         "--status must be failed or cancelled"),
        (("jobs", "retry", MISSING), {"DATABASE_URL": "db"}, 66, "no job with id"),
        (("jobs", "retry", MISSING), {"DATABASE_URL": UNREACHABLE}, 69, "cannot connect"),
        (("jobs", "retry", MISSING), {"DATABASE_URL": MALFORMED}, 78, "port"),
    ],
    "jobs cancel": [
        (("jobs", "cancel", "{pending}"), {"DATABASE_URL": "db"}, 0, ""),
        (("jobs", "cancel", "{completed}"), {"DATABASE_URL": "db"}, 1, "completed"),
        (("jobs", "cancel", "--status", "failed"), {"DATABASE_URL": "db"}, 2,
         "--status must be pending or processing"),
        (("jobs", "cancel", MISSING), {"DATABASE_URL": "db"}, 66, "no job with id"),
        (("jobs", "cancel", MISSING), {"DATABASE_URL": UNREACHABLE}, 69, "cannot connect"),
        (("jobs", "cancel", MISSING), {"DATABASE_URL": MALFORMED}, 78, "port"),
    ],
    "watch": [
        (("watch", "{completed}"), {"DATABASE_URL": "db"}, 0, ""),
        (("watch", "{failed}"), {"DATABASE_URL": "db"}, 1, ""),
        (("watch", "{cancelled}"), {"DATABASE_URL": "db"}, 4, ""),
        (("watch", "not-a-uuid"), {"DATABASE_URL": "db"}, 2, "not a valid UUID"),
        (("watch", MISSING), {"DATABASE_URL": "db"}, 66, "no job with id"),
        (("watch", MISSING), {"DATABASE_URL": UNREACHABLE}, 69, "cannot connect"),
        (("watch", MISSING), {"DATABASE_URL": MALFORMED}, 78, "port"),
    ],
    "status": [
        (("status", "--json"), {"DATABASE_URL": "db"}, 0, ""),
        (("status", "--bogus"), {"DATABASE_URL": "db"}, 2, "No such option"),
        (("status",), {"DATABASE_URL": UNREACHABLE}, 69, "cannot connect"),
        (("status",), {"DATABASE_URL": MALFORMED}, 78, "port"),
    ],
    "health": [
        (("health", "--url", "http://127.0.0.1:1/health"), {}, 1, ""),
        (("health", "--bogus"), {}, 2, "No such option"),
        (("health",), {"PORT": "not-a-port"}, 78, "PORT must be"),
    ],
    "demo": [
        (("demo", "--bogus"), {}, 2, "No such option"),
        (("demo", "--database-url", UNREACHABLE), {}, 69, "cannot connect"),
        (("demo", "--database-url", MALFORMED), {}, 78, "--database-url has a port"),
    ],
}  # fmt: skip


def storyworker(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        # `run` gives up on an unreachable database at once (waiting for one is
        # test_database_outage's).
        env=cli_env({"GENERATION_PROVIDER": "offline", "DATABASE_WAIT_SECONDS": "0", **env}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def ids(job_factory, chapter_factory, conn) -> dict[str, str]:
    """A job in each status, and a chapter with no job."""
    found = {"chapter": str(chapter_factory()["id"])}
    for status in ("pending", "failed", "cancelled", "completed"):
        job = job_factory()
        if status != "pending":
            conn.execute(
                "update generation_jobs set status = %s, completed_at = now() where id = %s",
                (status, job["id"]),
            )
        found[status] = str(job["id"])
    return found


def test_every_code_of_the_table_is_produced_here_or_named_above():
    produced = {code for cases in CASES.values() for _, _, code, _ in cases}
    elsewhere = {exitcodes.CANNOT_BOOT, exitcodes.INTERRUPTED}  # below and in the docstring
    assert produced | elsewhere == set(exitcodes.TABLE)


@pytest.mark.parametrize("command", CASES)
def test_each_command_exits_with_the_documented_code(command, ids, database_url):
    for template, variables, code, words in CASES[command]:
        args = tuple(a.format(**ids) if "{" in a and a != "{" else a for a in template)
        env = {k: database_url if v == "db" else v for k, v in variables.items()}
        result = storyworker(args, env)
        shown = f"{' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert result.returncode == code, shown
        assert "Traceback" not in result.stderr, shown
        if code not in (0, 1, 4):
            assert words in result.stderr, shown
            assert sum(line.startswith(("Error:", "storyworker:")) for line in
                       result.stderr.splitlines()) == 1, shown  # fmt: skip


def interrupt(args: tuple[str, ...], env: dict[str, str]) -> tuple[int, str]:
    """Run `storyworker ARGS`, Ctrl-C it once it has drawn something; (code, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", *args],
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # its first frame: it is inside its loop
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def test_watch_and_status_watch_exit_130_on_ctrl_c(ids, database_url):
    env = {"DATABASE_URL": database_url}
    for args in (("watch", ids["pending"]), ("status", "--watch", "--json")):
        code, err = interrupt(args, env)
        assert code == exitcodes.INTERRUPTED and "Traceback" not in err, (args, err)


def test_run_exits_0_on_term_and_78_on_a_taken_port_and_health_answers_0(service):
    svc = service().start()
    health = storyworker(("health",), {"PORT": str(svc.port)})
    assert health.returncode == 0, health.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        second = service(PORT=str(port)).start(ready=False)
        assert second.proc.wait(60) == exitcodes.CONFIG
    assert "is not free for the health server" in second.logs()
    assert svc.stop() == exitcodes.OK
