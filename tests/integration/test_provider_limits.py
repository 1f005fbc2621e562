"""Each provider's requests wait for a rate limiter of its own (issue 11), named after
the provider and shared by every worker on every host through the database."""

from __future__ import annotations

import time

import pytest

from supervisor.config import load_settings
from supervisor.db.connection import connect
from supervisor.db.ratelimit import RateLimiter
from supervisor.worker.providers import rate_limits


class WouldWait(Exception):
    """The limiter asked to sleep: its budget is spent."""


def refuse_to_sleep(seconds: float) -> None:
    raise WouldWait(seconds)


def test_each_provider_has_its_own_budget_in_a_row_named_after_it(database_url):
    # One request a minute each: a limiter shared by both would make the second wait ~60 s.
    settings = load_settings(
        {"AI_REQUESTS_PER_MINUTE": "1", "OPENAI_REQUESTS_PER_MINUTE": "1"}, dotenv_path=None
    )
    with connect(database_url) as conn, connect(database_url) as other:
        before = rate_limits(conn, settings)
        started = time.monotonic()
        before("gemini")
        before("openai")
        assert time.monotonic() - started < 5
        # Another worker's limiter named "gemini" is the same budget, and it is spent.
        for name in ("gemini", "openai"):
            with pytest.raises(WouldWait):
                RateLimiter(other, 1, name=name, sleep=refuse_to_sleep).acquire()
        RateLimiter(other, 1, name="offline", sleep=refuse_to_sleep).acquire()  # untouched


def test_a_provider_whose_limit_is_off_never_waits(database_url):
    settings = load_settings(
        {"AI_REQUESTS_PER_MINUTE": "1", "OPENAI_REQUESTS_PER_MINUTE": "0"}, dotenv_path=None
    )
    with connect(database_url) as conn:
        before = rate_limits(conn, settings)
        started = time.monotonic()
        for _ in range(5):
            before("openai")
        assert time.monotonic() - started < 1
