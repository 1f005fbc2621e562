"""The supervisor at its edges (issue 13, items 6, 7, 11, 12, 13): signals in its first
moments, a killed supervisor's leftovers, a reload that changes the health server's
address or the log format, a health address other than the default, a port in use."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest

from tests.service import free_port, wait_for

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def notify_socket():
    path = tempfile.mktemp(prefix="sw-notify-", suffix=".sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    try:
        yield path, sock
    finally:
        sock.close()
        os.unlink(path)


def wait_ready(sock: socket.socket, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            message = sock.recv(4096).decode()
            if "READY=1" in message:
                return message
    raise AssertionError("no READY=1")


def runtime_dir(logs: str) -> Path:
    match = re.search(r"shared files path=(\S+)", logs)
    assert match, logs
    return Path(match.group(1)).parent


@pytest.mark.parametrize("env", [{"HEALTH_HOST": "127.0.0.2"}, {"PORT": "0"}])
def test_ready_is_sent_when_health_listens_elsewhere_than_the_default(service, env):
    with notify_socket() as (path, sock):
        svc = service(WORKER_CONCURRENCY="1", NOTIFY_SOCKET=path, **env)
        svc.start(ready=False)
        wait_ready(sock, 30)
        logs = svc.logs()
        bound = re.search(r"health server listening host=(\S+) port=(\d+)", logs)
        assert bound, logs
        if "PORT" in env:
            assert bound.group(2) != "0"  # the real port is logged
        else:
            assert bound.group(1) == "127.0.0.2"
        assert svc.stop() == 0


def test_a_health_port_in_use_stops_start_up_with_one_line(service):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        svc = service(PORT=str(port))
        svc.start(ready=False)
        assert svc.proc.wait(30) == 78
    lines = svc.logs().strip().splitlines()
    assert lines == [lines[-1]] and f"PORT {port}" in lines[-1] and "not free" in lines[-1]


def test_a_hup_in_the_first_moment_is_a_reload_not_a_death(service):
    svc = service(WORKER_CONCURRENCY="1")
    svc.start(ready=False)
    time.sleep(0.15)
    svc.send(signal.SIGHUP)
    wait_for(svc.healthy, 30, "a healthy supervisor after the early HUP")
    assert svc.proc.poll() is None
    assert svc.stop() == 0


def test_a_killed_supervisors_runtime_directory_is_removed_by_the_next(service):
    first = service(WORKER_CONCURRENCY="1").start()
    leftover = runtime_dir(first.logs())
    first.kill_everything()
    assert leftover.exists()
    second = service(WORKER_CONCURRENCY="1").start()
    assert not leftover.exists()
    assert second.stop() == 0


def test_hup_applies_the_log_format_and_the_health_servers_new_port(service):
    svc = service(WORKER_CONCURRENCY="1")
    dotenv = svc.log_path.parent / ".env"
    for key in ("PORT", "LOG_FORMAT"):
        svc.env.pop(key, None)
    dotenv.write_text(f"PORT={svc.port}\nLOG_FORMAT=text\n")
    svc.start()
    new_port = free_port()
    dotenv.write_text(f"PORT={new_port}\nLOG_FORMAT=json\n")
    svc.send(signal.SIGHUP)
    svc.port = new_port
    wait_for(svc.healthy, 30, "/health on the new port")
    json_lines = [line for line in svc.logs().splitlines() if line.startswith("{")]
    assert json_lines and all(json.loads(line)["event"] for line in json_lines)
    restarts = [w["restarts"] for w in svc.workers()]
    assert restarts == [0]  # a reload is not a restart
    assert svc.stop() == 0
