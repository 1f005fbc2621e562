"""The shared-memory heartbeat table: field round trips, update semantics, opening by
path, and the seqlock against a real second process writing at full speed."""

from __future__ import annotations

import json
import mmap
import os
import struct
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from health import heartbeat
from health.heartbeat import (
    HeartbeatTable,
    HeartbeatTableError,
    SupervisorState,
    WorkerState,
    current_rss_bytes,
)

CAPACITY = 4
JOB = "3f2b8c1e-9d4a-4e6b-8a7c-1d2e3f405162"
_SEQ = struct.Struct("<Q")


@pytest.fixture
def table(tmp_path: Path) -> Iterator[HeartbeatTable]:
    t = HeartbeatTable.create(CAPACITY, directory=str(tmp_path))
    yield t
    t.close()
    t.unlink()


def run_python(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )


# --- header and slots ----------------------------------------------------------------


def test_create_makes_a_zeroed_table_of_the_right_size(table: HeartbeatTable, tmp_path: Path):
    path = Path(table.path)
    assert path.parent == tmp_path
    assert path.stat().st_size == heartbeat._HEADER_SIZE + CAPACITY * heartbeat._SLOT_SIZE
    assert table.capacity == CAPACITY
    for i in range(CAPACITY):
        w = table.worker(i)
        assert (w.index, w.pid, w.state, w.job_id, w.progress) == (i, 0, WorkerState.EMPTY, None, 0)
        assert (w.jobs_completed, w.jobs_failed, w.restarts, w.rss_bytes, w.pickup) == (
            0,
            0,
            0,
            0,
            "",
        )


def test_header_round_trips_every_field(table: HeartbeatTable):
    before = time.time()
    sup = table.supervisor()
    assert sup.pid == os.getpid()
    assert sup.state == SupervisorState.STARTING
    assert sup.expected_workers == 0
    assert sup.capacity == CAPACITY
    assert sup.started_at <= before
    assert abs(sup.heartbeat - time.monotonic()) < 5

    table.set_supervisor(state=SupervisorState.RUNNING, expected_workers=3, now=1234.5)
    sup = table.supervisor()
    assert (sup.state, sup.expected_workers, sup.heartbeat) == (SupervisorState.RUNNING, 3, 1234.5)
    assert sup.capacity == CAPACITY

    started = sup.started_at
    table.set_supervisor(now=1240.25)  # only the heartbeat moves
    sup = table.supervisor()
    assert (sup.state, sup.expected_workers, sup.heartbeat) == (SupervisorState.RUNNING, 3, 1240.25)
    assert sup.started_at == started

    for state in SupervisorState:
        table.set_supervisor(state=state)
        assert table.supervisor().state == state


def test_slot_round_trips_every_field(table: HeartbeatTable):
    before = time.time()
    table.reset_slot(2, pid=4242, state=WorkerState.STARTING, restarts=7, now=500.0)
    after = time.time()
    w = table.worker(2)
    assert (w.index, w.pid, w.state, w.restarts, w.heartbeat) == (
        2,
        4242,
        WorkerState.STARTING,
        7,
        500.0,
    )
    assert before <= w.started_at <= after

    table.update_slot(
        2,
        state=WorkerState.BUSY,
        job_id=uuid.UUID(JOB),
        progress=42,
        rss_bytes=(5 << 33) + 17,  # beyond 32 bits
        pickup="listen",
        completed_delta=3,
        failed_delta=2,
        now=512.75,
    )
    w = table.worker(2)
    assert w.index == 2
    assert w.pid == os.getpid()  # the writer's own pid
    assert w.state == WorkerState.BUSY
    assert w.job_id == JOB
    assert w.progress == 42
    assert w.heartbeat == 512.75
    assert (w.jobs_completed, w.jobs_failed) == (3, 2)
    assert w.restarts == 7
    assert w.rss_bytes == (5 << 33) + 17
    assert before <= w.started_at <= after  # kept from the reset
    assert w.pickup == "listen"

    table.update_slot(2, pickup="poll")
    assert table.worker(2).pickup == "poll"
    for state in WorkerState:
        table.update_slot(2, state=state)
        assert table.worker(2).state == state
    # The neighbours are untouched.
    assert table.worker(1).state == WorkerState.EMPTY
    assert table.worker(3).state == WorkerState.EMPTY


