"""The heartbeat table: one fixed slot per worker in a shared, file-backed mmap.

The supervisor creates it before it forks; each worker writes only its own slot and
the supervisor only the header (and a slot when no worker is alive in it: on spawn
and reap). Readers (the health server, or a standalone one that opens the file by
path) never see a torn record: every record sits behind a seqlock, a counter that is
odd while a write is in progress, so a reader retries until it reads the same even
value before and after copying the record. Each record also carries a CRC-32 of its
body, checked by readers, so the guarantee does not lean on the CPU's memory order.

It is a plain file under $RUNTIME_DIRECTORY or /dev/shm, not
multiprocessing.shared_memory, whose resource tracker (Python 3.11) unlinks segments
when an unrelated process attaches and exits.

Layout (little-endian; version 3):
  header, 64 bytes: magic "SWHBEAT1", version u32, capacity u32 (written once) |
    seq u64 at 16 | pid i32, state i32, expected workers i32, started_at f64 (wall),
    heartbeat f64 (monotonic), crc32 u32
  slot i, 128 bytes at 64 + 128*i: seq u64 | pid i32, state i32, job uuid 16 bytes
    (zeros: none), progress i32, heartbeat f64 (monotonic), jobs completed u64,
    jobs failed u64, restarts u32, rss bytes u64, started_at f64 (wall), pickup i32,
    live text send warnings u64 (version 3), crc32 u32
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
import zlib
from dataclasses import dataclass

MAGIC = b"SWHBEAT1"
VERSION = 3
MAX_CAPACITY = 4096
_PREFIX = struct.Struct("<8sII")  # magic, version, capacity
_HEADER_BODY = struct.Struct("<iiidd")
_SLOT_BODY = struct.Struct("<ii16sidQQIQdiQ")
_CRC = struct.Struct("<I")
_HEADER_SIZE = 64
_SLOT_SIZE = 128
_HEADER_SEQ_OFFSET = 16
_SEQ = struct.Struct("<Q")  # a record's sequence counter, for tools reading the file
_SEQ_SIZE = _SEQ.size
_UNSET = object()
#: A reader gives up waiting for a consistent copy after this long: the writer was
#: killed mid-write, and its slot is reset when the supervisor reaps it.
_READ_PATIENCE_SECONDS = 0.25


class WorkerState(enum.IntEnum):
    EMPTY = 0
    STARTING = 1
    IDLE = 2
    BUSY = 3
    STOPPING = 4
    DEAD = 5
    #: Alive, but not claiming: the provider is at fault (see health.breaker).
    PAUSED = 6

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


#: How a worker learns of new jobs ("" until it has connected); the supervisor's
#: listener readiness check reads it.
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
    pickup: str = ""
    #: Warnings realtime.send raised (it swallows its own errors): LIVE_TEXT=broadcast.
    live_warnings: int = 0

    def age(self, now: float | None = None) -> float:
        """Seconds since the last heartbeat (CLOCK_MONOTONIC is system-wide on Linux,
        so a heartbeat written by one process ages correctly in another)."""
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
        """Seconds since the supervisor's last heartbeat."""
        return (time.monotonic() if now is None else now) - self.heartbeat


class HeartbeatTableError(Exception):
    """The heartbeat table file is missing or is not a storyworker heartbeat table."""


