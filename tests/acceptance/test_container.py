"""storyworker where the app's team deploys it: as a container's command, PID 1.

- `storyworker run` as PID 1 of a fresh PID namespace (what Railway, Fly.io and App
  Platform do with an image's CMD): /health answers, SIGTERM stops it with exit 0.
- The image that `Dockerfile` builds, run with podman against the suite's PostgreSQL:
  healthy, a job done, a running job released with its checkpoint by `podman stop`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.acceptance.conftest import PREFS
from tests.service import FAST_ENV, free_port, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# --kill-child: if this test dies, the namespace's PID 1 and with it every process in
# the namespace die too.
UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")


def service_env(database_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI", "GOOGLE"))}
    env.update(FAST_ENV)
    env.update(DATABASE_URL=database_url, PORT=str(port), WORKER_CONCURRENCY="2", **extra)
    return env


def health_status(port: int) -> int | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


# --- PID 1 ---------------------------------------------------------------------------


def unshare_refusal() -> str | None:
    """Why a PID namespace cannot be made here, or None when it can."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"unshare --pid is not permitted here: {probe.stderr.strip()}"
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def only_child(pid: int) -> int | None:
    kids = children(pid)
    return kids[0] if len(kids) == 1 else None


def health_server_of(supervisor: int) -> tuple[int, int] | None:
    """(gunicorn master, its worker): the supervisor's one child with a child of its own
    (storyworker's workers fork nothing)."""
    found = [(kid, only_child(kid)) for kid in children(supervisor)]
    found = [(master, worker) for master, worker in found if worker is not None]
    return found[0] if len(found) == 1 else None


def namespace_pid(pid: int) -> int:
    """`pid`'s number inside its own (innermost) PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid line for {pid}")


def test_storyworker_run_as_pid_1_serves_health_reaps_orphans_and_stops_on_sigterm(
    database_url, tmp_path
):
    refusal = unshare_refusal()
    if refusal:
        pytest.skip(refusal)
    port = free_port()
    log_path = tmp_path / "pid1.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*UNSHARE, sys.executable, "-m", "supervisor", "run"],
            env=service_env(database_url, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        supervisor = wait_for(lambda: only_child(proc.pid), 10, "the namespace's PID 1")
        assert namespace_pid(supervisor) == 1
        started = time.monotonic()
        wait_for(lambda: health_status(port) == 200, 20, "/health to answer 200")
        print(f"/health answered 200 {time.monotonic() - started:.1f}s after start")
        time.sleep(1.0)  # a health server that dies and is respawned would show now
        assert health_status(port) == 200
        logs = log_path.read_text(errors="replace")
        assert "health server exited" not in logs, logs
        assert logs.count("health server spawned") == 1, logs

        # PID 1 must reap what it did not start, as init does: kill the health server's
        # gunicorn master, and its orphaned worker (re-parented to PID 1, ended by its
        # parent-death signal) must not stay a zombie. The health server comes back.
        master, orphan = wait_for(lambda: health_server_of(supervisor), 5, "the health server")
        os.kill(master, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{orphan}").exists(), 5, "PID 1 to reap the orphan")
        wait_for(lambda: health_status(port) == 200, 20, "a new health server")

        # As a platform stops a container: SIGTERM to its PID 1 (from outside the
        # namespace, which PID 1 receives because it handles TERM).
        os.kill(supervisor, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        logs = log_path.read_text(errors="replace")
        assert "supervisor stopped" in logs and "exit_code=0" in logs, logs
        assert health_status(port) is None
    finally:
        if proc.poll() is None:
            proc.kill()  # unshare --kill-child takes the whole namespace with it
            proc.wait(timeout=10)
        print(f"--- {log_path.name} ---", log_path.read_text(errors="replace"), sep="\n")


# --- the image, under podman ---------------------------------------------------------

IMAGE_TAG = "localhost/storyworker:test"
#: One short job and one that runs far longer than the image's shutdown grace.
RUN = ("podman", "run", "--detach", "--network", "host", "--memory", "512m")
SHORT = {**PREFS, "bullet_count": 1, "words_per_bullet": 60}
LONG = {**PREFS, "bullet_count": 12, "words_per_bullet": 300}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.stderr.strip()}")
    return result


def podman_storage() -> Path | None:
    """Where podman keeps images here, or None when it has no storage yet (then the base
    image cannot be there either, and asking podman would create its storage)."""
    if os.environ.get("CONTAINERS_STORAGE_CONF"):
        return Path(os.environ["CONTAINERS_STORAGE_CONF"])
    if os.geteuid() == 0:
        default = Path("/var/lib/containers/storage")
    else:
        default = Path.home() / ".local/share/containers/storage"
    return default if default.is_dir() else None


def podman_refusal(base: str) -> str | None:
    """Why the image cannot be built and run here, or None when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/run installs it from Debian)"
    if podman_storage() is None:
        return (
            "podman has no image storage here, so no base image: `bash .ci/run containers`"
            " builds a stand-in and prints the CONTAINERS_* settings to export"
        )
    info = podman("info", check=False)
    if info.returncode != 0:
        return f"podman does not work here: {info.stderr.strip()[:300]}"
    if podman("image", "exists", base, check=False).returncode != 0:
        return (
            f"the Dockerfile's base image {base} is not in podman's storage and no registry"
            " is reachable (.ci/run builds a stand-in from Debian packages)"
        )
    return None


