"""The shared-memory heartbeat table: field round trips, update semantics, opening by
path, fork, and the seqlock against a real second process writing at full speed."""

from __future__ import annotations

import json
import mmap
import multiprocessing
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from health import heartbeat
from health.heartbeat import (
    HeartbeatTable,
    HeartbeatTableError,
    SupervisorSnapshot,
    SupervisorState,
    WorkerSnapshot,
    WorkerState,
    current_rss_bytes,
)

CAPACITY = 4
JOB = "3f2b8c1e-9d4a-4e6b-8a7c-1d2e3f405162"
ROOT = Path(__file__).resolve().parents[2]
_SEQ = struct.Struct("<Q")


@pytest.fixture
def table(tmp_path: Path) -> Iterator[HeartbeatTable]:
    t = HeartbeatTable.create(CAPACITY, directory=str(tmp_path))
    yield t
    t.close()
    t.unlink()


def run_python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    return done.stdout


# --- creation and round trips --------------------------------------------------------


def test_create_makes_a_table_of_empty_slots(table: HeartbeatTable, tmp_path: Path):
    path = Path(table.path)
    assert path.parent == tmp_path
    assert path.name.startswith(f"storyworker-{os.getpid()}-") and path.suffix == ".heartbeat"
    assert path.stat().st_size == heartbeat._HEADER_SIZE + CAPACITY * heartbeat._SLOT_SIZE
    assert table.capacity == CAPACITY
    for i in range(CAPACITY):
        assert table.worker(i) == WorkerSnapshot(
            i, 0, WorkerState.EMPTY, None, 0, 0.0, 0, 0, 0, 0, 0.0, ""
        )


def test_create_defaults_to_the_runtime_directory(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    t = HeartbeatTable.create(1)
    try:
        assert Path(t.path).parent == tmp_path
    finally:
        t.close()
        t.unlink()
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    expected = "/dev/shm" if os.path.isdir("/dev/shm") else None
    if expected:
        assert heartbeat.default_directory() == expected


@pytest.mark.parametrize("capacity", [0, -1, heartbeat.MAX_CAPACITY + 1])
def test_create_rejects_a_bad_capacity(tmp_path: Path, capacity: int):
    with pytest.raises(ValueError, match="capacity"):
        HeartbeatTable.create(capacity, directory=str(tmp_path))


def test_header_round_trips_every_field(table: HeartbeatTable):
    before = time.time()
    sup = table.supervisor()
    assert (sup.pid, sup.state, sup.expected_workers, sup.capacity) == (
        os.getpid(),
        SupervisorState.STARTING,
        0,
        CAPACITY,
    )
    assert sup.started_at <= before
    assert abs(sup.heartbeat - time.monotonic()) < 5

    table.set_supervisor(state=SupervisorState.RUNNING, expected_workers=3, now=1234.5)
    assert table.supervisor() == SupervisorSnapshot(
        os.getpid(), SupervisorState.RUNNING, 3, CAPACITY, sup.started_at, 1234.5
    )
    table.set_supervisor(now=1240.25)  # only the heartbeat moves
    assert table.supervisor() == SupervisorSnapshot(
        os.getpid(), SupervisorState.RUNNING, 3, CAPACITY, sup.started_at, 1240.25
    )
    for state in SupervisorState:
        table.set_supervisor(state=state)
        assert table.supervisor().state == state
        assert state.label == state.name.lower()


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
    assert table.worker(2) == WorkerSnapshot(
        index=2,
        pid=os.getpid(),  # the writer's own pid
        state=WorkerState.BUSY,
        job_id=JOB,
        progress=42,
        heartbeat=512.75,
        jobs_completed=3,
        jobs_failed=2,
        restarts=7,
        rss_bytes=(5 << 33) + 17,
        started_at=w.started_at,  # kept from the reset
        pickup="listen",
    )
    for state in WorkerState:
        table.update_slot(2, state=state)
        assert table.worker(2).state == state
    assert WorkerState.BUSY.label == "busy"
    # The neighbours are untouched.
    assert table.worker(1).state == table.worker(3).state == WorkerState.EMPTY


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
    table.update_slot(0, progress=10)  # left out: kept
    assert table.worker(0).job_id == JOB
    table.update_slot(0, job_id=None)  # None: cleared
    assert (table.worker(0).job_id, table.worker(0).progress) == (None, 10)


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
    table.reset_slot(1, pid=0, state=WorkerState.DEAD, restarts=1, now=3.0)
    w = table.worker(1)
    assert (w.pid, w.state, w.restarts, w.heartbeat) == (0, WorkerState.DEAD, 1, 3.0)
    assert (w.job_id, w.progress, w.rss_bytes, w.pickup) == (None, 0, 0, "")
    assert (w.jobs_completed, w.jobs_failed) == (4, 1)


def test_workers_are_exactly_the_expected_slots(table: HeartbeatTable):
    assert table.workers() == []
    table.update_slot(2, state=WorkerState.IDLE)
    table.set_supervisor(expected_workers=3)
    assert [w.index for w in table.workers()] == [0, 1, 2]
    assert table.workers()[2].state == WorkerState.IDLE
    table.set_supervisor(expected_workers=1)  # TTOU: slot 2 drops out at once
    assert [w.index for w in table.workers()] == [0]
    table.set_supervisor(expected_workers=CAPACITY + 5)  # never beyond the table
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
    table.update_slot(0)  # the real monotonic clock
    assert 0 <= table.worker(0).age() < 5


def test_current_rss_bytes_is_plausible():
    assert 1 << 20 < current_rss_bytes() < 1 << 40


# --- opening by path, other processes, fork ------------------------------------------


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


def test_open_readonly_reads_but_cannot_write(table: HeartbeatTable):
    table.update_slot(1, progress=9)
    reader = HeartbeatTable.open(table.path, readonly=True)
    try:
        assert reader.worker(1).progress == 9
        with pytest.raises(TypeError):
            reader.update_slot(1, progress=10)
        assert table.worker(1).progress == 9
    finally:
        reader.close()


def test_open_missing_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "nope.heartbeat"
    with pytest.raises(HeartbeatTableError, match="cannot open heartbeat table") as info:
        HeartbeatTable.open(str(path))
    assert str(path) in str(info.value) and "No such file" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"SWHBEAT1", id="too-short"),
        pytest.param(bytes(4096), id="zeros"),
        pytest.param(b"x" * 4099, id="garbage"),
    ],
)
def test_open_rejects_what_is_not_a_table(tmp_path: Path, content: bytes):
    path = tmp_path / "bad.heartbeat"
    path.write_bytes(content)
    with pytest.raises(HeartbeatTableError, match="is not a storyworker heartbeat table") as info:
        HeartbeatTable.open(str(path))
    assert str(path) in str(info.value)


