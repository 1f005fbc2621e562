"""Operating `storyworker run`: cancellation, systemd notify, traceback dumps, JSON logs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import time

import pytest

from tests.acceptance.conftest import PREFS
from tests.acceptance.test_supervisor import busy_worker, statuses
from tests.service import wait_for

pytestmark = pytest.mark.slow


def content_of(conn, chapter_id) -> str:
    return conn.execute("select content from chapters where id = %s", (chapter_id,)).fetchone()[
        "content"
    ]


def test_cancel_stops_the_writer_and_it_takes_the_next_job(service, jobs, conn):
    first, second = jobs(2, {**PREFS, "words_per_bullet": 300})
    svc = service(WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS="40").start()
    wait_for(lambda: busy_worker(svc, min_progress=30), 30, "the first job under way")
    conn.execute("update generation_jobs set status = 'cancelled' where id = %s", (first["id"],))
    cancelled_at = time.monotonic()
    wait_for(
        lambda: (
            conn.execute(
                "select status from generation_jobs where id = %s", (second["id"],)
            ).fetchone()["status"]
            != "pending"
        ),
        15,
        "the next job to start",
    )
    assert time.monotonic() - cancelled_at < 5
    frozen = content_of(conn, first["chapter_id"])
    wait_for(lambda: statuses(conn).get("completed") == 1, 60, "the second job")
    assert content_of(conn, first["chapter_id"]) == frozen  # nothing written after the cancel
    row = conn.execute(
        "select status, progress from generation_jobs where id = %s", (first["id"],)
    ).fetchone()
    assert row["status"] == "cancelled" and row["progress"] < 100
    assert "job lost" in svc.logs() and "was cancelled" in svc.logs()
    svc.stop()


def test_systemd_notify_ready_status_watchdog_stopping(service, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    # Like systemd's NotifyAccess=main: learn who sent each message.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    senders: set[int] = set()
    svc = service(WORKER_CONCURRENCY="2", NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
    svc.start()
    messages: list[str] = []

    def receive_until(predicate, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            with contextlib.suppress(TimeoutError):
                data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
                messages.append(data.decode())
                senders.update(struct.unpack("iII", c[2][:12])[0] for c in ancillary)
        assert predicate(), messages

    receive_until(lambda: sum("WATCHDOG=1" in m for m in messages) >= 3, 10)
    ready = [m for m in messages if "READY=1" in m]
    assert len(ready) == 1 and "STATUS=0/2 workers busy" in ready[0]
    svc.send(signal.SIGTERM)
    receive_until(lambda: any("STOPPING=1" in m for m in messages), 10)
    assert svc.proc.wait(20) == 0
    sock.close()
    assert senders == {svc.pid}  # no worker or health server ever spoke to systemd


def test_no_notify_socket_means_no_systemd_talk(service):
    svc = service(WORKER_CONCURRENCY="1").start()
    assert svc.stop() == 0
    assert "sd_notify" not in svc.logs()


def test_usr1_dumps_a_worker_traceback(service):
    svc = service(WORKER_CONCURRENCY="1").start()
    worker = svc.workers()[0]
    os.kill(worker["pid"], signal.SIGUSR1)
    wait_for(lambda: "most recent call first" in svc.logs(), 10, "the traceback")
    assert 'File "' in svc.logs()
    time.sleep(0.5)
    assert svc.workers()[0]["pid"] == worker["pid"]  # it goes on working
    assert svc.stop() == 0


def test_json_logs_are_one_object_a_line(service, jobs):
    jobs(1)
    svc = service(WORKER_CONCURRENCY="1", LOG_FORMAT="json").start()
    wait_for(lambda: "job completed" in svc.logs(), 30, "a completed job")
    assert svc.stop() == 0
    lines = [line for line in svc.logs().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]
    assert {
        "supervisor starting",
        "worker spawned",
        "job claimed",
        "section written",
        "job completed",
        "supervisor stopped",
    } <= {e["event"] for e in events}
    claimed = next(e for e in events if e["event"] == "job claimed")
    assert {"ts", "level", "job_id", "attempt", "worker"} <= set(claimed)


@pytest.mark.parametrize("signals", [(signal.SIGQUIT,), (signal.SIGTERM, signal.SIGTERM)])
def test_quit_or_a_second_term_releases_at_once(service, jobs, conn, signals):
    jobs(2, {**PREFS, "words_per_bullet": 600})
    svc = service(
        WORKER_CONCURRENCY="2", OFFLINE_LATENCY_MS="50", SHUTDOWN_GRACE_SECONDS="60"
    ).start()
    wait_for(lambda: len([w for w in svc.workers() if w["state"] == "busy"]) == 2, 20, "two busy")
    started = time.monotonic()
    for sig in signals:
        svc.send(sig)
        time.sleep(0.3)
    assert svc.proc.wait(15) == 0
    assert time.monotonic() - started < 10  # far less than the 60 s grace
    rows = conn.execute("select status, attempts from generation_jobs").fetchall()
    assert [r["status"] for r in rows] == ["pending", "pending"]
    assert {r["attempts"] for r in rows} == {0}  # released, no retry used
    assert "job released" in svc.logs()


def test_storyworker_health_prints_the_answer(service):
    import subprocess
    import sys

    svc = service(WORKER_CONCURRENCY="1").start()
    url = f"http://127.0.0.1:{svc.port}/health"
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "health", "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and json.loads(result.stdout)["status"] == "healthy"
    assert svc.stop() == 0
    down = subprocess.run(
        [sys.executable, "-m", "supervisor", "health", "--url", url, "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert down.returncode == 1 and "cannot reach" in down.stderr


def test_listen_can_be_turned_off(service, jobs, conn):
    svc = service(WORKER_CONCURRENCY="1", DATABASE_LISTEN="false", POLL_INTERVAL_MS="200").start()
    jobs(1, {**PREFS, "bullet_count": 1})
    wait_for(lambda: statuses(conn).get("completed") == 1, 20, "a job picked up by polling")
    assert "pickup=poll" in svc.logs() and "polling instead" not in svc.logs()
    assert svc.stop() == 0
