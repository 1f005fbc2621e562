"""Drives `storyworker run` as a real process for acceptance tests."""

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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

FAST_ENV = {
    "GENERATION_PROVIDER": "offline",
    "OFFLINE_LATENCY_MS": "20",
    "POLL_INTERVAL_MS": "500",
    "RETRY_BACKOFF_SECONDS": "0.2",
    "LEASE_SECONDS": "5",
    "WORKER_TIMEOUT_SECONDS": "20",
    "SHUTDOWN_GRACE_SECONDS": "10",
    "AI_REQUESTS_PER_MINUTE": "0",
    "HEALTH_HOST": "127.0.0.1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Service:
    """One `storyworker run` process with its own port and log file."""

    def __init__(self, database_url: str, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI", "GOOGLE"))}
        self.env.update(FAST_ENV)
        self.env.update(
            {"DATABASE_URL": database_url, "PORT": str(self.port), "WORKER_CONCURRENCY": "2"}
        )
        self.env.update(env)
        self.log_path = log_dir / f"storyworker-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *args: str, ready: bool = True) -> Service:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "run", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,
            )
        if ready:
            wait_for(self.healthy, 30, "a healthy /health")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                body = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as err:
            body, status = err.read().decode(), err.code
        return status, (json.loads(body) if body.startswith("{") else body)

    def health(self) -> dict[str, Any] | None:
        try:
            return self.get("/health")[1]
        except OSError:
            return None

    def healthy(self) -> bool:
        body = self.health()
        return bool(body) and body.get("status") == "healthy"

    def workers(self) -> list[dict[str, Any]]:
        return (self.health() or {}).get("workers", [])

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill_everything(self) -> None:
        """kill -9 the supervisor and every process it started, all at once, as when
        the host dies: frozen first, so none can react to another's death."""
        pids = [self.pid, *children_of(self.pid)]
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        self.proc.wait(timeout=10)


def process_table() -> dict[int, tuple[int, bytes]]:
    """Every process now: pid -> (parent pid, command line), from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # it exited while we looked
            table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return table


def children_of(pid: int) -> list[int]:
    """Direct and indirect children of `pid`."""
    parents = {child: parent for child, (parent, _) in process_table().items()}
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found
