"""Fixtures for tests that run `storyworker run` as a real process."""

from __future__ import annotations

from typing import Any

import pytest

from tests.service import Service

LOG_LINES_ON_FAILURE = 120
PREFS = {"bullet_count": 4, "words_per_bullet": 60, "genre": "mystery"}


@pytest.fixture
def service(database_url, tmp_path):
    started: list[Service] = []

    def make(**env: str) -> Service:
        svc = Service(database_url, tmp_path, **env)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        if svc.proc and svc.proc.poll() is None:
            svc.kill_everything()
        # Captured output is shown only when the test failed: the service's own account.
        if svc.log_path.exists():
            tail = svc.logs().splitlines()[-LOG_LINES_ON_FAILURE:]
            print(f"--- last lines of {svc.log_path.name} ---", *tail, sep="\n")


@pytest.fixture
def jobs(job_factory):
    def make(n: int, prefs: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [job_factory(user_preferences=prefs or PREFS) for _ in range(n)]

    return make
