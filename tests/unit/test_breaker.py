"""The provider circuit breaker: its state machine, and that it is shared by every
process that opens its file."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from health.breaker import Breaker
from tests.fakes import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(tmp_path, clock):
    made = Breaker.create(str(tmp_path), probe_base_seconds=15, probe_max_seconds=300, clock=clock)
    yield made
    made.close()
    made.unlink()


def test_it_opens_once_and_keeps_its_first_reason(breaker):
    assert breaker.state().open is False
    assert breaker.trip("Gemini rejected the API key (HTTP 400)") is True
    assert breaker.trip("Gemini model x is not available") is False
    state = breaker.state()
    assert state.open and state.reason == "Gemini rejected the API key (HTTP 400)"
    assert state.opened_at > 0


def test_one_probe_at_a_time_when_due_with_doubling_waits(breaker, clock):
    breaker.trip("quota")
    assert breaker.take_probe(os.getpid()) is False  # the first wait is not over
    clock.now += 15
    assert breaker.take_probe(os.getpid()) is True
    assert breaker.take_probe(1) is False  # someone (alive: pid 1) is probing
    waits = [breaker.probe_failed("still")]
    for _ in range(6):
        clock.now += waits[-1]
        assert breaker.take_probe(os.getpid()) is True
        waits.append(breaker.probe_failed(""))
    assert waits == [30, 60, 120, 240, 300, 300, 300]
    assert breaker.state().reason == "still"  # an empty reason keeps the last one
    assert breaker.state().probes == 7


def test_a_passing_probe_closes_it(breaker, clock):
    breaker.trip("quota")
    clock.now += 15
    assert breaker.take_probe(os.getpid())
    was = breaker.probe_passed()
    assert was.open and was.reason == "quota"
    assert breaker.state().open is False
    assert breaker.take_probe(os.getpid()) is False  # nothing to probe


def test_a_prober_that_died_is_replaced(breaker, clock):
    child = multiprocessing.get_context("fork").Process(target=lambda: None)
    child.start()
    child.join()
    breaker.trip("quota")
    clock.now += 15
    assert breaker.take_probe(child.pid) is True
    assert breaker.take_probe(os.getpid()) is True  # the first prober is gone


def _trip_in_child(path: str) -> None:
    Breaker(path).trip("from another process")


def test_every_process_that_opens_the_file_shares_it(breaker):
    child = multiprocessing.get_context("fork").Process(target=_trip_in_child, args=(breaker.path,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert breaker.state().reason == "from another process"


def test_a_file_that_is_not_a_breaker_is_refused(tmp_path):
    path = tmp_path / "other"
    path.write_bytes(b"x" * 512)
    with pytest.raises(ValueError, match="not a storyworker breaker"):
        Breaker(str(path)).state()


def test_the_fault_a_passing_probe_cleared_repeats_within_its_window(breaker, clock):
    reason = "the server at 127.0.0.1:8080 returned HTTP 500 after 5 attempts: boom"
    assert breaker.repeats(reason) is False  # no probe has passed yet
    breaker.trip(reason)
    assert breaker.repeats(reason) is False  # open: it is an outage for now
    clock.now += 15
    assert breaker.take_probe(os.getpid())
    breaker.probe_passed()
    assert breaker.state().open is False
    # The same fault (other digits) soon after: the jobs', not an outage.
    assert breaker.repeats(reason.replace("5 attempts", "3 attempts")) is True
    assert breaker.repeats("Gemini rejected the API key") is False  # another fault
    clock.now += breaker.repeat_window_seconds - 1
    assert breaker.repeats(reason) is True  # and each repeat renews the window
    clock.now += breaker.repeat_window_seconds + 1
    assert breaker.repeats(reason) is False  # long after: it may be an outage again
    assert breaker.trip(reason) is True
