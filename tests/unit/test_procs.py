"""Processes.spawn with real forks: a signal sent while a child starts is not lost."""

from __future__ import annotations

import os
import signal

import pytest

from supervisor.arbiter.procs import Processes
from supervisor.signals import unblock_signals

HANDLED_BY_CHILD = 0
NOT_HANDLED = 1


@pytest.fixture
def parent_records_term():
    """The supervisor's situation: a Python handler for TERM in the parent."""
    recorded: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: recorded.append(signum))
    yield recorded
    signal.signal(signal.SIGTERM, previous)


def spawn_child_that_is_signalled_while_starting(unblock: bool) -> int:
    """Fork a child; signal it before it has its own TERM handler; return its status."""
    started_r, started_w = os.pipe()
    go_on_r, go_on_w = os.pipe()

    def before_child() -> None:
        # Still the parent's handler in here: the window where a signal used to be lost.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.write(started_w, b"s")
        os.read(go_on_r, 1)  # the parent has sent TERM by now

    def child() -> None:
        got: list[int] = []
        signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
        if unblock:
            unblock_signals()
        os._exit(HANDLED_BY_CHILD if got else NOT_HANDLED)

    pid = Processes().spawn(child, before_child)  # type: ignore[arg-type]
    os.read(started_r, 1)
    os.kill(pid, signal.SIGTERM)
    os.write(go_on_w, b"g")
    _, status = os.waitpid(pid, 0)
    for fd in (started_r, started_w, go_on_r, go_on_w):
        os.close(fd)
    return status


def test_a_term_sent_while_the_child_starts_reaches_its_own_handler(parent_records_term):
    status = spawn_child_that_is_signalled_while_starting(unblock=True)
    assert os.WIFEXITED(status), "the early TERM killed the child before it had a handler"
    assert os.WEXITSTATUS(status) == HANDLED_BY_CHILD
    assert parent_records_term == []  # and the parent's handler saw nothing


def test_the_child_holds_signals_until_it_unblocks_them(parent_records_term):
    # Without unblock_signals() the TERM stays pending: the child's handler never ran.
    status = spawn_child_that_is_signalled_while_starting(unblock=False)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == NOT_HANDLED


def test_the_parent_mask_is_restored_after_spawn(parent_records_term):
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])

    def child() -> None:
        os._exit(0)

    pid = Processes().spawn(child, lambda: None)  # type: ignore[arg-type]
    os.waitpid(pid, 0)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a call that lets Python run handlers
    assert parent_records_term == [signal.SIGTERM]
