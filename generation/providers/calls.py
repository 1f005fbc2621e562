"""How every provider sends its requests and accounts for them.

Two pieces, the same for every provider; only the classification of its SDK's
exceptions is the provider's own:
- `RequestRunner.send` runs one request under a `RetryPolicy`: `before_request` before
  every attempt (the shared rate limit sees retries too); retryable failures tried again
  after exponential backoff with jitter, or after the server's own delay when it gave
  one; given up at once when the server asks for longer than the policy's cap, or when
  the failure is provider-wide (a daily quota will not come back within seconds);
- an `Operation` is one provider operation (an outline, a section, …) however many
  requests it takes: it sums their usage and retries and reports one `CallRecord`.
Two rules every provider applies alike live here too: the output limit a request
carries (`max_output_tokens`) and the deadline a stream must keep by sending text
(`text_deadline`).
"""

from __future__ import annotations

import contextlib
import email.utils
import itertools
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import backoff

from generation.errors import (
    GenerationError,
    MalformedOutputError,
    ProviderUnavailableError,
    RetryableError,
)
from generation.types import CallRecord, ProviderHooks

T = TypeVar("T")

#: Extra wait on top of a server-given delay, so workers told the same delay spread out.
SERVER_DELAY_JITTER = 0.1
#: Output tokens allowed per word wanted: English runs about 1.3 tokens a word, other
#: scripts up to about 2 (and a thinking model spends some before it writes).
TOKENS_PER_WORD = 2.0
#: Room on top of the words wanted: models overshoot a word target.
OUTPUT_HEADROOM = 1.5
#: No answer is limited to less than this (short targets, JSON punctuation).
MIN_OUTPUT_TOKENS = 256
#: Characters per token when a server reports no usage and we estimate it.
CHARS_PER_TOKEN = 4

#: A provider's reading of an exception raised by its SDK: (exception, attempts made so
#: far, model the request was for) -> the GenerationError it means, or None when it is
#: not a provider failure at all (a bug), which then propagates unchanged.
Classify = Callable[[Exception, int, str], GenerationError | None]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one request is tried."""

    #: HTTP attempts per request, the first included.
    max_attempts: int = 5
    #: First backoff wait; each further one doubles (with jitter), up to `cap_seconds`.
    base_seconds: float = 1.0
    #: Longest wait between attempts; a server asking for longer ends the call at once.
    cap_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        if self.base_seconds < 0 or self.cap_seconds < 0:
            raise ValueError("RetryPolicy seconds must be >= 0")


@dataclass(frozen=True, kw_only=True)
class Retrying:
    """The retry knobs of a network provider's config (each config inherits them)."""

    #: HTTP attempts per request, the first included.
    max_attempts: int = 5
    backoff_base_seconds: float = 1.0
    #: Longest wait between attempts; a server asking for longer ends the call at once.
    max_backoff_seconds: float = 60.0

    @property
    def retry_policy(self) -> RetryPolicy:
        """The shared retry policy these settings describe."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_seconds=self.backoff_base_seconds,
            cap_seconds=self.max_backoff_seconds,
        )


@dataclass(frozen=True)
class Usage:
    """Tokens one response (or several, summed) was billed for."""

    input_tokens: int = 0
    #: Everything billed as output, thinking included.
    output_tokens: int = 0
    #: The part of `output_tokens` the model spent thinking.
    thinking_tokens: int = 0
    #: Some of these counts are our estimate: the server reported none.
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.thinking_tokens + other.thinking_tokens,
            self.estimated or other.estimated,
        )


def estimate_tokens(text: str) -> int:
    """About how many tokens `text` is, for a server that reports no usage: one per
    CHARS_PER_TOKEN characters (no tokenizer of the model is at hand)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def max_output_tokens(words: int) -> int:
    """The output limit of a request for an answer of about `words` words: enough for
    that many words in any language with headroom, never below MIN_OUTPUT_TOKENS. One
    rule for every provider, so a cut-off answer means the same everywhere."""
    return max(MIN_OUTPUT_TOKENS, math.ceil(words * TOKENS_PER_WORD * OUTPUT_HEADROOM))


