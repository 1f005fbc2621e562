"""Terminal output: durations, fitting lines to the width, colour only when asked,
and progress lines that never wrap nor say the status twice."""

from __future__ import annotations

import uuid

import pytest

from supervisor.cli.term import Term, parse_duration
from supervisor.db.jobs import Status
from supervisor.db.progress import JobProgress, describe


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259200), ("1.5h", 5400)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "soon", "5w", "-1h"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_fit_and_colour():
    live = Term(live=True, colour=True, width=20)
    assert len(live.fit("x" * 50)) == 19 and live.fit("short") == "short"
    assert "\x1b[" in live.show("failed")
    assert Term(live=True, colour=False, width=20).show("failed") == "failed"
    assert Term(live=False, colour=False, width=20).fit("x" * 50) == "x" * 50


@pytest.mark.parametrize("columns", [30, 50, 60, 80, 160])
def test_progress_lines_fit_and_say_the_status_once(columns):
    done = JobProgress(uuid.uuid4(), Status.COMPLETED, 100, "completed", None)
    busy = JobProgress(uuid.uuid4(), Status.PROCESSING, 50, "section 2 of 4 " * 5, None)
    failed = JobProgress(uuid.uuid4(), Status.FAILED, 30, "failed", "boom " * 60)
    for line in (describe(done, columns), describe(busy, columns), describe(failed, columns)):
        assert len(line) < columns
    assert describe(done, columns).count("completed") == 1