@pytest.fixture(scope="module")
def image() -> Iterator[dict[str, Any]]:
    """The image `Dockerfile` builds, and what `podman image inspect` says of it."""
    from tests.unit.test_platform_files import read_image

    refusal = podman_refusal(read_image().base)
    if refusal:
        pytest.skip(refusal)
    started = time.monotonic()
    # --format docker keeps HEALTHCHECK (the OCI format has no such field); the host's
    # network lets the build's pip reach the package index however the host does.
    build = podman(
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "-t",
        IMAGE_TAG,
        str(ROOT),
        check=False,
        timeout=280,  # under pytest-timeout's 300 s, to fail with the build log
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (inspected,) = json.loads(podman("image", "inspect", IMAGE_TAG).stdout)
    print(
        f"built {IMAGE_TAG} in {time.monotonic() - started:.0f}s, {inspected['Size'] / 1e6:.0f} MB"
    )
    yield inspected
    podman("rmi", "--force", IMAGE_TAG, check=False)


def test_the_image_runs_as_non_root_with_its_health_check_and_stop_signal(image):
    config = image["Config"]
    assert config["User"].split(":")[0] not in ("", "0", "root")
    assert config["StopSignal"] == "SIGTERM"
    assert config["Cmd"] == ["storyworker", "run"]
    assert not config.get("Entrypoint")
    assert "3951/tcp" in config["ExposedPorts"]
    # podman keeps it beside Config (docker inspect has it inside).
    check = image.get("Healthcheck") or config["Healthcheck"]
    assert check["Test"][:3] == ["CMD", "storyworker", "health"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["SHUTDOWN_GRACE_SECONDS"] == "8" and env["PORT"] == "3951"
    secret = ("DATABASE_URL", "API_KEY", "PASSWORD", "SECRET", "TOKEN")
    assert not [name for name in env if any(word in name for word in secret)]


def reachable_dsn(database_url: str) -> tuple[str, list[str]]:
    """A DSN that works from a container on the host's network, and the podman options
    it needs. A TCP server (127.0.0.1 or elsewhere) is reached as it is; a Unix socket
    (the suite's own pgserver has no TCP listener) is mounted into the container."""
    with psycopg.connect(database_url) as conn:
        host, port = conn.info.host, conn.info.port
    if not host.startswith("/"):
        return database_url, []
    socket_file = f".s.PGSQL.{port}"
    mount = f"{host}/{socket_file}:/run/postgresql/{socket_file}"
    params = conninfo_to_dict(database_url)
    params.pop("hostaddr", None)
    return make_conninfo(**{**params, "host": "/run/postgresql", "port": str(port)}), [
        "--volume",
        mount,
    ]


def job_row(conn: psycopg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    return conn.execute(
        "select status, attempts, progress, current_step, checkpoint, error_message"
        " from generation_jobs where id = %s",
        (job_id,),
    ).fetchone()


def test_the_image_serves_health_runs_a_job_and_releases_one_on_podman_stop(
    image, database_url, job_factory, conn
):
    dsn, mount = reachable_dsn(database_url)
    port = free_port()
    name = f"storyworker-test-{uuid.uuid4().hex[:8]}"
    settings = {
        "GENERATION_PROVIDER": "offline",
        "OFFLINE_LATENCY_MS": "100",
        "WORKER_CONCURRENCY": "1",
        "POLL_INTERVAL_MS": "500",
        "AI_REQUESTS_PER_MINUTE": "0",
        "PORT": str(port),
        "HEALTH_HOST": "127.0.0.1",
    }
    env_options = [f"--env={key}={value}" for key, value in settings.items()]
    # DATABASE_URL's value comes from podman's environment, not from its command line.
    run = subprocess.run(
        [*RUN, "--name", name, "--env=DATABASE_URL", *env_options, *mount, IMAGE_TAG],
        env={**os.environ, "DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        assert run.returncode == 0, run.stderr

        def healthy() -> bool:
            state = json.loads(podman("inspect", name).stdout)[0]["State"]
            assert state["Running"], podman("logs", name).stderr
            return podman("healthcheck", "run", name, check=False).returncode == 0

        wait_for(healthy, 60, "podman healthcheck run to pass", interval=0.5)

        short = job_factory(user_preferences=SHORT)
        wait_for(lambda: job_row(conn, short["id"])["status"] == "completed", 60, "a job done")

        long = job_factory(user_preferences=LONG)
        wait_for(
            lambda: (job_row(conn, long["id"])["checkpoint"] or {}).get("sections_done"),
            60,
            "the long job's first section",
        )
        started = time.monotonic()
        podman("stop", "--time", "15", name, timeout=60)
        took = time.monotonic() - started
        print(f"podman stop -t 15 took {took:.1f}s")
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        logs = podman("logs", name).stdout + podman("logs", name).stderr

        assert state["ExitCode"] == 0, logs
        # The image's grace (8 s) and the release fit inside docker stop's default 10 s.
        assert 7 <= took < 10, f"podman stop took {took:.1f}s"
        row = job_row(conn, long["id"])
        assert row["status"] == "pending", row
        assert row["attempts"] == 0 and row["current_step"] == "released", row
        assert row["checkpoint"]["sections_done"] >= 1, row
        assert "grace period over" in logs and "supervisor stopped" in logs, logs
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