class Operation:
    """One provider operation's accounting: one CallRecord, however many requests.

    Use it as a context manager; the record is reported when the block ends, with the
    outcome its exception (if any) implies.
    """

    def __init__(
        self,
        kind: str,
        on_call: Callable[[CallRecord], None],
        *,
        provider: str,
        model: str,
        attempts: int | None = None,
    ) -> None:
        self.kind, self.provider, self.model = kind, provider, model
        #: At most this many attempts per request, below the policy's (None: the
        #: policy's): for an operation whose failure its caller survives.
        self.attempts = attempts
        self._on_call = on_call
        self.started = time.monotonic()
        #: Requests beyond the first made for this operation.
        self.retries = 0
        self.usage = Usage()
        #: Seconds waited before each retry, in order (for tests and diagnosis).
        self.waits: list[float] = []

    def add_usage(self, usage: Usage) -> None:
        self.usage += usage

    def count_retry(self, wait: float) -> None:
        """One more request for this operation, after waiting `wait` seconds."""
        self.retries += 1
        self.waits.append(wait)

    def __enter__(self) -> Operation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._on_call(
            CallRecord(
                kind=self.kind,
                outcome=outcome(exc),
                elapsed_seconds=time.monotonic() - self.started,
                input_tokens=self.usage.input_tokens,
                output_tokens=self.usage.output_tokens,
                retries=self.retries,
                thinking_tokens=self.usage.thinking_tokens,
                provider=self.provider,
                model=self.model,
                estimated=self.usage.estimated,
            )
        )


class RequestRunner:
    """Sends one provider's requests under its RetryPolicy and opens its Operations."""

    def __init__(
        self, provider: str, policy: RetryPolicy, classify: Classify, hooks: ProviderHooks
    ) -> None:
        self.provider = provider
        self.policy = policy
        self._classify = classify
        self._hooks = hooks

    def operation(self, kind: str, model: str, attempts: int | None = None) -> Operation:
        """A new operation of `kind` on `model`, reporting to the hooks' `on_call`; with
        `attempts`, each of its requests is tried at most that often."""
        return Operation(
            kind, self._hooks.on_call, provider=self.provider, model=model, attempts=attempts
        )

    def send(
        self,
        op: Operation,
        request: Callable[[], T],
        *,
        tries: int | None = None,
        model: str | None = None,
    ) -> T:
        """`request` under the retry policy, with at most `tries` (default: the policy's
        `max_attempts`) attempts in all; every provider failure raised as the
        GenerationError the provider's classification makes of it. Retries are counted
        in `op`. `model` (default `op.model`) is what the request was for, for messages.
        """
        most = min(op.attempts or self.policy.max_attempts, self.policy.max_attempts)
        retrying = backoff.on_exception(
            waits,
            RetryableError,
            max_tries=tries or most,
            giveup=self._give_up,
            on_backoff=lambda details: op.count_retry(details["wait"]),
            jitter=None,
            logger=None,
            base=self.policy.base_seconds,
            cap=self.policy.cap_seconds,
        )(self._attempts(request, op.model if model is None else model))
        return retrying()

    def _attempts(self, request: Callable[[], T], model: str) -> Callable[[], T]:
        """One attempt at `request` per call: `before_request`, then the request, its
        failures classified (counting the attempts made so far, for the message)."""
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            self._hooks.before_request()
            try:
                return request()
            except GenerationError as exc:
                exc.attempts = attempts
                raise
            except Exception as exc:
                error = self._classify(exc, attempts, model)
                if error is None:
                    raise
                error.attempts = attempts
                raise error from exc

        return attempt

    def _give_up(self, error: RetryableError) -> bool:
        # A provider-wide fault (a spent daily quota) will not pass within seconds, and a
        # server asking for more than we would ever sleep is taken at its word: the error
        # carries retry_after, and the job level waits it out instead of a worker.
        if error.provider_wide:
            return True
        return error.retry_after is not None and error.retry_after > self.policy.cap_seconds


