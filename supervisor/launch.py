"""The `storyworker` command's first lines: before anything slow is imported, `run`
holds the supervisor's signals back (`supervisor.signals`); the supervisor lets them in
once its own handlers queue them. A HUP or TERM sent in the first moment is then a
reload or a shutdown, never a silent death."""

from __future__ import annotations

import sys

from supervisor.signals import hold_early_signals


def main() -> None:
    if sys.argv[1:2] == ["run"]:
        hold_early_signals()
    from supervisor.cli import main as cli

    cli(prog_name="storyworker")
