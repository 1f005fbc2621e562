"""What the commands print to a person: colour only on a terminal and never with
NO_COLOR set (https://no-color.org), lines cut to the terminal's width so a redrawn
frame never wraps (a wrapped line is what makes live bars pile up), and the
`--since` durations (90s, 15m, 2h, 3d)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from typing import TextIO

import click

#: Width assumed when stdout is not a terminal (nothing is cut then, but bars and
#: columns need some size).
PLAIN_WIDTH = 100
#: Narrowest layout the live views draw for.
MIN_WIDTH = 20

_COLOURS = {
    "pending": "yellow",
    "processing": "cyan",
    "busy": "cyan",
    "completed": "green",
    "healthy": "green",
    "running": "green",
    "idle": "green",
    "available": "green",
    "failed": "red",
    "dead": "red",
    "unhealthy": "red",
    "paused": "magenta",
    "draining": "yellow",
    "starting": "yellow",
    "stopping": "yellow",
    "cancelled": "bright_black",
}
_WORDS = re.compile(r"\b(" + "|".join(_COLOURS) + r")\b")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Term:
    """How to print on this stdout."""

    #: A terminal: redraws in place and cuts lines to `width`.
    live: bool
    colour: bool
    width: int

    @classmethod
    def detect(cls, stream: TextIO | None = None) -> Term:
        stream = stream or sys.stdout
        live = bool(getattr(stream, "isatty", lambda: False)())
        colour = live and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        width = shutil.get_terminal_size((PLAIN_WIDTH, 24)).columns if live else PLAIN_WIDTH
        return cls(live=live, colour=colour, width=max(width, MIN_WIDTH))

    def paint(self, text: str, word: str | None = None, *, bold: bool = False) -> str:
        """`text` in the colour of `word` (a status or state; `text` itself if None)."""
        colour = _COLOURS.get(word if word is not None else text.strip())
        if not self.colour or (colour is None and not bold):
            return text
        return click.style(text, fg=colour, bold=bold)

    def show(self, line: str) -> str:
        """`line` fitted to the terminal, then each status or state word in it in its
        colour (when colour is on)."""
        line = self.fit(line)
        if not self.colour:
            return line
        return _WORDS.sub(lambda m: click.style(m.group(0), fg=_COLOURS[m.group(0)]), line)

    def fit(self, line: str) -> str:
        """`line` cut to one column less than the terminal (a line that fills the last
        column makes some terminals wrap); unchanged when not on a terminal."""
        if not self.live or len(line) < self.width:
            return line
        return line[: self.width - 2] + "…"


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `15m`, `2h` or `3d`; ValueError for anything else."""
    found = _DURATION.match(text.lower())
    if found is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 2h or 3d")
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]


class Duration(click.ParamType):
    """A click option type for `parse_duration`: a usage error (exit 2) otherwise."""

    name = "DURATION"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def age(seconds: float | None) -> str:
    """`42s`, `5m`, `3h`, `2d`; `-` for none."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
