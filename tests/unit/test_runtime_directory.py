"""Runtime directories: a live supervisor's is kept, whatever its name says; a dead
one's is removed by the next supervisor."""

from __future__ import annotations

import fcntl
import os

from supervisor.arbiter.bootstrap import RUNTIME_LOCK, RUNTIME_PREFIX, sweep_runtime_directories


def make(base, name: str, *, locked: bool) -> tuple:
    path = base / f"{RUNTIME_PREFIX}{name}"
    path.mkdir()
    fd = os.open(path / RUNTIME_LOCK, os.O_CREAT | os.O_RDWR)
    if locked:
        fcntl.flock(fd, fcntl.LOCK_EX)
    return path, fd


def test_the_lock_decides_not_the_pid(tmp_path):
    # A pid that exists nowhere here: as a supervisor in another PID namespace that
    # shares /tmp would look. Its lock is held, so it is alive.
    alive, alive_fd = make(tmp_path, "999999-abc", locked=True)
    dead, dead_fd = make(tmp_path, f"{os.getpid()}-def", locked=False)
    os.close(dead_fd)
    other = tmp_path / f"{RUNTIME_PREFIX}demo-xyz"  # not a supervisor's: no lock file
    other.mkdir()
    assert sweep_runtime_directories(tmp_path) == [dead]
    assert alive.exists() and other.exists()
    os.close(alive_fd)  # its supervisor ends without cleaning up
    assert sweep_runtime_directories(tmp_path) == [alive]
