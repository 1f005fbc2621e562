"""The shared AI rate limit holds across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from supervisor.db.connection import connect
from supervisor.db.ratelimit import RateLimiter

TAKER = textwrap.dedent(
    """
    import sys, time
    from supervisor.db.connection import connect
    from supervisor.db.ratelimit import RateLimiter
    limiter = RateLimiter(connect(sys.argv[1]), int(sys.argv[2]))
    deadline = float(sys.argv[3])
    while time.time() < deadline:
        limiter.acquire()
        print(time.time(), flush=True)
    """
)


@pytest.mark.slow
def test_four_processes_together_stay_within_the_limit(database_url):
    rpm = 600  # one call every 0.1 s
    deadline = time.time() + 4.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, database_url, str(rpm), str(deadline)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # Every process got calls through: the limit is shared, not won by one.
    assert all(outputs), [len(o) for o in outputs]
    stamps = sorted(float(x) for out in outputs for x in out)
    # Any one-second window holds at most 10 calls (+1 for timing at the window's edge).
    worst = max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps)
    assert worst <= 11, worst
    # ...and the limiter does let calls through at about the configured pace.
    assert len(stamps) >= 30, len(stamps)


def test_waits_are_reported_and_spaced(database_url):
    naps: list[float] = []
    with connect(database_url) as conn:

        def sleep(seconds: float) -> None:
            naps.append(seconds)
            time.sleep(seconds)

        limiter = RateLimiter(conn, 120, sleep=sleep)
        assert limiter.acquire() == 0.0
        waited = limiter.acquire()
    assert 0.2 <= waited <= 0.6
    assert naps and sum(naps) == pytest.approx(waited)