def current_rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm (0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * mmap.PAGESIZE
    except (OSError, IndexError, ValueError):
        return 0


def systemd_runtime_directory() -> str | None:
    """The first directory of systemd's $RUNTIME_DIRECTORY when it exists, else None."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return runtime if runtime and os.path.isdir(runtime) else None


def default_directory() -> str:
    """$RUNTIME_DIRECTORY (systemd's), else /dev/shm, else the temp directory."""
    if runtime := systemd_runtime_directory():
        return runtime
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _table_size(capacity: int) -> int:
    return _HEADER_SIZE + capacity * _SLOT_SIZE


def _map(path: str, readonly: bool) -> mmap.mmap:
    try:
        fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
    except OSError as exc:
        raise HeartbeatTableError(f"cannot open heartbeat table {path}: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        if size < _HEADER_SIZE:
            raise HeartbeatTableError(f"{path} is not a storyworker heartbeat table")
        prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
        return mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
    finally:
        os.close(fd)


class HeartbeatTable:
    """One mapping of the table. Made before a fork, it works in the children too
    (MAP_SHARED): every process sees every other's writes."""

    def __init__(self, path: str, mm: mmap.mmap, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self._mm = mm
        # Sequence counters are stored and loaded through a u64 view: one aligned
        # 8-byte access each, never the byte-at-a-time (and zero-first) writes of
        # struct.pack_into, which a reader could catch half done.
        self._seqs = memoryview(mm)[: _table_size(capacity)].cast("Q")

    @classmethod
    def create(cls, capacity: int, directory: str | None = None) -> HeartbeatTable:
        """A new table with `capacity` EMPTY slots, in a fresh file
        `storyworker-<pid>-<random>.heartbeat` under `directory` (default_directory())."""
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be 1 to {MAX_CAPACITY}, not {capacity}")
        fd, path = tempfile.mkstemp(
            prefix=f"storyworker-{os.getpid()}-",
            suffix=".heartbeat",
            dir=directory or default_directory(),
        )
        try:
            os.ftruncate(fd, _table_size(capacity))
            # Readable by other users (a monitoring agent); nothing in it is secret.
            os.fchmod(fd, 0o644)
            mm = mmap.mmap(fd, _table_size(capacity), mmap.MAP_SHARED)
        finally:
            os.close(fd)
        _PREFIX.pack_into(mm, 0, MAGIC, VERSION, capacity)
        table = cls(path, mm, capacity)
        now = time.monotonic()
        header = (os.getpid(), SupervisorState.STARTING, 0, time.time(), now)
        table._write(_HEADER_SEQ_OFFSET, _HEADER_BODY.pack(*header))
        for index in range(capacity):
            # heartbeat 0.0: this slot has never beaten.
            table._write_slot(
                WorkerSnapshot(index, 0, WorkerState.EMPTY, None, 0, 0.0, 0, 0, 0, 0, 0.0)
            )
        return table

    @classmethod
    def open(cls, path: str, *, readonly: bool = False) -> HeartbeatTable:
        """Attach to an existing table by path; HeartbeatTableError when the file is
        missing, unreadable, or not a table of this layout version."""
        mm = _map(path, readonly)
        magic, version, capacity = _PREFIX.unpack_from(mm, 0)
        if magic != MAGIC or version != VERSION or len(mm) < _table_size(capacity):
            mm.close()
            raise HeartbeatTableError(
                f"{path} is not a storyworker heartbeat table (layout version {VERSION})"
            )
        return cls(path, mm, capacity)

    # --- seqlock -----------------------------------------------------------------

    def _write(self, seq_offset: int, body: bytes) -> None:
        i = seq_offset // _SEQ_SIZE
        # Odd while writing. `| 1` also repairs a count left odd by a killed writer.
        start = (self._seqs[i] + 1) | 1
        self._seqs[i] = start
        end = seq_offset + _SEQ_SIZE + len(body) + _CRC.size
        self._mm[seq_offset + _SEQ_SIZE : end] = body + _CRC.pack(zlib.crc32(body))
        self._seqs[i] = start + 1

    def _read(self, seq_offset: int, size: int) -> bytes:
        """A consistent copy of the `size`-byte body after the counter at `seq_offset`."""
        i, first = seq_offset // _SEQ_SIZE, seq_offset + _SEQ_SIZE
        deadline, tries, data = 0.0, 0, b""
        while True:
            before = self._seqs[i]
            data = self._mm[first : first + size + _CRC.size]
            after = self._seqs[i]
            body, (crc,) = data[:size], _CRC.unpack_from(data, size)
            if before == after and not before & 1 and zlib.crc32(body) == crc:
                return body
            tries += 1
            if tries % 64 == 0:
                # A writer preempted mid-write finishes once it gets a CPU again.
                os.sched_yield()
                now = time.monotonic()
                deadline = deadline or now + _READ_PATIENCE_SECONDS
                if now > deadline:
                    return body  # the writer died mid-write; see _READ_PATIENCE_SECONDS

    # --- supervisor side ---------------------------------------------------------

    def set_supervisor(
        self,
        *,
        state: SupervisorState | None = None,
        expected_workers: int | None = None,
        now: float | None = None,
    ) -> None:
        """Update the header (the caller's pid, and what is given) and always its
        heartbeat."""
        cur = self.supervisor()
        values = (
            os.getpid(),
            cur.state if state is None else state,
            cur.expected_workers if expected_workers is None else expected_workers,
            cur.started_at,
            time.monotonic() if now is None else now,
        )
        self._write(_HEADER_SEQ_OFFSET, _HEADER_BODY.pack(*values))

    def reset_slot(
        self, index: int, *, pid: int, state: WorkerState, restarts: int, now: float | None = None
    ) -> None:
        """Start a slot over (on spawn and reap): no job, progress, RSS or pickup, a
        fresh heartbeat and started_at. Its job and warning counters are kept, so they
        only grow for as long as the table lives."""
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
                live_warnings=cur.live_warnings,
                restarts=restarts,
                rss_bytes=0,
                started_at=time.time(),
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
        live_warnings_delta: int = 0,
        now: float | None = None,
    ) -> None:
        """The worker's own write: what changed, plus a fresh heartbeat and its pid.
        `job_id` (a UUID or its string) sets the job, None clears it, leaving it out
        keeps it; `pickup` is "", "listen" or "poll"."""
        cur = self.worker(index)
        changes: dict[str, object] = {
            "pid": os.getpid(),
            "heartbeat": time.monotonic() if now is None else now,
            "jobs_completed": cur.jobs_completed + completed_delta,
            "jobs_failed": cur.jobs_failed + failed_delta,
            "live_warnings": cur.live_warnings + live_warnings_delta,
        }
        optional = {"state": state, "progress": progress, "rss_bytes": rss_bytes, "pickup": pickup}
        changes.update({k: v for k, v in optional.items() if v is not None})
        if job_id is not _UNSET:
            changes["job_id"] = None if job_id is None else str(job_id)
        self._write_slot(dataclasses.replace(cur, **changes))

    def _write_slot(self, slot: WorkerSnapshot) -> None:
        job = uuid.UUID(slot.job_id).bytes if slot.job_id else bytes(16)
        body = _SLOT_BODY.pack(
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
            slot.live_warnings,
        )
        self._write(self._slot_offset(slot.index), body)

    # --- readers -----------------------------------------------------------------

    def supervisor(self) -> SupervisorSnapshot:
        """The header, read consistently."""
        data = self._read(_HEADER_SEQ_OFFSET, _HEADER_BODY.size)
        pid, state, expected, started_at, heartbeat = _HEADER_BODY.unpack(data)
        return SupervisorSnapshot(
            pid, SupervisorState(state), expected, self.capacity, started_at, heartbeat
        )

    def worker(self, index: int) -> WorkerSnapshot:
        """Slot `index`, read consistently; IndexError outside the table."""
        data = self._read(self._slot_offset(index), _SLOT_BODY.size)
        (
            pid,
            state,
            job,
            progress,
            heartbeat,
            done,
            failed,
            restarts,
            rss,
            started,
            pickup,
            warned,
        ) = _SLOT_BODY.unpack(data)
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
            warned,
        )

    def workers(self) -> list[WorkerSnapshot]:
        """The slots of the workers the supervisor expects (the first
        `expected_workers`, never more than the capacity), in index order. A worker
        retired by TTOU drops out of this list at once, while it finishes its job."""
        expected = min(self.supervisor().expected_workers, self.capacity)
        return [self.worker(i) for i in range(expected)]

    def _slot_offset(self, index: int) -> int:
        if not 0 <= index < self.capacity:
            raise IndexError(f"slot {index} is outside the table (capacity {self.capacity})")
        return _HEADER_SIZE + index * _SLOT_SIZE

    def close(self) -> None:
        """Unmap this process's view (other processes keep theirs)."""
        self._seqs.release()
        self._mm.close()

    def unlink(self) -> None:
        """Remove the file (the supervisor, at exit); mappings stay valid."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
