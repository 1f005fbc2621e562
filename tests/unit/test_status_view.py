"""`storyworker status` and `health` tables from a view: every line fits the width,
a paused supervisor says why, and --json keeps exactly its documented keys."""

from __future__ import annotations

import pytest

from supervisor.cli.status import as_json, health_lines, status_lines

SUPERVISOR = {
    "host": "vm-1",
    "pid": 4242,
    "state": "running",
    "started_at": "2026-12-01T12:00:00+00:00",
    "heartbeat_age_seconds": 1.5,
    "workers": [
        {"index": 0, "pid": 4250, "state": "paused", "job_id": None, "progress": 0},
        {
            "index": 1,
            "pid": 4251,
            "state": "busy",
            "job_id": "3f2a9c1e-0000-4000-8000-000000000000",
            "progress": 50,
        },
    ],
    "extra": {
        "version": "0.1.0",
        "provider": "gemini",
        "concurrency": 2,
        "paused": True,
        "paused_reason": "Gemini rejected the API key (HTTP 400)",
    },
}
VIEW = {
    "queue": {"pending": 3, "processing": 1, "completed": 12, "failed": 2, "cancelled": 0},
    "oldest_pending_seconds": 75.0,
    "last_hour": {"completed": 12, "failed": 2},
    "stories": {
        "waiting_on_story": 4,
        "oldest_wait_seconds": 130.0,
        "top_users": [
            {
                "user_id": "9d1c0b2a-0000-4000-8000-000000000000",
                "pending": 3,
                "processing": 1,
                "oldest_pending_seconds": 75.0,
            }
        ],
    },
    "supervisors": [SUPERVISOR, {**SUPERVISOR, "pid": 77, "state": "dead"}],
    "rate_limits": {"gemini": 0.0, "openai": 0.4},
}


@pytest.mark.parametrize("width", [50, 60, 100])
def test_the_table_fits_and_says_why_it_is_paused(width):
    lines = status_lines(VIEW, width)
    assert all(len(line) < width for line in lines), [x for x in lines if len(x) >= width]
    text = "\n".join(lines)
    assert "paused: Gemini rejected the API key" in text
    assert "supervisors  2 (1 dead)" in text
    assert "gemini free" in text and "openai next call in 0.4s" in text
    assert "pending 3" in text and "cancelled 0" in text and "runnable pending 1m" in text
    assert "waiting on an earlier chapter 4" in text and "oldest 2m" in text
    assert "9d1c0b2a 3 pending 1 running 1m" in text


def test_json_keys_are_exactly_the_documented_ones():
    data = as_json(VIEW)
    assert set(data) == {"queue", "oldest_pending_seconds", "last_hour", "stories", "supervisors"}
    assert set(data["stories"]) == {"waiting_on_story", "oldest_wait_seconds", "top_users"}
    assert set(data["stories"]["top_users"][0]) == {
        "user_id",
        "pending",
        "processing",
        "oldest_pending_seconds",
    }
    for sup in data["supervisors"]:
        assert set(sup) == {
            "host",
            "pid",
            "state",
            "started_at",
            "heartbeat_age_seconds",
            "workers",
        }


def test_health_table():
    body = {
        "status": "unhealthy",
        "uptime": 12.0,
        "supervisor": {"pid": 1, "state": "running"},
        "provider": {"state": "paused", "reason": "quota spent"},
        "workers": [{"index": 0, "pid": 9, "state": "paused", "heartbeat_age_seconds": 0.2}],
        "problems": ["worker 1 is dead"],
    }
    text = "\n".join(health_lines(body))
    assert text.startswith("unhealthy  supervisor pid 1 running")
    assert "provider  paused: quota spent" in text and "problem: worker 1 is dead" in text


def test_realtime_send_warnings_are_shown_with_their_supervisor():
    warned = {**SUPERVISOR, "extra": {**SUPERVISOR["extra"], "live_text_warnings": 12}}
    lines = status_lines({**VIEW, "supervisors": [warned]}, 50)
    assert "  live text: 12 realtime.send warnings (lost)" in lines
    assert all(len(line) < 50 for line in lines)
    assert not [x for x in status_lines(VIEW, 100) if "live text" in x]
