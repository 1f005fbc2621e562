"""The shared call machinery (generation/providers/calls.py), with no server and no SDK."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from generation.errors import (
    AuthenticationError,
    GenerationError,
    ProviderUnavailableError,
    QuotaExhaustedError,
    RateLimitedError,
    RefusedError,
)
from generation.providers.calls import Operation, RequestRunner, RetryPolicy, Usage, outcome
from generation.types import CallRecord, ProviderHooks


class SdkError(Exception):
    """Stands in for what a provider's SDK raises."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def classify(exc: Exception, attempts: int, model: str) -> GenerationError | None:
    """A provider's classification, as small as it gets: 503 retryable, 401 not."""
    if not isinstance(exc, SdkError):
        return None
    if exc.status == 503:
        return ProviderUnavailableError(f"{model} answered 503 after {attempts} attempts")
    return AuthenticationError(f"{model} rejected the key")


class Harness:
    """A runner whose hooks log every event, and a scripted request."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.events: list[str] = []
        self.records: list[CallRecord] = []
        hooks = ProviderHooks(before_request=self.before, on_call=self.on_call)
        policy = policy or RetryPolicy(max_attempts=4, base_seconds=0.01, cap_seconds=1.0)
        self.runner = RequestRunner("fake", policy, classify, hooks)

    def before(self) -> None:
        self.events.append("before")

    def on_call(self, record: CallRecord) -> None:
        self.events.append(f"record:{record.outcome}")
        self.records.append(record)

    def script(self, *outcomes: Exception | str) -> Callable[[], str]:
        """A request that raises or returns each of `outcomes` in turn."""
        pending = list(outcomes)

        def request() -> str:
            self.events.append("request")
            result = pending.pop(0)
            if isinstance(result, Exception):
                raise result
            return result

        return request

    @property
    def attempts(self) -> int:
        return self.events.count("request")


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_retryable_failures_are_retried_and_counted(harness: Harness) -> None:
    request = harness.script(SdkError(503), RateLimitedError("slow down"), "done")
    with harness.runner.operation("summary", "m-1") as op:
        assert harness.runner.send(op, request) == "done"
    assert harness.events == ["before", "request"] * 3 + ["record:ok"]
    assert op.retries == 2 and len(op.waits) == 2
    (record,) = harness.records
    assert (record.kind, record.outcome, record.retries) == ("summary", "ok", 2)
    assert (record.provider, record.model) == ("fake", "m-1")


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=0.02, cap_seconds=0.05)
    harness = Harness(policy)
    request = harness.script(*[SdkError(503)] * 4, "done")
    with harness.runner.operation("outline", "m") as op:
        harness.runner.send(op, request)
    first, second, third, fourth = op.waits
    assert 0.01 <= first <= 0.02 and 0.02 <= second <= 0.04
    assert 0.04 <= third <= 0.05 and fourth == 0.05  # 0.04..0.08 and 0.08..0.16, capped


def test_the_servers_own_delay_is_honoured(harness: Harness) -> None:
    request = harness.script(RateLimitedError("wait", retry_after=0.2), "done")
    started = time.monotonic()
    with harness.runner.operation("summary", "m") as op:
        harness.runner.send(op, request)
    assert time.monotonic() - started >= 0.2
    (wait,) = op.waits
    assert 0.2 <= wait <= 0.2 * 1.1  # the server's delay, plus a little jitter


def test_a_server_asking_for_longer_than_the_cap_ends_the_call_at_once(harness: Harness) -> None:
    request = harness.script(RateLimitedError("quota", retry_after=120), "never")
    with pytest.raises(RateLimitedError) as info, harness.runner.operation("summary", "m") as op:
        harness.runner.send(op, request)
    assert info.value.retry_after == 120 and harness.attempts == 1 and op.waits == []
    assert [r.outcome for r in harness.records] == ["retryable_error"]


def test_attempts_are_bounded_and_the_last_error_is_raised(harness: Harness) -> None:
    request = harness.script(*[SdkError(503)] * 4)
    expected = pytest.raises(ProviderUnavailableError, match="m answered 503 after 4 attempts")
    with expected as info, harness.runner.operation("prose", "m") as op:
        harness.runner.send(op, request)
    assert isinstance(info.value.__cause__, SdkError)
    assert harness.attempts == 4 and op.retries == 3
    assert info.value.attempts == 4  # the worker tells an outage from one cut stream
    assert [r.outcome for r in harness.records] == ["retryable_error"]


def test_tries_overrides_the_policy(harness: Harness) -> None:
    request = harness.script(SdkError(503), "unused")
    with pytest.raises(ProviderUnavailableError), harness.runner.operation("check", "m") as op:
        harness.runner.send(op, request, tries=1)
    assert harness.attempts == 1 and op.retries == 0


@pytest.mark.parametrize(
    "error", [SdkError(401), RefusedError("no"), QuotaExhaustedError("daily quota spent")]
)
def test_permanent_and_provider_wide_failures_are_not_retried(
    harness: Harness, error: Exception
) -> None:
    request = harness.script(error, "unused")
    with pytest.raises(GenerationError), harness.runner.operation("outline", "m") as op:
        harness.runner.send(op, request)
    assert harness.attempts == 1 and op.retries == 0


def test_the_request_model_names_the_failure(harness: Harness) -> None:
    request = harness.script(SdkError(401))
    expected = pytest.raises(AuthenticationError, match="embed-1 rejected")
    with expected, harness.runner.operation("check", "text-1") as op:
        harness.runner.send(op, request, model="embed-1")
    assert harness.records[0].model == "text-1"  # the operation's, for the record


def test_exceptions_that_are_no_provider_failure_propagate_unchanged(harness: Harness) -> None:
    request = harness.script(KeyError("bug"), "unused")
    with pytest.raises(KeyError), harness.runner.operation("summary", "m") as op:
        harness.runner.send(op, request)
    assert harness.attempts == 1  # a bug is not retried
    assert harness.records[0].outcome == "retryable_error"  # the worker retries it too


def test_one_record_per_operation_sums_every_request(harness: Harness) -> None:
    with harness.runner.operation("outline", "m") as op:
        for usage in (Usage(10, 5, 2), Usage(11, 7, 3)):
            harness.runner.send(op, harness.script("ok"))
            op.add_usage(usage)
    (record,) = harness.records
    assert (record.input_tokens, record.output_tokens, record.thinking_tokens) == (21, 12, 5)
    assert harness.events == ["before", "request", "before", "request", "record:ok"]


def test_a_stream_closed_early_is_one_ok_record(harness: Harness) -> None:
    def stream() -> Iterator[str]:
        with harness.runner.operation("prose", "m") as op:
            harness.runner.send(op, harness.script("opened"))
            yield "a"
            yield "b"

    chunks = stream()
    assert next(chunks) == "a"
    chunks.close()
    assert [(r.kind, r.outcome) for r in harness.records] == [("prose", "ok")]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (None, "ok"),
        (GeneratorExit(), "ok"),
        (RefusedError("no"), "permanent_error"),
        (AuthenticationError("bad key"), "permanent_error"),
        (QuotaExhaustedError("spent"), "retryable_error"),
        (RateLimitedError("slow"), "retryable_error"),
        (RuntimeError("bug"), "retryable_error"),
    ],
)
def test_outcomes(exc: BaseException | None, expected: str) -> None:
    assert outcome(exc) == expected


def test_an_operation_reports_even_without_requests() -> None:
    records: list[CallRecord] = []
    with Operation("embedding", records.append, provider="p", model="e"):
        pass
    assert records[0].outcome == "ok" and records[0].elapsed_seconds >= 0


@pytest.mark.parametrize(
    "options", [{"max_attempts": 0}, {"base_seconds": -1}, {"cap_seconds": -0.1}]
)
def test_a_policy_that_cannot_work_is_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**options)  # type: ignore[arg-type]