def test_open_rejects_a_truncated_table(table: HeartbeatTable):
    os.truncate(table.path, heartbeat._HEADER_SIZE + (CAPACITY - 1) * heartbeat._SLOT_SIZE)
    with pytest.raises(HeartbeatTableError, match="not a storyworker heartbeat table"):
        HeartbeatTable.open(table.path)


def test_open_rejects_another_layout_version(table: HeartbeatTable):
    with open(table.path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", heartbeat.VERSION + 1))
    with pytest.raises(HeartbeatTableError, match="layout version"):
        HeartbeatTable.open(table.path)


@pytest.mark.slow
def test_another_process_opens_it_by_path(table: HeartbeatTable):
    table.set_supervisor(state=SupervisorState.RUNNING, expected_workers=2, now=77.0)
    table.update_slot(
        1, state=WorkerState.BUSY, job_id=JOB, progress=55, rss_bytes=123, completed_delta=9,
        failed_delta=4, pickup="listen", now=80.0,
    )  # fmt: skip
    out = run_python(
        """
        import json, sys
        from health.heartbeat import HeartbeatTable
        t = HeartbeatTable.open(sys.argv[1])
        s, w = t.supervisor(), t.workers()[1]
        print(json.dumps([s.state.label, s.expected_workers, s.heartbeat, s.pid,
                          w.state.label, w.job_id, w.progress, w.rss_bytes, w.jobs_completed,
                          w.jobs_failed, w.pickup, w.heartbeat]))
        t.update_slot(0, progress=12, now=81.0)  # and a write from there comes back here
        """,
        table.path,
    )
    assert json.loads(out) == [
        "running", 2, 77.0, os.getpid(), "busy", JOB, 55, 123, 9, 4, "listen", 80.0,
    ]  # fmt: skip
    w0 = table.worker(0)
    assert (w0.progress, w0.heartbeat) == (12, 81.0)
    assert w0.pid not in (0, os.getpid())


def _write_from_child(t: HeartbeatTable) -> None:
    t.update_slot(3, state=WorkerState.IDLE, progress=33, rss_bytes=current_rss_bytes())


@pytest.mark.slow
def test_a_table_made_before_fork_works_in_the_child(table: HeartbeatTable):
    child = multiprocessing.get_context("fork").Process(target=_write_from_child, args=(table,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    w = table.worker(3)
    assert (w.pid, w.state, w.progress) == (child.pid, WorkerState.IDLE, 33)
    assert w.rss_bytes > 0


# --- the seqlock against a real concurrent writer ------------------------------------


def slot_fields(n: int) -> dict:
    """Every field of the hammered slot derived from n: a torn read shows as a mismatch."""
    return {
        "state": WorkerState(n % 6),
        "job_id": str(uuid.UUID(int=(n << 64) | (n + 1))),
        "progress": n % 101,
        "rss_bytes": n * 4096 + 1,
        "pickup": ("", "listen", "poll")[n % 3],
    }


def _hammer(t: HeartbeatTable, seconds: float) -> None:
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        n += 1
        t.update_slot(0, completed_delta=1, failed_delta=1, now=float(n), **slot_fields(n))
        t.set_supervisor(state=SupervisorState(n % 4), expected_workers=n, now=float(n))


def check_slot(w: WorkerSnapshot) -> int:
    n = int(w.heartbeat)
    assert (w.jobs_completed, w.jobs_failed, w.heartbeat) == (n, n, float(n)), w
    assert {k: getattr(w, k) for k in slot_fields(n)} == slot_fields(n), w
    return n


def check_header(s: SupervisorSnapshot) -> int:
    n = s.expected_workers
    assert (s.heartbeat, s.state, s.capacity) == (float(n), SupervisorState(n % 4), CAPACITY), s
    return n


@pytest.mark.slow
def test_reads_are_never_torn_while_another_process_writes(table: HeartbeatTable):
    table.update_slot(0, now=0.0, **slot_fields(0))  # what n == 0 looks like
    table.set_supervisor(state=SupervisorState(0), expected_workers=0, now=0.0)
    writer = multiprocessing.get_context("fork").Process(target=_hammer, args=(table, 1.5))
    writer.start()
    reads, seen, last = 0, set(), 0
    while writer.is_alive() or reads < 20_000:
        n = check_slot(table.worker(0))
        assert n >= last, "a read went back in time"
        last = n
        seen.add(n)
        seen.add(check_header(table.supervisor()))
        reads += 1
    writer.join(30)
    assert writer.exitcode == 0
    assert reads >= 20_000
    assert len(seen) > 20, "the reads did not overlap the writes"
    assert check_slot(table.worker(0)) == check_header(table.supervisor())


def test_a_reader_waits_out_a_write_in_progress(table: HeartbeatTable, tmp_path: Path):
    # A torn record, as a writer stopped halfway leaves it: counter odd AND CRC stale, so
    # either check alone makes the reader wait (this test catches only a reader that
    # lost both). The two tests below take one signal away each: a valid CRC under an
    # odd counter, and a stale CRC under an even one.
    table.update_slot(2, state=WorkerState.IDLE, progress=10, now=1.0)
    scratch = HeartbeatTable.create(CAPACITY, directory=str(tmp_path))
    try:
        scratch.update_slot(
            2, state=WorkerState.BUSY, job_id=JOB, progress=90, rss_bytes=(1 << 40) + 3,
            pickup="poll", completed_delta=5, failed_delta=6, now=2.0,
        )  # fmt: skip
        expected = scratch.worker(2)
    finally:
        scratch.close()
    offset = heartbeat._HEADER_SIZE + 2 * heartbeat._SLOT_SIZE
    first = offset + _SEQ.size
    record = Path(scratch.path).read_bytes()[first : offset + heartbeat._SLOT_SIZE]
    scratch.unlink()
    halfway = threading.Event()

    def slow_writer() -> None:
        with open(table.path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
            (seq,) = _SEQ.unpack_from(mm, offset)
            _SEQ.pack_into(mm, offset, seq + 1)
            mm[first : first + len(record) // 2] = record[: len(record) // 2]
            halfway.set()
            time.sleep(0.05)
            mm[first + len(record) // 2 : first + len(record)] = record[len(record) // 2 :]
            _SEQ.pack_into(mm, offset, seq + 2)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert halfway.wait(10)
        got = table.worker(2)
    finally:
        writer.join(10)
    assert got == expected


def scratch_record(tmp_path: Path, index: int, **update: object) -> tuple[WorkerSnapshot, bytes]:
    """Slot `index` as `update_slot(index, **update)` writes it in a fresh table: its
    snapshot, and the raw bytes after its counter (body, CRC and padding)."""
    scratch = HeartbeatTable.create(CAPACITY, directory=str(tmp_path))
    try:
        scratch.update_slot(index, **update)  # type: ignore[arg-type]
        snapshot = scratch.worker(index)
    finally:
        scratch.close()
    offset = heartbeat._HEADER_SIZE + index * heartbeat._SLOT_SIZE
    raw = Path(scratch.path).read_bytes()[offset + _SEQ.size : offset + heartbeat._SLOT_SIZE]
    scratch.unlink()
    return snapshot, raw


@pytest.fixture
def patient_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers give up on a writer after a quarter second (it is presumed dead); on a
    loaded machine a live test writer can be descheduled that long. The tests that
    use this need a reader that waits for its writer, so they give it seconds: a
    reader that wrongly returns does so at once, whatever the patience."""
    monkeypatch.setattr(heartbeat, "_READ_PATIENCE_SECONDS", 10.0)


@pytest.mark.usefixtures("patient_reader")
def test_a_reader_never_returns_a_record_whose_counter_is_odd_even_if_its_crc_is_valid(
    table: HeartbeatTable, tmp_path: Path
):
    # A writer that stores a whole, self-consistent record X and then, before it makes
    # the counter even, the record it meant (Y). X's CRC is valid: only the odd counter
    # says "not yet", so a reader that ignores the counter returns X.
    table.update_slot(2, state=WorkerState.IDLE, progress=10, now=1.0)
    _, interim = scratch_record(tmp_path, 2, state=WorkerState.STOPPING, progress=50, now=1.5)
    final, record = scratch_record(
        tmp_path, 2, state=WorkerState.BUSY, job_id=JOB, progress=90, pickup="poll", now=2.0
    )
    offset = heartbeat._HEADER_SIZE + 2 * heartbeat._SLOT_SIZE
    first = offset + _SEQ.size
    in_progress = threading.Event()

    def writer() -> None:
        with open(table.path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
            (seq,) = _SEQ.unpack_from(mm, offset)
            _SEQ.pack_into(mm, offset, seq + 1)
            mm[first : first + len(interim)] = interim
            in_progress.set()
            time.sleep(0.02)  # the reader is reading by now
            mm[first : first + len(record)] = record
            _SEQ.pack_into(mm, offset, seq + 2)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert in_progress.wait(10)
        got = table.worker(2)
    finally:
        thread.join(10)
    assert got == final


@pytest.mark.usefixtures("patient_reader")
def test_a_reader_never_returns_a_corrupt_record_whose_counter_is_even(
    table: HeartbeatTable, tmp_path: Path
):
    # Data changed under an even counter (a store the counter did not cover, or memory
    # order): only the stale CRC gives it away. A reader that checks the CRC keeps
    # retrying and returns the next complete write; one that skips it returns the
    # corrupt record at once.
    table.update_slot(2, state=WorkerState.IDLE, job_id=JOB, progress=10, now=1.0)
    before = table.worker(2)
    final, record = scratch_record(tmp_path, 2, state=WorkerState.BUSY, progress=90, now=2.0)
    offset = heartbeat._HEADER_SIZE + 2 * heartbeat._SLOT_SIZE
    first = offset + _SEQ.size
    with open(table.path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        mm[first] ^= 0xFF  # the body's first byte (the pid's lowest); counter untouched
        (seq,) = _SEQ.unpack_from(mm, offset)
    assert seq % 2 == 0
    go = threading.Event()

    def repair(mm: mmap.mmap) -> None:
        if go.wait(10):
            time.sleep(0.02)  # the reader is reading by now
            _SEQ.pack_into(mm, offset, seq + 1)
            mm[first : first + len(record)] = record
            _SEQ.pack_into(mm, offset, seq + 2)

    with open(table.path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        thread = threading.Thread(target=repair, args=(mm,))
        thread.start()
        try:
            go.set()
            got = table.worker(2)
        finally:
            go.set()
            thread.join(10)
    assert got.pid != before.pid ^ 0xFF, "the corrupt record was returned"
    assert got == final


class CounterWatchingMap(mmap.mmap):
    """A mapping of the table file that, at every store into it by item assignment,
    notes the counter of the record the store lands in, as another process would see
    it at that instant. (The layout is fixed: the header's counter at 16, then one
    counter at the start of each 128-byte slot.)"""

    seen: list[tuple[int, int]]

    def __setitem__(self, key: object, value: object) -> None:
        start = key.start if isinstance(key, slice) else key
        assert isinstance(start, int)
        if start >= heartbeat._HEADER_SIZE:
            index = (start - heartbeat._HEADER_SIZE) // heartbeat._SLOT_SIZE
            counter = heartbeat._HEADER_SIZE + index * heartbeat._SLOT_SIZE
        else:
            counter = heartbeat._HEADER_SEQ_OFFSET
        if start >= counter + _SEQ.size:  # a store into a record's body, not its counter
            self.seen.append((counter, _SEQ.unpack_from(self, counter)[0]))
        super().__setitem__(key, value)  # type: ignore[index]


def test_a_writer_marks_the_record_odd_while_it_writes(table: HeartbeatTable):
    # Every store into a record's body happens while its counter is odd, and the write
    # ends with the counter even and moved on: that is what lets a reader in another
    # process tell a write in progress from a finished one.
    size = os.path.getsize(table.path)
    with open(table.path, "r+b") as f:
        watched = CounterWatchingMap(f.fileno(), size, mmap.MAP_SHARED)
    watched.seen = []
    writer = HeartbeatTable(table.path, watched, CAPACITY)
    try:
        writer.update_slot(2, state=WorkerState.BUSY, job_id=JOB, progress=40, now=3.0)
        writer.reset_slot(1, pid=77, state=WorkerState.STARTING, restarts=2, now=4.0)
        writer.set_supervisor(state=SupervisorState.RUNNING, expected_workers=3, now=5.0)
        seen = list(watched.seen)
    finally:
        writer.close()
    slot1 = heartbeat._HEADER_SIZE + 1 * heartbeat._SLOT_SIZE
    slot2 = heartbeat._HEADER_SIZE + 2 * heartbeat._SLOT_SIZE
    header = heartbeat._HEADER_SEQ_OFFSET
    # Each of the three writes was seen (a writer storing some other way than by item
    # assignment would leave this empty, and the test would say so rather than pass).
    assert {counter for counter, _ in seen} == {slot1, slot2, header}, seen
    assert all(value % 2 == 1 for _, value in seen), f"a body written, counter even: {seen}"
    for counter, value in seen:
        assert _seq(table.path, counter) == value + 1  # even again, one step on
    assert (table.worker(2).progress, table.worker(2).job_id) == (40, JOB)
    assert (table.worker(1).pid, table.worker(1).restarts) == (77, 2)
    assert table.supervisor().expected_workers == 3


# --- a writer killed mid-write -------------------------------------------------------


def _force_odd(path: str, offset: int) -> None:
    """What a writer killed between its two counter stores leaves behind."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        (seq,) = _SEQ.unpack_from(mm, offset)
        _SEQ.pack_into(mm, offset, seq | 1)


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

    w, elapsed = _timed(table.worker, 1)
    assert elapsed < 2.0, "a reader must give up on a dead writer"
    assert (w.job_id, w.progress) == (JOB, 33)  # the last complete write
    _, elapsed = _timed(table.worker, 0)
    assert elapsed < 0.05  # other slots are unaffected

    # The next write (the supervisor's reset on reap) repairs the parity.
    table.reset_slot(1, pid=0, state=WorkerState.DEAD, restarts=1)
    assert _seq(table.path, offset) % 2 == 0
    w, elapsed = _timed(table.worker, 1)
    assert (w.state, elapsed < 0.05) == (WorkerState.DEAD, True)


def test_a_writer_killed_mid_header_write_neither_hangs_readers_nor_sticks(
    table: HeartbeatTable,
):
    table.set_supervisor(state=SupervisorState.RUNNING, expected_workers=2, now=9.0)
    _force_odd(table.path, heartbeat._HEADER_SEQ_OFFSET)
    sup, elapsed = _timed(table.supervisor)
    assert elapsed < 2.0
    assert (sup.state, sup.expected_workers) == (SupervisorState.RUNNING, 2)

    table.set_supervisor(now=10.0)
    assert _seq(table.path, heartbeat._HEADER_SEQ_OFFSET) % 2 == 0
    sup, elapsed = _timed(table.supervisor)
    assert (sup.heartbeat, elapsed < 0.05) == (10.0, True)
