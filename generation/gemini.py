"""The Gemini provider, on Google's maintained `google-genai` SDK (3.x).

What the SDK leaves open, or would do on its own, is settled here on purpose:
- the API version (v1beta; the SDK defaults to v1) and the base URL are always passed,
  as is the key, so the SDK's environment variables (GOOGLE_GEMINI_BASE_URL,
  GOOGLE_API_KEY, GEMINI_API_KEY, GOOGLE_GENAI_API_VERSION, GOOGLE_GENAI_USE_VERTEXAI)
  can neither redirect us nor swap the key;
- a per-request timeout (the SDK sets none; httpx2 applies it to connect and to each
  read, so a long stream lives as long as chunks keep coming);
- retries: the SDK's own are off (`HttpRetryOptions(attempts=1)`), and so are its
  automatic stream continuation and function calling, which would send requests past
  the `before_request` hook (the shared rate limit). We retry with `backoff`, honouring
  Retry-After and RetryInfo, and follow continuation tokens ourselves;
- one Client for the provider's lifetime: a temporary one closes its HTTP connection
  under you.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import backoff
from google import genai
from google.genai import types

from generation import prompts
from generation.errors import (
    GenerationError,
    MalformedOutputError,
    ProviderUnavailableError,
    RetryableError,
)
from generation.gemini_errors import (
    StreamHop,
    broken_stream,
    classify,
    finish_reason,
    outline_schema,
    parse_outline,
    refusal,
    usage_of,
)
from generation.types import (
    GEMINI_API_VERSION,
    GEMINI_EMBEDDING_DIMENSIONS,
    GEMINI_EMBEDDING_MODEL,
    GEMINI_MODEL,
    GEMINI_TIMEOUT_SECONDS,
    CallRecord,
    ChapterRequest,
    Outline,
    ProviderHooks,
)

T = TypeVar("T")

#: Used when GeminiConfig.base_url is None, so GOOGLE_GEMINI_BASE_URL cannot win.
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"
#: check() is a probe (start-up, /ready): one attempt, answered quickly or not at all.
CHECK_TIMEOUT_SECONDS = 10.0
#: Extra wait on top of a server-given delay, so workers told the same delay spread out.
RETRY_AFTER_JITTER = 0.1
#: A stream may be continued this many times (finish_reason CONTINUATION) at most.
MAX_CONTINUATIONS = 20

_DEFAULT_HOOKS = ProviderHooks()


@dataclass(frozen=True)
class GeminiConfig:
    """How to reach Gemini and how hard to try. `api_key` never appears in a repr."""

    api_key: str = field(repr=False)
    model: str = GEMINI_MODEL
    embedding_model: str = GEMINI_EMBEDDING_MODEL
    base_url: str | None = None
    api_version: str = GEMINI_API_VERSION
    timeout_seconds: float = GEMINI_TIMEOUT_SECONDS
    #: HTTP attempts per request, the first included.
    max_attempts: int = 5
    backoff_base_seconds: float = 1.0
    #: Longest wait between attempts; a server asking for longer ends the call at once.
    max_backoff_seconds: float = 60.0
    embedding_dimensions: int = GEMINI_EMBEDDING_DIMENSIONS

    def __post_init__(self) -> None:
        # An empty key would make the SDK fall back to GOOGLE_API_KEY / GEMINI_API_KEY.
        if not self.api_key.strip():
            raise ValueError("GeminiConfig.api_key is empty")
        if self.timeout_seconds <= 0 or self.max_attempts < 1 or self.embedding_dimensions < 1:
            raise ValueError(
                "GeminiConfig needs timeout_seconds > 0, max_attempts >= 1, "
                "embedding_dimensions >= 1"
            )
        if self.backoff_base_seconds < 0 or self.max_backoff_seconds < 0:
            raise ValueError("GeminiConfig backoff seconds must be >= 0")


class GeminiProvider:
    """A `Provider` backed by the Gemini API; see the module docstring for its policies.

    Every public method reports exactly one CallRecord through `hooks.on_call` (a stream
    when it ends) and raises only GenerationError subclasses for provider failures.
    """

    name = "gemini"

    def __init__(self, config: GeminiConfig, hooks: ProviderHooks = _DEFAULT_HOOKS) -> None:
        self._config = config
        self._hooks = hooks
        self._client = genai.Client(
            api_key=config.api_key,
            vertexai=False,
            http_options=types.HttpOptions(
                api_version=config.api_version,
                base_url=config.base_url or DEFAULT_BASE_URL,
                timeout=_millis(config.timeout_seconds),
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )

    def __repr__(self) -> str:
        return f"GeminiProvider({self._config!r})"

    @property
    def embedding_model(self) -> str:
        return self._config.embedding_model

    def close(self) -> None:
        """Close the HTTP connections; the provider cannot be used afterwards."""
        self._client.close()

    # --- Provider -----------------------------------------------------------------

    def outline(self, request: ChapterRequest) -> Outline:
        """A non-empty title and exactly `bullet_count` non-empty bullets, as structured
        JSON. A malformed answer is asked for once more, then MalformedOutputError."""
        prompt = prompts.outline_prompt(request)
        count = request.preferences.bullet_count
        config = self._content_config(
            prompt, response_mime_type="application/json", response_schema=outline_schema(count)
        )
        with self._operation("outline") as op:
            try:
                return parse_outline(self._generate(op, prompt, config).text, count)
            except MalformedOutputError:
                op.retries += 1  # asking again is one more request for the same result
            try:
                return parse_outline(self._generate(op, prompt, config).text, count)
            except MalformedOutputError as exc:
                raise MalformedOutputError(f"{exc} (asked twice)") from None

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        """Yield the section's prose as it streams. Failures before the first chunk are
        retried; a stream cut after text was yielded raises a retryable error (the job
        resumes from its checkpoint); a refusal, even in a later chunk, RefusedError."""
        prompt = prompts.section_prompt(request, outline, index, previous_text)
        return self._stream(prompt)

    def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
        """A short plain-text summary of the finished chapter; never empty."""
        prompt = prompts.summary_prompt(request, outline, text)
        with self._operation("summary") as op:
            response = self._generate(op, prompt, self._content_config(prompt))
            finish = finish_reason(response)
            summary = (response.text or "").strip()
            if not summary or finish == "CONTINUATION":
                raise MalformedOutputError(
                    f"Gemini returned an unfinished summary (finish_reason={finish or 'none'})"
                )
            return summary

    def embed(self, text: str) -> list[float]:
        """A unit-length vector of exactly `embedding_dimensions` values (Google asks
        callers to normalise embeddings requested below the model's full size)."""
        size = self._config.embedding_dimensions
        config = types.EmbedContentConfig(output_dimensionality=size)
        with self._operation("embedding") as op:
            response = self._send(
                op,
                lambda: self._client.models.embed_content(
                    model=self._config.embedding_model, contents=text, config=config
                ),
            )
            embeddings = response.embeddings or []
            values = [float(v) for v in (embeddings[0].values or [])] if embeddings else []
            if len(values) != size or not all(math.isfinite(v) for v in values):
                raise MalformedOutputError(
                    f"Gemini returned {len(values)} usable embedding values, expected {size}"
                )
            norm = math.sqrt(sum(v * v for v in values))
            if norm == 0:
                raise MalformedOutputError("Gemini returned an all-zero embedding")
            return [v / norm for v in values]

    def check(self) -> None:
        """Prove the key and model work with one quick GET models/{model}: a rejected
        key raises AuthenticationError, an unknown model InvalidRequestError, an
        unreachable or failing server a RetryableError. One attempt: callers decide
        whether to try again."""
        timeout = _millis(min(self._config.timeout_seconds, CHECK_TIMEOUT_SECONDS))
        config = types.GetModelConfig(http_options=types.HttpOptions(timeout=timeout))
        with self._operation("check") as op:
            self._send(
                op,
                lambda: self._client.models.get(model=self._config.model, config=config),
                tries=1,
            )

    # --- requests -----------------------------------------------------------------

    def _content_config(
        self, prompt: prompts.Prompt, **options: Any
    ) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            system_instruction=prompt.system,
            automatic_continuation=False,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            **options,
        )

    def _generate(
        self, op: _Operation, prompt: prompts.Prompt, config: types.GenerateContentConfig
    ) -> types.GenerateContentResponse:
        """One generate_content under the retry policy; a refusal is RefusedError."""

        def request() -> types.GenerateContentResponse:
            response = self._client.models.generate_content(
                model=self._config.model, contents=prompt.user, config=config
            )
            op.add_usage(usage_of(response))  # a refused answer is billed too
            if (refused := refusal(response)) is not None:
                raise refused
            return response

        return self._send(op, request)

    def _stream(self, prompt: prompts.Prompt) -> Iterator[str]:
        with self._operation("prose") as op:
            hop, yielded = StreamHop(), False
            for _ in range(MAX_CONTINUATIONS + 1):
                chunks = self._open_stream(op, prompt, hop.token, retry=not yielded)
                hop = StreamHop()
                try:
                    for chunk in chunks:
                        if text := hop.observe(chunk):
                            yielded = True
                            yield text
                finally:
                    chunks.close()
                    op.add_usage(hop.usage)
                if not hop.continues:
                    break
            if hop.finish in ("", "CONTINUATION"):
                raise ProviderUnavailableError(
                    "Gemini's stream ended before the model finished "
                    f"(finish_reason={hop.finish or 'none'})"
                )

    def _open_stream(
        self, op: _Operation, prompt: prompts.Prompt, token: bytes | None, *, retry: bool
    ) -> Generator[types.GenerateContentResponse, None, None]:
        """Start one streamed response (continuing from `token` when given) and read its
        first chunk, retrying failures up to there when `retry` (nothing yielded yet)."""
        config = self._content_config(prompt, continuation_token=token)

        def request() -> tuple[Iterator[types.GenerateContentResponse], Any]:
            stream = self._client.models.generate_content_stream(
                model=self._config.model, contents=prompt.user, config=config
            )
            try:
                return stream, next(stream, None)
            except BaseException:
                _close(stream)
                raise

        stream, first = self._send(op, request, tries=None if retry else 1)
        return _rest_of_stream(stream, first)

    def _send(self, op: _Operation, request: Callable[[], T], *, tries: int | None = None) -> T:
        """`request` under the retry policy: `before_request` before every attempt;
        retryable failures tried again after exponential backoff with jitter (or the
        server's own delay) up to `max_attempts` (or `tries`) attempts in all; every
        provider failure raised as a GenerationError saying how many attempts it took."""
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            self._hooks.before_request()
            try:
                return request()
            except GenerationError:
                raise
            except Exception as exc:
                error = classify(exc, attempts)
                if error is None:
                    raise
                raise error from exc

        def count_retry(_details: Any) -> None:
            op.retries += 1

        retrying = backoff.on_exception(
            _waits,
            RetryableError,
            max_tries=tries or self._config.max_attempts,
            giveup=self._wait_too_long,
            on_backoff=count_retry,
            jitter=None,
            logger=None,
            base=self._config.backoff_base_seconds,
            cap=self._config.max_backoff_seconds,
        )(attempt)
        return retrying()

    def _wait_too_long(self, error: RetryableError) -> bool:
        # A server asking for more than we would ever sleep: give up now; the error
        # carries retry_after, and the job level waits it out instead of a worker.
        return (
            error.retry_after is not None and error.retry_after > self._config.max_backoff_seconds
        )

    def _operation(self, kind: str) -> _Operation:
        return _Operation(kind, self._hooks.on_call)


