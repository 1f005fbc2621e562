"""Process life-cycle helpers shared by the health server and the supervisor's
workers: small, and free of heavy imports, so a worker can use them cheaply."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent exits, however
    it exits (Linux prctl; the setting is not inherited across fork). The parent is
    the thread that forked us: the supervisor forks from its only thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig)


def process_alive(pid: int) -> bool:
    """Whether a process `pid` exists (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
