"""The call watch beats for a worker waiting inside a provider request, and only until
that request's deadline."""

from __future__ import annotations

import time

from supervisor.worker.watch import CallWatch


def beats_during(watch: CallWatch, seconds: float, beats: list[float]) -> int:
    before = len(beats)
    time.sleep(seconds)
    return len(beats) - before


def test_it_beats_while_a_request_is_in_flight_and_stops_at_its_deadline():
    beats: list[float] = []
    watch = CallWatch(lambda: beats.append(time.monotonic()), interval=0.05, grace=0.0)
    assert beats_during(watch, 0.3, beats) == 0  # idle: nothing to vouch for
    watch.begin(0.6)
    assert watch.in_flight()
    assert beats_during(watch, 0.4, beats) >= 3
    time.sleep(0.3)  # past the deadline: a request stuck this long is stuck
    assert not watch.in_flight()
    assert beats_during(watch, 0.3, beats) == 0


def test_a_chunk_moves_the_deadline_and_the_end_of_the_call_stops_the_beats():
    beats: list[float] = []
    watch = CallWatch(lambda: beats.append(time.monotonic()), interval=0.05, grace=0.0)
    watch.begin(0.3)
    for _ in range(4):  # chunks keep arriving: the request is alive
        time.sleep(0.2)
        watch.begin(0.3)
    assert watch.in_flight()
    watch.end()
    assert not watch.in_flight()
    assert beats_during(watch, 0.3, beats) == 0