class _Operation:
    """One provider operation's accounting: one CallRecord, however many requests."""

    def __init__(self, kind: str, on_call: Callable[[CallRecord], None]) -> None:
        self.kind, self._on_call = kind, on_call
        self.started = time.monotonic()
        self.retries = 0
        self.input_tokens = self.output_tokens = 0

    def add_usage(self, usage: tuple[int, int]) -> None:
        self.input_tokens += usage[0]
        self.output_tokens += usage[1]

    def __enter__(self) -> _Operation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.monotonic() - self.started
        tokens = (self.input_tokens, self.output_tokens)
        self._on_call(CallRecord(self.kind, _outcome(exc), elapsed, *tokens, self.retries))


def _rest_of_stream(
    stream: Iterator[types.GenerateContentResponse], first: Any
) -> Generator[types.GenerateContentResponse, None, None]:
    """`first`, then the rest of `stream`; a failure mid-way becomes a GenerationError."""
    try:
        if first is None:
            return
        yield first
        while True:
            try:
                chunk = next(stream)
            except StopIteration:
                return
            except Exception as exc:
                raise broken_stream(exc) from exc
            yield chunk
    finally:
        _close(stream)


def _close(stream: Any) -> None:
    # Closing the SDK's generator releases the HTTP response now, not at garbage collection.
    close = getattr(stream, "close", None)
    if callable(close):
        close()


def _waits(base: float, cap: float) -> Generator[float | None, RetryableError | None, None]:
    """backoff's wait generator: the server's own delay when it gave one, else exponential
    with jitter, capped. backoff sends each failure in, which is what makes that work."""
    error = yield None
    for attempt in itertools.count():
        hint = getattr(error, "retry_after", None)
        if hint is not None:
            delay = hint * random.uniform(1.0, 1.0 + RETRY_AFTER_JITTER)
        else:
            delay = base * 2**attempt * random.uniform(0.5, 1.0)
        error = yield min(cap, delay)


def _outcome(exc: BaseException | None) -> str:
    if exc is None or isinstance(exc, GeneratorExit):  # a consumer that stopped reading
        return "ok"
    if isinstance(exc, GenerationError) and not exc.retryable:
        return "permanent_error"
    # Unknown exceptions count as retryable: the worker retries them too.
    return "retryable_error"


def _millis(seconds: float) -> int:
    """HttpOptions.timeout is in milliseconds."""
    return max(1, round(seconds * 1000))
