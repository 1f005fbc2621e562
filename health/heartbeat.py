"""The heartbeat table: one fixed slot per worker in a shared, file-backed mmap.

The supervisor creates it before it forks; each worker writes only its own slot and
the supervisor only the header (and a slot when no worker is alive in it: on spawn
and reap). Readers (the health server, or a standalone one that opens the file by
path) never see a torn record: every record sits behind a seqlock, a counter that is
odd while a write is in progress, so a reader retries until it reads the same even
value before and after copying the record.

It is a plain file under $RUNTIME_DIRECTORY or /dev/shm, not
multiprocessing.shared_memory, whose resource tracker (Python 3.11) unlinks segments
when an unrelated process attaches and exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import mmap
import os
import struct
import tempfile
import time
import uuid
from dataclasses import dataclass

MAGIC = b"SWHBEAT1"
VERSION = 1
# magic, version, capacity, seq | pid, state, expected, started_at (wall), heartbeat (monotonic)
_HEADER = struct.Struct("<8sIIQiiidd")
_HEADER_BODY = struct.Struct("<iiidd")
_HEADER_SIZE = 64
# seq | pid, state, job uuid, progress, heartbeat, completed, failed, restarts, rss,
# started_at (wall), pickup
_SLOT_BODY = struct.Struct("<ii16sidQQIQdi")
_SLOT = struct.Struct("<Q" + _SLOT_BODY.format[1:])
_SLOT_SIZE = 128
_SEQ = struct.Struct("<Q")
_HEADER_SEQ_OFFSET = 16
_UNSET = object()
#: A reader gives up waiting for an even sequence after this many tries: the writer
#: was killed mid-write, and its slot is reset when the supervisor reaps it.
_READ_TRIES = 10_000


class WorkerState(enum.IntEnum):
    EMPTY = 0
    STARTING = 1
    IDLE = 2
    BUSY = 3
    STOPPING = 4
    DEAD = 5

    @property
    def label(self) -> str:
        return self.name.lower()


class SupervisorState(enum.IntEnum):
    STARTING = 0
    RUNNING = 1
    DRAINING = 2
    STOPPED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


_PICKUP = ("", "listen", "poll")


@dataclass(frozen=True)
class WorkerSnapshot:
    index: int
    pid: int
    state: WorkerState
    job_id: str | None
    progress: int
    heartbeat: float
    jobs_completed: int
    jobs_failed: int
    restarts: int
    rss_bytes: int
    started_at: float
    pickup: str

    def age(self, now: float | None = None) -> float:
        """Seconds since the last heartbeat (CLOCK_MONOTONIC is system-wide on Linux)."""
        return (time.monotonic() if now is None else now) - self.heartbeat


@dataclass(frozen=True)
class SupervisorSnapshot:
    pid: int
    state: SupervisorState
    expected_workers: int
    capacity: int
    started_at: float
    heartbeat: float

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.heartbeat


class HeartbeatTableError(Exception):
    """The heartbeat table file is missing or is not a storyworker heartbeat table."""


def current_rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * mmap.PAGESIZE
    except (OSError, IndexError, ValueError):
        return 0


def default_directory() -> str:
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime and os.path.isdir(runtime):
        return runtime
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


class HeartbeatTable:
    def __init__(self, path: str, mm: mmap.mmap, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self._mm = mm

    @classmethod
    def create(cls, capacity: int, directory: str | None = None) -> HeartbeatTable:
        """A new zeroed table with `capacity` slots, in a fresh file."""
        directory = directory or default_directory()
        fd, path = tempfile.mkstemp(
            prefix=f"storyworker-{os.getpid()}-", suffix=".heartbeat", dir=directory
        )
        try:
            size = _HEADER_SIZE + capacity * _SLOT_SIZE
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        os.chmod(path, 0o644)
        table = cls(path, mm, capacity)
        now = time.monotonic()
        _HEADER.pack_into(
            mm,
            0,
            MAGIC,
            VERSION,
            capacity,
            0,
            os.getpid(),
            SupervisorState.STARTING,
            0,
            time.time(),
            now,
        )
        return table

    @classmethod
    def open(cls, path: str) -> HeartbeatTable:
        """Attach to an existing table by path."""
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise HeartbeatTableError(
                f"cannot open heartbeat table {path}: {exc.strerror}"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if size < _HEADER_SIZE:
                raise HeartbeatTableError(f"{path} is not a storyworker heartbeat table")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        magic, version, capacity = _HEADER.unpack_from(mm, 0)[:3]
        if magic != MAGIC or version != VERSION or size < _HEADER_SIZE + capacity * _SLOT_SIZE:
            mm.close()
            raise HeartbeatTableError(
                f"{path} is not a storyworker heartbeat table (version {VERSION})"
            )
        return cls(path, mm, capacity)

    # --- seqlock -----------------------------------------------------------------

    def _write(self, seq_offset: int, body: struct.Struct, values: tuple) -> None:
        (seq,) = _SEQ.unpack_from(self._mm, seq_offset)
        # Odd while writing. `| 1` also repairs a count left odd by a killed writer.
        start = (seq + 1) | 1
        _SEQ.pack_into(self._mm, seq_offset, start)
        body.pack_into(self._mm, seq_offset + _SEQ.size, *values)
        _SEQ.pack_into(self._mm, seq_offset, start + 1)

    def _read(self, seq_offset: int, offset: int, size: int) -> bytes:
        data = b""
        for _ in range(_READ_TRIES):
            (before,) = _SEQ.unpack_from(self._mm, seq_offset)
            data = self._mm[offset : offset + size]
            (after,) = _SEQ.unpack_from(self._mm, seq_offset)
            if before == after and not before & 1:
                return data
        return data

    # --- supervisor side ---------------------------------------------------------

    def set_supervisor(
        self,
        *,
        state: SupervisorState | None = None,
        expected_workers: int | None = None,
        now: float | None = None,
    ) -> None:
        """Update the header (and always its heartbeat)."""
        cur = self.supervisor()
        values = (
            os.getpid(),
            cur.state if state is None else state,
            cur.expected_workers if expected_workers is None else expected_workers,
            cur.started_at,
            time.monotonic() if now is None else now,
        )
        self._write(_HEADER_SEQ_OFFSET, _HEADER_BODY, values)

    def reset_slot(
        self, index: int, *, pid: int, state: WorkerState, restarts: int, now: float | None = None
    ) -> None:
        """Start a slot over (on spawn and reap); its job counters are kept."""
        cur = self.worker(index)
        self._write_slot(
            WorkerSnapshot(
                index=index,
                pid=pid,
                state=state,
                job_id=None,
                progress=0,
                heartbeat=time.monotonic() if now is None else now,
                jobs_completed=cur.jobs_completed,
                jobs_failed=cur.jobs_failed,
                restarts=restarts,
                rss_bytes=0,
                started_at=time.time(),
                pickup="",
            )
        )

    # --- worker side -------------------------------------------------------------

    def update_slot(
        self,
        index: int,
        *,
        state: WorkerState | None = None,
        job_id: object = _UNSET,
        progress: int | None = None,
        rss_bytes: int | None = None,
        pickup: str | None = None,
        completed_delta: int = 0,
        failed_delta: int = 0,
        now: float | None = None,
    ) -> None:
        """The worker's own write: what changed, plus a fresh heartbeat and its pid.
        `job_id=None` clears the job; leaving it out keeps it."""
        cur = self.worker(index)
        changes: dict[str, object] = {
            "pid": os.getpid(),
            "heartbeat": time.monotonic() if now is None else now,
            "jobs_completed": cur.jobs_completed + completed_delta,
            "jobs_failed": cur.jobs_failed + failed_delta,
        }
        optional = {"state": state, "progress": progress, "rss_bytes": rss_bytes, "pickup": pickup}
        changes.update({k: v for k, v in optional.items() if v is not None})
        if job_id is not _UNSET:
            changes["job_id"] = None if job_id is None else str(job_id)
        self._write_slot(dataclasses.replace(cur, **changes))

    def _write_slot(self, slot: WorkerSnapshot) -> None:
        job = uuid.UUID(slot.job_id).bytes if slot.job_id else bytes(16)
        values = (
            slot.pid,
            int(slot.state),
            job,
            slot.progress,
            slot.heartbeat,
            slot.jobs_completed,
            slot.jobs_failed,
            slot.restarts,
            slot.rss_bytes,
            slot.started_at,
            _PICKUP.index(slot.pickup),
        )
        self._write(self._slot_offset(slot.index), _SLOT_BODY, values)

    # --- readers -----------------------------------------------------------------

    def supervisor(self) -> SupervisorSnapshot:
        data = self._read(_HEADER_SEQ_OFFSET, 0, _HEADER.size)
        _, _, capacity, _, pid, state, expected, started_at, heartbeat = _HEADER.unpack(data)
        return SupervisorSnapshot(
            pid, SupervisorState(state), expected, capacity, started_at, heartbeat
        )

    def worker(self, index: int) -> WorkerSnapshot:
        offset = self._slot_offset(index)
        data = self._read(offset, offset, _SLOT.size)
        _, pid, state, job, progress, heartbeat, done, failed, restarts, rss, started, pickup = (
            _SLOT.unpack(data)
        )
        job_id = str(uuid.UUID(bytes=job)) if any(job) else None
        return WorkerSnapshot(
            index,
            pid,
            WorkerState(state),
            job_id,
            progress,
            heartbeat,
            done,
            failed,
            restarts,
            rss,
            started,
            _PICKUP[pickup],
        )

    def workers(self) -> list[WorkerSnapshot]:
        """The slots of the workers the supervisor expects, in index order."""
        expected = min(self.supervisor().expected_workers, self.capacity)
        return [self.worker(i) for i in range(expected)]

    def _slot_offset(self, index: int) -> int:
        if not 0 <= index < self.capacity:
            raise IndexError(f"slot {index} is outside the table (capacity {self.capacity})")
        return _HEADER_SIZE + index * _SLOT_SIZE

    def close(self) -> None:
        self._mm.close()

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
