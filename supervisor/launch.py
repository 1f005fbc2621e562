"""The `storyworker` command's first lines: before anything slow is imported, `run`
holds the supervisor's signals back (blocked, so they wait as pending instead of
killing the process with their default action); the supervisor lets them in once its
own handlers queue them. A HUP or TERM sent in the first moment is then a reload or a
shutdown, never a silent death."""

from __future__ import annotations

import signal
import sys

#: What `run` handles itself (SIGCHLD and SIGQUIT's defaults do no harm here).
EARLY_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGTTIN, signal.SIGTTOU)


def main() -> None:
    if sys.argv[1:2] == ["run"]:
        signal.pthread_sigmask(signal.SIG_BLOCK, EARLY_SIGNALS)
    from supervisor.cli import main as cli

    cli(prog_name="storyworker")


def release_early_signals() -> None:
    """Once the supervisor's handlers are in: let what was held back arrive."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, EARLY_SIGNALS)
