"""The supervisor's signals, listed once, and the masks that hold them back.

`storyworker run` blocks EARLY_SIGNALS in its first lines (`supervisor.launch`), before
anything slow is imported, so a HUP or TERM sent in the first moment waits as pending
instead of killing the process with its default action; the supervisor lets them in
once its own handlers queue them. A forked child is born with HANDLED_SIGNALS blocked
(`arbiter.procs.Processes.spawn`) and lets them in once its handlers are installed.

Only the standard library here: the console script imports this before anything else.
"""

from __future__ import annotations

import signal

#: What `run` blocks at once (SIGCHLD and SIGQUIT's defaults do no harm that early).
EARLY_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGTTIN, signal.SIGTTOU)
#: What the supervisor handles itself, and what a child is born with blocked.
HANDLED_SIGNALS = (*EARLY_SIGNALS, signal.SIGQUIT, signal.SIGCHLD)


def hold_early_signals() -> None:
    """Before anything slow is imported: keep the supervisor's signals pending."""
    signal.pthread_sigmask(signal.SIG_BLOCK, EARLY_SIGNALS)


def release_early_signals() -> None:
    """Once the supervisor's handlers are in: let what was held back arrive."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, EARLY_SIGNALS)


def unblock_signals() -> None:
    """In a child of `Processes.spawn`, once its handlers are installed: let the
    signals that were held back since the fork arrive."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
