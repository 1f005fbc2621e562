"""The health server as real processes over real HTTP: gunicorn started by
`run_health_server`, stopped by SIGTERM or by its parent's death, and the client that
`storyworker health` uses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config

from health.client import HealthClientError, fetch_health
from health.heartbeat import HeartbeatTable, SupervisorState, WorkerState
from health.server import orphaned, server_options

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

_APP = """
import os, sys
from health.app import HealthConfig, create_app
from health.heartbeat import HeartbeatTable
from health.server import HealthServer, run_health_server, server_options

path, port, markers = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def app():
    return create_app(HealthConfig(table=HeartbeatTable.open(path), worker_timeout_seconds=30))
"""

# The server's whole program: the app is built in gunicorn's worker from the table path.
SERVE = (
    _APP
    + """
try:
    run_health_server(app, "127.0.0.1", port)
finally:
    # Reached only if run_health_server returned into its caller, which it must not.
    open(os.path.join(markers, "returned-%d" % os.getpid()), "w").close()
"""
)

# An intermediate process: it forks the server, says its pid, and dies on "die". It
# records its own pid before the fork and passes it, as the supervisor does.
FORK_THEN_DIE = (
    _APP
    + """
parent = os.getpid()
pid = os.fork()
if pid == 0:
    try:
        run_health_server(app, "127.0.0.1", port, parent_pid=parent)
    finally:
        os._exit(70)
print(pid, flush=True)
sys.stdin.readline()
os._exit(0)
"""
)

# A server told that its parent is a process that is not its parent (as when the
# parent recorded before the fork died before the server started): it must not serve.
SERVE_FOR_A_GONE_PARENT = (
    _APP
    + """
run_health_server(app, "127.0.0.1", port, parent_pid=os.getpid())
"""
)

# gunicorn with the control socket left on: proves the sandbox would notice one.
SERVE_WITH_CONTROL_SOCKET = (
    _APP
    + """
options = server_options("127.0.0.1", port)
options["control_socket_disable"] = False
HealthServer(app, options).run()
"""
)


# --- helpers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def get(url: str) -> tuple[int, bytes] | None:
    """(status, body), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()
    except OSError:  # URLError included
        return None


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def unix_sockets_under(root: Path) -> list[str]:
    with open("/proc/net/unix") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return [row[7] for row in rows if len(row) > 7 and row[7].startswith(str(root))]


def assert_stays_clean(box: Sandbox, seconds: float) -> None:
    """Nothing appears in the sandbox for `seconds` (a control socket shows within
    milliseconds of the first worker: see test_the_sandbox_would_see_a_control_socket)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert box.leftovers() == []
        assert unix_sockets_under(box.root) == []
        time.sleep(0.05)


class Sandbox:
    """Where server processes run: their own HOME, XDG_RUNTIME_DIR and working dir, so
    anything gunicorn would leave behind (a pidfile, a control socket) shows; and a
    markers dir for the scripts. Every process started here is killed at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("home", "xdg", "cwd", "markers"):
            (root / name).mkdir(parents=True)
        (root / "xdg").chmod(0o700)
        self.procs: list[subprocess.Popen[str]] = []
        self.pids: set[int] = set()

    def start(self, code: str, table: HeartbeatTable, port: int, **kwargs: Any):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUNICORN")}
        env |= {
            "HOME": str(self.root / "home"),
            "XDG_RUNTIME_DIR": str(self.root / "xdg"),
            "PYTHONPATH": str(REPO),
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", code, table.path, str(port), str(self.root / "markers")],
            cwd=self.root / "cwd",
            env=env,
            start_new_session=True,
            text=True,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def leftovers(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.root))
            for name in ("home", "xdg", "cwd", "markers")
            for p in (self.root / name).rglob("*")
        )

    def cleanup(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            for stream in (proc.stdin, proc.stdout):
                if stream:
                    stream.close()
            proc.wait(timeout=10)
        for pid in self.pids:  # re-parented servers
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path / "box")
    yield box
    box.cleanup()


@pytest.fixture
def table(tmp_path: Path) -> Iterator[HeartbeatTable]:
    t = HeartbeatTable.create(4, directory=str(tmp_path))
    table_healthy(t)
    yield t
    t.close()
    t.unlink()


def table_healthy(table: HeartbeatTable, workers: int = 2) -> None:
    table.set_supervisor(state=SupervisorState.RUNNING, expected_workers=workers)
    for i in range(workers):
        table.update_slot(i, state=WorkerState.IDLE, rss_bytes=1 << 20)


def wait_until_serving(proc: subprocess.Popen[str], url: str) -> None:
    wait_for(lambda: proc.poll() is not None or get(url + "/health"), 30, "the server")
    assert proc.poll() is None, "the server exited at start-up"


@pytest.fixture
def server(sandbox: Sandbox, table: HeartbeatTable) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = sandbox.start(SERVE, table, port)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(proc, url)
    return proc, url


# --- options -------------------------------------------------------------------------


def test_every_option_is_a_gunicorn_setting():
    # load_config skips what gunicorn does not know: a misspelt key would be silent.
    options = server_options("127.0.0.1", 8080, formatter="logging.Formatter")
    assert set(options) <= set(Config().settings)