def test_update_slot_keeps_what_it_is_not_given(table: HeartbeatTable):
    table.update_slot(0, state=WorkerState.BUSY, job_id=JOB, progress=30, rss_bytes=99, now=1.0)
    table.update_slot(0, completed_delta=1, now=2.0)
    w = table.worker(0)
    assert (w.state, w.job_id, w.progress, w.rss_bytes, w.heartbeat) == (
        WorkerState.BUSY,
        JOB,
        30,
        99,
        2.0,
    )
    assert (w.jobs_completed, w.jobs_failed) == (1, 0)


def test_update_slot_job_id_set_keep_clear(table: HeartbeatTable):
    table.update_slot(0, job_id=JOB)
    assert table.worker(0).job_id == JOB
    table.update_slot(0, progress=10)  # left out: kept
    assert table.worker(0).job_id == JOB
    other = uuid.uuid4()
    table.update_slot(0, job_id=other)  # a UUID object is accepted
    assert table.worker(0).job_id == str(other)
    table.update_slot(0, job_id=None)  # None: cleared
    assert table.worker(0).job_id is None
    assert table.worker(0).progress == 10


def test_counters_accumulate(table: HeartbeatTable):
    for _ in range(5):
        table.update_slot(1, completed_delta=1)
    table.update_slot(1, failed_delta=2)
    w = table.worker(1)
    assert (w.jobs_completed, w.jobs_failed) == (5, 2)


def test_reset_slot_keeps_job_counters_and_clears_the_rest(table: HeartbeatTable):
    table.reset_slot(1, pid=10, state=WorkerState.STARTING, restarts=0, now=1.0)
    table.update_slot(
        1,
        state=WorkerState.BUSY,
        job_id=JOB,
        progress=80,
        rss_bytes=1 << 20,
        pickup="poll",
        completed_delta=4,
        failed_delta=1,
        now=2.0,
    )
    table.reset_slot(1, pid=11, state=WorkerState.DEAD, restarts=1, now=3.0)
    w = table.worker(1)
    assert (w.pid, w.state, w.restarts, w.heartbeat) == (11, WorkerState.DEAD, 1, 3.0)
    assert (w.job_id, w.progress, w.rss_bytes, w.pickup) == (None, 0, 0, "")
    assert (w.jobs_completed, w.jobs_failed) == (4, 1)


def test_workers_returns_exactly_the_expected_slots(table: HeartbeatTable):
    assert table.workers() == []
    table.update_slot(2, state=WorkerState.IDLE)
    table.set_supervisor(expected_workers=3)
    ws = table.workers()
    assert [w.index for w in ws] == [0, 1, 2]
    assert ws[2].state == WorkerState.IDLE
    table.set_supervisor(expected_workers=1)
    assert [w.index for w in table.workers()] == [0]
    # Never more than the table holds, whatever the header claims.
    table.set_supervisor(expected_workers=CAPACITY + 5)
    assert [w.index for w in table.workers()] == list(range(CAPACITY))


@pytest.mark.parametrize("index", [-1, CAPACITY, CAPACITY + 100])
def test_index_out_of_range(table: HeartbeatTable, index: int):
    with pytest.raises(IndexError, match="outside the table"):
        table.worker(index)
    with pytest.raises(IndexError):
        table.update_slot(index, progress=1)
    with pytest.raises(IndexError):
        table.reset_slot(index, pid=1, state=WorkerState.IDLE, restarts=0)


def test_age_uses_the_injected_now(table: HeartbeatTable):
    table.set_supervisor(now=100.0)
    table.update_slot(0, now=90.0)
    assert table.supervisor().age(now=112.5) == 12.5
    assert table.worker(0).age(now=112.5) == 22.5
    table.update_slot(0)  # real monotonic clock
    assert 0 <= table.worker(0).age() < 5


def test_current_rss_bytes_is_plausible():
    assert 1 << 20 < current_rss_bytes() < 1 << 40


# --- opening by path -----------------------------------------------------------------


def test_open_sees_the_same_memory(table: HeartbeatTable):
    other = HeartbeatTable.open(table.path)
    try:
        assert other.capacity == CAPACITY
        table.update_slot(3, progress=61, job_id=JOB)
        assert (other.worker(3).progress, other.worker(3).job_id) == (61, JOB)
        other.set_supervisor(expected_workers=2)
        assert table.supervisor().expected_workers == 2
    finally:
        other.close()


