"""The only places that fork, signal and reap, kept tiny so the supervisor loop can be
tested with fakes, and the real thing tested as a real process."""

from __future__ import annotations

import os
import queue
import select
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from supervisor import exitcodes
from supervisor.signals import HANDLED_SIGNALS


@dataclass(frozen=True)
class Exit:
    """How a child ended: an exit code or the signal that killed it."""

    pid: int
    code: int | None
    signal: int | None

    @property
    def clean(self) -> bool:
        return self.code == exitcodes.OK

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {signal.Signals(self.signal).name}"
        return f"exit code {self.code}"


class Processes:
    """fork/kill/reap for real."""

    def spawn(self, child: Callable[[], NoReturn], before_child: Callable[[], None]) -> int:
        """Fork; the child runs `before_child` then `child`, and never returns.

        The child is born with HANDLED_SIGNALS blocked and calls `unblock_signals()`
        once its own handlers are in place. Otherwise a signal sent the moment it is
        born (TTOU right after TTIN, TERM during a reload) would run the parent's
        inherited handler in the child and be lost there.
        """
        parent_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask)
            raise
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, parent_mask)
            return pid
        code = exitcodes.FAILURE
        try:
            before_child()
            child()
        except SystemExit as exc:
            # Also the way a grandchild (gunicorn's worker) leaves: keep its code.
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:  # noqa: BLE001 - a child must never return into the parent's code
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)

    def kill(self, pid: int, sig: int) -> bool:
        """Send `sig`; False when the process is already gone."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def reap(self) -> list[Exit]:
        """Every child that has ended since the last call."""
        ended = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return ended
            if pid == 0:
                return ended
            if os.WIFSIGNALED(status):
                ended.append(Exit(pid, None, os.WTERMSIG(status)))
            elif os.WIFEXITED(status):
                ended.append(Exit(pid, os.WEXITSTATUS(status), None))


class SignalQueue:
    """Signal handlers only record the signal here; the main loop does the work.

    A self-pipe (set_wakeup_fd) wakes the loop's wait the moment a signal arrives.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install(self) -> None:
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: object) -> None:
        self._queue.put_nowait(signum)

    def drain(self) -> list[int]:
        received = []
        while not self._queue.empty():
            received.append(self._queue.get_nowait())
        return received

    def requeue(self, signals: Sequence[int]) -> None:
        """Put back signals taken by `drain`, for the loop to handle."""
        for sig in signals:
            self._queue.put_nowait(sig)

    def fileno(self) -> int:
        """The self-pipe's read end: among `wait`'s results when a signal woke it."""
        return self._read

    def wait(self, timeout: float, also: Sequence[int] = ()) -> list[int]:
        """Sleep up to `timeout` seconds, until a signal arrives or one of the file
        descriptors `also` is readable; the ready ones (empty after a timeout)."""
        ready, _, _ = select.select([self._read, *also], [], [], max(0.0, timeout))
        if self._read in ready:
            try:
                while os.read(self._read, 4096):
                    pass
            except BlockingIOError:
                pass
        return ready

    def forget_in_child(self) -> None:
        """In a forked child: drop the parent's handlers and pipe."""
        signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.close(self._read)
        os.close(self._write)
