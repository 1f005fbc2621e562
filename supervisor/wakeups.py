"""How the host listener wakes one idle worker: one pipe shared by every worker.

The supervisor makes it before the first fork. Each NOTIFY for a new job becomes one
byte written to the pipe; every idle worker waits on the read end, and the one whose
non-blocking read gets the byte claims. The others' reads find the pipe empty and
they go back to waiting without touching the database: one job, one claim, whatever
the number of idle workers (PostgreSQL itself would wake every listening backend).

A byte nobody is waiting for stays in the pipe until a worker next waits, so a job
announced while every worker was busy is not lost. The supervisor writes no more
bytes than there are workers: a burst of inserts costs no more than one empty claim
per worker afterwards.

Beside the pipe, one shared byte says whether the host listener is up; workers show
it as their pick-up mode (`listen` or `poll`). Either way an idle worker also polls
every POLL_INTERVAL_MS, so a listener that is down costs latency, never a job.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import mmap
import os
import select
import termios
import time


class WakeChannel:
    """The pipe and the listener's up/down byte, shared across the fork."""

    def __init__(self) -> None:
        # No O_CLOEXEC: workers are forked, never exec'd, and need the read end.
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK)
        self._flag = mmap.mmap(-1, 1)  # anonymous and MAP_SHARED: seen by every child

    # --- the supervisor's side ------------------------------------------------------

    @property
    def listening(self) -> bool:
        """Whether the host listener holds its LISTEN (as last set by the supervisor)."""
        return self._flag[0] == 1

    def set_listening(self, up: bool) -> None:
        self._flag[0] = int(up)

    def pending(self) -> int:
        """Wake-ups written and not yet taken by a worker."""
        count = array.array("i", [0])
        fcntl.ioctl(self.read_fd, termios.FIONREAD, count, True)
        return count[0]

    def wake(self, most: int) -> bool:
        """Wake one idle worker, unless `most` wake-ups are already waiting for one.
        True when a wake-up was written."""
        if self.pending() >= most:
            return False
        try:
            os.write(self.write_fd, b"\x01")
        except BlockingIOError:  # the pipe is full: plenty of wake-ups are waiting
            return False
        return True

    # --- a worker's side ------------------------------------------------------------

    def in_worker(self) -> None:
        """In a forked worker: it only reads."""
        os.close(self.write_fd)

    def take(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a wake-up; True when this process got it."""
        ready, _, _ = select.select([self.read_fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            got = os.read(self.read_fd, 1)
        except BlockingIOError:  # another idle worker took it first
            return False
        if not got:  # every writer is gone (the supervisor died): do not spin
            time.sleep(max(0.0, timeout))
        return bool(got)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):  # a worker closed its write end already
                os.close(fd)
        self._flag.close()