def test_open_missing_file(tmp_path: Path):
    path = tmp_path / "nope.heartbeat"
    with pytest.raises(HeartbeatTableError, match="cannot open heartbeat table") as info:
        HeartbeatTable.open(str(path))
    assert str(path) in str(info.value)
    assert "No such file" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"SWHBEAT1", id="too-short"),
        pytest.param(bytes(4096), id="zeros"),
        pytest.param(b"x" * 4096, id="garbage"),
    ],
)
def test_open_rejects_what_is_not_a_table(tmp_path: Path, content: bytes):
    path = tmp_path / "bad.heartbeat"
    path.write_bytes(content)
    with pytest.raises(HeartbeatTableError, match="is not a storyworker heartbeat table") as info:
        HeartbeatTable.open(str(path))
    assert str(path) in str(info.value)


def test_open_rejects_a_truncated_table(table: HeartbeatTable):
    # The header promises more slots than the file holds.
    os.truncate(table.path, heartbeat._HEADER_SIZE + (CAPACITY - 1) * heartbeat._SLOT_SIZE)
    with pytest.raises(HeartbeatTableError, match="not a storyworker heartbeat table"):
        HeartbeatTable.open(table.path)


def test_open_rejects_another_version(table: HeartbeatTable):
    with open(table.path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", heartbeat.VERSION + 1))
    with pytest.raises(HeartbeatTableError, match="not a storyworker heartbeat table"):
        HeartbeatTable.open(table.path)


def test_another_process_reads_what_this_one_wrote(table: HeartbeatTable):
    table.set_supervisor(state=SupervisorState.RUNNING, expected_workers=2, now=77.0)
    table.update_slot(
        1,
        state=WorkerState.BUSY,
        job_id=JOB,
        progress=55,
        rss_bytes=123,
        completed_delta=9,
        failed_delta=4,
        pickup="listen",
        now=80.0,
    )
    out = run_python(
        """
        import json, sys
        from health.heartbeat import HeartbeatTable
        t = HeartbeatTable.open(sys.argv[1])
        s, w = t.supervisor(), t.workers()[1]
        print(json.dumps([s.state.label, s.expected_workers, s.heartbeat, s.pid,
                          w.state.label, w.job_id, w.progress, w.rss_bytes, w.jobs_completed,
                          w.jobs_failed, w.pickup, w.heartbeat, w.pid]))
        # And a write from there comes back here.
        t.update_slot(0, progress=12, now=81.0)
        """,
        table.path,
    )
    assert json.loads(out.stdout) == [
        "running",
        2,
        77.0,
        os.getpid(),
        "busy",
        JOB,
        55,
        123,
        9,
        4,
        "listen",
        80.0,
        os.getpid(),
    ]
    w0 = table.worker(0)
    assert (w0.progress, w0.heartbeat) == (12, 81.0)
    assert w0.pid not in (0, os.getpid())


# --- the seqlock against a real concurrent writer ------------------------------------

WRITER = """
import sys, time, uuid
from health.heartbeat import HeartbeatTable, SupervisorState, WorkerState
t = HeartbeatTable.open(sys.argv[1])
what, seconds = sys.argv[2], float(sys.argv[3])
print("go", flush=True)
n, deadline = 0, time.monotonic() + seconds
while time.monotonic() < deadline:
    n += 1
    if what == "slot":
        t.update_slot(
            0, state=WorkerState.BUSY if n % 2 else WorkerState.IDLE,
            job_id=uuid.UUID(int=(n << 64) | n), progress=n % 101, rss_bytes=n,
            completed_delta=1, failed_delta=1, now=float(n),
        )
    else:
        t.set_supervisor(state=SupervisorState(n % 4), expected_workers=n, now=float(n))
print(n, flush=True)
"""


def start_writer(path: str, what: str, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, path, what, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "go"
    return proc


def finish_writer(proc: subprocess.Popen[str]) -> int:
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return int(out.split()[-1])


def check_slot(w: heartbeat.WorkerSnapshot) -> int:
    n = w.jobs_completed
    assert w.jobs_failed == n
    assert w.rss_bytes == n
    assert w.heartbeat == float(n)
    assert w.progress == n % 101
    assert w.state == (WorkerState.BUSY if n % 2 else WorkerState.IDLE)
    assert w.job_id == str(uuid.UUID(int=(n << 64) | n))
    assert w.restarts == 0
    return n


def check_header(s: heartbeat.SupervisorSnapshot) -> int:
    n = s.expected_workers
    assert s.heartbeat == float(n)
    assert s.state == SupervisorState(n % 4)
    assert s.capacity == CAPACITY
    return n


@pytest.mark.slow
def test_slot_reads_are_never_torn_while_another_process_writes(table: HeartbeatTable):
    table.update_slot(0, state=WorkerState.IDLE, now=0.0)  # what the writer's n == 0 means
    proc = start_writer(table.path, "slot", 1.0)
    reads, seen, last = 0, set(), 0
    try:
        while proc.poll() is None or reads < 20_000:
            w = table.worker(0)
            if w.jobs_completed == 0:
                assert (w.job_id, w.progress, w.rss_bytes, w.heartbeat) == (None, 0, 0, 0.0)
            else:
                n = check_slot(w)
                assert n >= last, "a reader went back in time"
                last = n
                seen.add(n)
            reads += 1
    finally:
        written = finish_writer(proc)
    assert reads >= 20_000
    assert len(seen) > 100, "the reads did not overlap the writes"
    assert check_slot(table.worker(0)) == written


@pytest.mark.slow
def test_header_reads_are_never_torn_while_another_process_writes(table: HeartbeatTable):
    table.set_supervisor(state=SupervisorState.STARTING, expected_workers=0, now=0.0)
    proc = start_writer(table.path, "header", 1.0)
    reads, seen = 0, set()
    try:
        while proc.poll() is None or reads < 20_000:
            seen.add(check_header(table.supervisor()))
            reads += 1
    finally:
        written = finish_writer(proc)
    assert len(seen) > 100, "the reads did not overlap the writes"
    assert check_header(table.supervisor()) == written


# --- a writer killed mid-write -------------------------------------------------------


def _force_odd(path: str, offset: int) -> None:
    """What a writer killed between its two sequence stores leaves behind."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        (seq,) = _SEQ.unpack_from(mm, offset)
        _SEQ.pack_into(mm, offset, seq + 1 if seq % 2 == 0 else seq)


def _seq(path: str, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return _SEQ.unpack(f.read(_SEQ.size))[0]


def _timed(fn, *args):
    started = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - started


def test_a_writer_killed_mid_slot_write_neither_hangs_readers_nor_sticks(table: HeartbeatTable):
    table.update_slot(1, state=WorkerState.BUSY, job_id=JOB, progress=33, now=5.0)
    offset = heartbeat._HEADER_SIZE + 1 * heartbeat._SLOT_SIZE
    _force_odd(table.path, offset)
    assert _seq(table.path, offset) % 2 == 1

    w, elapsed = _timed(table.worker, 1)
    assert elapsed < 2.0, "a reader must give up on a dead writer"
    assert (w.job_id, w.progress) == (JOB, 33)  # the last complete write
    assert table.worker(0).state == WorkerState.EMPTY  # other slots unaffected, and fast

    # The next write (the supervisor's reset on reap) repairs the parity.
    table.reset_slot(1, pid=0, state=WorkerState.DEAD, restarts=1)
    assert _seq(table.path, offset) % 2 == 0
    w, elapsed = _timed(table.worker, 1)
    assert w.state == WorkerState.DEAD
    assert elapsed < 0.05
    table.update_slot(1, state=WorkerState.IDLE)
    assert _seq(table.path, offset) % 2 == 0


def test_a_writer_killed_mid_header_write_neither_hangs_readers_nor_sticks(
    table: HeartbeatTable,
):
    table.set_supervisor(state=SupervisorState.RUNNING, expected_workers=2, now=9.0)
    _force_odd(table.path, heartbeat._HEADER_SEQ_OFFSET)

    sup, elapsed = _timed(table.supervisor)
    assert elapsed < 2.0
    assert (sup.state, sup.expected_workers) == (SupervisorState.RUNNING, 2)
    _, elapsed = _timed(table.workers)
    assert elapsed < 4.0

    table.set_supervisor(now=10.0)
    assert _seq(table.path, heartbeat._HEADER_SEQ_OFFSET) % 2 == 0
    sup, elapsed = _timed(table.supervisor)
    assert (sup.heartbeat, elapsed < 0.05) == (10.0, True)