def test_options_bind_and_stay_out_of_the_way():
    options = server_options("127.0.0.1", 8080)
    assert options["bind"] == "127.0.0.1:8080"
    assert server_options("::1", 9)["bind"] == "[::1]:9"
    assert options["pidfile"] is None
    assert options["control_socket_disable"] is True
    assert options["workers"] == 1 and options["worker_class"] == "sync"


# --- the orphan check ----------------------------------------------------------------


def test_a_live_parent_is_not_an_orphan_even_when_it_is_pid_1(monkeypatch):
    # A container's command is PID 1: a health server forked by it has parent pid 1.
    monkeypatch.setattr(os, "getppid", lambda: 1)
    assert not orphaned(1)
    assert orphaned(4242)  # forked by 4242, now parented by init: 4242 died


def test_a_server_whose_parent_is_gone_exits_at_once_without_serving(sandbox, table):
    port = free_port()
    proc = sandbox.start(SERVE_FOR_A_GONE_PARENT, table, port)
    assert proc.wait(timeout=10) == 0
    assert get(f"http://127.0.0.1:{port}/health") is None
    assert sandbox.leftovers() == []


# --- real processes ------------------------------------------------------------------


def test_serves_health_and_stops_on_sigterm(sandbox, table, server):
    proc, url = server
    status, raw = get(url + "/health")
    assert status == 200
    body = json.loads(raw)
    assert body["status"] == "healthy"
    assert [(w["index"], w["state"], w["rss_bytes"]) for w in body["workers"]] == [
        (0, "idle", 1 << 20),
        (1, "idle", 1 << 20),
    ]
    workers = children(proc.pid)
    assert len(workers) == 1, "one gunicorn sync worker"
    # While it runs (gunicorn removes both at exit): no pidfile, no control socket.
    assert_stays_clean(sandbox, 1.0)

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    wait_for(lambda: all(gone(p) for p in workers), 5, "the gunicorn worker to exit")
    assert get(url + "/health") is None
    # No pidfile, no control socket, and run_health_server never returned into the
    # caller's code, in gunicorn's master or its worker (no markers).
    assert sandbox.leftovers() == []


def test_the_server_dies_with_its_parent(sandbox, table):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    parent = sandbox.start(
        FORK_THEN_DIE, table, port, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert parent.stdout is not None and parent.stdin is not None
    server_pid = int(parent.stdout.readline())
    sandbox.pids.add(server_pid)
    wait_until_serving(parent, url)
    workers = children(server_pid)
    assert len(workers) == 1
    assert_stays_clean(sandbox, 0.5)

    parent.stdin.write("die\n")
    parent.stdin.flush()
    assert parent.wait(timeout=10) == 0  # os._exit: no clean-up of any kind
    wait_for(lambda: gone(server_pid), 5, "the orphaned server to exit")
    wait_for(lambda: all(gone(p) for p in workers), 5, "its worker to exit")
    assert get(url + "/health") is None
    assert sandbox.leftovers() == []


def test_the_sandbox_would_see_a_control_socket(sandbox, table):
    if "control_socket" not in Config().settings:
        pytest.skip("this gunicorn has no control socket")
    port = free_port()
    proc = sandbox.start(SERVE_WITH_CONTROL_SOCKET, table, port)
    wait_until_serving(proc, f"http://127.0.0.1:{port}")
    wait_for(lambda: unix_sockets_under(sandbox.root), 0.5, "gunicorn's control socket")
    assert "xdg/gunicorn.ctl" in sandbox.leftovers()


# --- the client ----------------------------------------------------------------------


def test_fetch_health_returns_unhealthy_answers(table, server):
    _, url = server
    status, body = fetch_health(url + "/health")
    assert (status, body["status"]) == (200, "healthy")

    # The server reads the live table: a worker dying here shows there.
    table.reset_slot(1, pid=0, state=WorkerState.DEAD, restarts=1)
    status, body = fetch_health(url + "/health")
    assert status == 503
    assert body["status"] == "unhealthy"
    assert any("worker 1" in p for p in body["problems"])
    assert body["workers"][1]["restarts"] == 1

    assert fetch_health(url + "/nope") == (404, {"error": "not found"})
    with pytest.raises(HealthClientError, match="without JSON"):
        fetch_health(url + "/metrics")


def test_fetch_health_on_a_closed_port():
    url = f"http://127.0.0.1:{free_port()}/health"
    with pytest.raises(HealthClientError, match="cannot reach") as info:
        fetch_health(url, timeout=5)
    assert url in str(info.value)


def test_fetch_health_gives_up_on_a_server_that_never_answers():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepted by the kernel, never answered
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/health"
        started = time.monotonic()
        with pytest.raises(HealthClientError, match="cannot reach"):
            fetch_health(url, timeout=0.5)
        assert time.monotonic() - started < 5


def test_fetch_health_wants_an_http_url():
    with pytest.raises(HealthClientError, match="not an http"):
        fetch_health("file:///etc/hostname")


def test_fetch_health_wants_a_json_object():
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"[1, 2]"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Answer) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{httpd.server_address[1]}/health"
            with pytest.raises(HealthClientError, match="without a JSON object"):
                fetch_health(url)
        finally:
            httpd.shutdown()
            thread.join(5)