def waits(base: float, cap: float) -> Generator[float | None, RetryableError | None, None]:
    """backoff's wait generator: the server's own delay when it gave one, else exponential
    with jitter, capped. backoff sends each failure in, which is what makes that work."""
    error = yield None
    for attempt in itertools.count():
        hint = getattr(error, "retry_after", None)
        if hint is not None:
            delay = hint * random.uniform(1.0, 1.0 + SERVER_DELAY_JITTER)
        else:
            delay = base * 2**attempt * random.uniform(0.5, 1.0)
        error = yield min(cap, delay)


def parse_retry_after(value: str) -> float | None:
    """Seconds a Retry-After header value asks for (delta-seconds or an HTTP date, never
    negative); None when it is neither."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def outcome(exc: BaseException | None) -> str:
    """A CallRecord outcome for how an operation ended."""
    if exc is None or isinstance(exc, GeneratorExit):  # a consumer that stopped reading
        return "ok"
    if isinstance(exc, GenerationError) and not exc.retryable:
        return "permanent_error"
    # Unknown exceptions count as retryable: the worker retries them too.
    return "retryable_error"


def ask_twice(op: Operation, answer: Callable[[], T]) -> T:
    """`answer()`, asked once more when its answer is malformed (one more request for
    the same result, counted as a retry of `op`); then MalformedOutputError."""
    try:
        return answer()
    except MalformedOutputError:
        op.retries += 1
    try:
        return answer()
    except MalformedOutputError as exc:
        raise MalformedOutputError(f"{exc} (asked twice)") from None


_END = object()


class _Reader(threading.Thread):
    """Reads a stream on a thread of its own into `inbox`: (chunk, None) per chunk, then
    (_END, the exception that ended it or None). Closes the stream when done."""

    def __init__(self, chunks: Iterator[object]) -> None:
        super().__init__(name="stream-reader", daemon=True)
        self.chunks = chunks
        self.inbox: queue.SimpleQueue[tuple[object, BaseException | None]] = queue.SimpleQueue()
        self.abandoned = threading.Event()

    def run(self) -> None:
        error: BaseException | None = None
        try:
            for chunk in self.chunks:
                if self.abandoned.is_set():
                    break
                self.inbox.put((chunk, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            error = exc
        finally:
            close = getattr(self.chunks, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
        self.inbox.put((_END, error))


def _cut_nothing() -> None:
    return None


def until_text(chunks: Iterator[T], has_text: Callable[[T], bool]) -> list[T]:
    """The chunks of a stream up to and including its first with text (all of them when
    none has any; [] for a stream with no chunk at all). A stream opener reads these
    before it hands the stream on, so a stream cut before any text (at its deadline, or
    by a broken connection) is retried inside the call: nothing was yielded yet."""
    head: list[T] = []
    for chunk in chunks:
        head.append(chunk)
        if has_text(chunk):
            break
    return head


def text_deadline(
    chunks: Iterator[T],
    seconds: float,
    has_text: Callable[[T], bool],
    *,
    label: str,
    cut: Callable[[], None] = _cut_nothing,
) -> Generator[T, None, None]:
    """`chunks` as they come, as long as text keeps coming: when `seconds` pass without
    a chunk that `has_text` (from the start, then from the last such chunk), the stream
    is given up: `cut()` (which should break its connection) and ProviderUnavailableError.
    Keep-alives and empty chunks renew a socket's read timeout but not this deadline.

    The stream is read on a thread of its own, so a read blocked on a connection that
    only sends keep-alives cannot hold the caller past the deadline. Exceptions the
    stream raises are raised here, in the caller's thread."""
    reader = _Reader(chunks)  # type: ignore[arg-type]
    reader.start()
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                chunk, error = reader.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ProviderUnavailableError(
                    f"{label} sent no text for {seconds:g} s; the stream was cut"
                ) from None
            if chunk is _END:
                if error is not None:
                    raise error
                return
            if has_text(chunk):  # type: ignore[arg-type]
                deadline = time.monotonic() + seconds
            yield chunk  # type: ignore[misc]
    finally:
        if reader.is_alive():
            reader.abandoned.set()
            cut()
