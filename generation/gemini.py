"""The Gemini provider, on Google's maintained `google-genai` SDK.

What the SDK leaves open is set here on purpose: the API version (v1beta, where
structured output and system instructions are safest; the SDK defaults to v1), a
per-request timeout (it sets none), and the retry policy (it retries nothing by
default; we retry with `backoff`, honouring Retry-After and RetryInfo). One Client
lives as long as the provider: a temporary one closes its HTTP connection under you.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import backoff
from google import genai
from google.genai import types

from generation import prompts
from generation.errors import GenerationError, MalformedOutputError, RetryableError
from generation.gemini_errors import classify, refusal
from generation.types import CallRecord, ChapterRequest, Outline, ProviderHooks

T = TypeVar("T")

OUTLINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "bullets": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "bullets"],
}


@dataclass(frozen=True)
class GeminiConfig:
    api_key: str = field(repr=False)
    model: str = "gemini-2.5-flash"
    embedding_model: str = "gemini-embedding-001"
    base_url: str | None = None
    api_version: str = "v1beta"
    timeout_seconds: float = 120.0
    max_attempts: int = 5
    backoff_base_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    embedding_dimensions: int = 768


def _waits(base: float, cap: float) -> Iterator[float | None]:
    """backoff wait generator: exponential with jitter, or the server's own delay."""
    exc = yield None
    attempt = 0
    while True:
        hint = getattr(exc, "retry_after", None)
        delay = hint if hint is not None else base * 2**attempt * random.uniform(0.5, 1.0)
        attempt += 1
        exc = yield min(cap, max(0.0, delay))


def _tokens(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage_metadata", None)
    return (
        getattr(usage, "prompt_token_count", 0) or 0,
        getattr(usage, "candidates_token_count", 0) or 0,
    )


class GeminiProvider:
    name = "gemini"

    def __init__(self, config: GeminiConfig, hooks: ProviderHooks | None = None) -> None:
        self._config = config
        self._hooks = hooks or ProviderHooks()
        self._client = genai.Client(
            api_key=config.api_key,
            vertexai=False,  # explicit: GOOGLE_GENAI_USE_VERTEXAI must not flip us over
            http_options=types.HttpOptions(
                api_version=config.api_version,
                base_url=config.base_url,
                timeout=int(config.timeout_seconds * 1000),
                retry_options=types.HttpRetryOptions(attempts=1),  # ours, not the SDK's
            ),
        )

    def __repr__(self) -> str:
        return f"GeminiProvider({self._config!r})"

    @property
    def embedding_model(self) -> str:
        return self._config.embedding_model

    def close(self) -> None:
        self._client.close()

    # --- the retry and accounting core --------------------------------------------

    def _call(
        self,
        kind: str,
        request: Callable[[], T],
        tokens: Callable[[T], tuple[int, int]],
        *,
        report_success: bool = True,
    ) -> tuple[T, int]:
        """Run `request` with our retry policy; return its result and the attempts it
        took. A failure is always reported as a CallRecord; a success unless the
        caller reports it itself (a stream, once it ends)."""
        started, attempts = time.monotonic(), 0

        def once() -> T:
            nonlocal attempts
            attempts += 1
            self._hooks.before_request()
            try:
                return request()
            except Exception as exc:
                raise classify(exc) from exc

        retrying = backoff.on_exception(
            _waits,
            RetryableError,
            max_tries=self._config.max_attempts,
            jitter=None,
            base=self._config.backoff_base_seconds,
            cap=self._config.max_backoff_seconds,
            logger=None,
        )(once)
        try:
            result = retrying()
        except GenerationError as exc:
            elapsed = time.monotonic() - started
            outcome = "retryable_error" if exc.retryable else "permanent_error"
            self._hooks.on_call(CallRecord(kind, outcome, elapsed, retries=attempts - 1))
            if exc.retryable and attempts > 1:
                raise type(exc)(
                    f"{exc} (after {attempts} attempts)",
                    retry_after=getattr(exc, "retry_after", None),
                ) from exc
            raise
        if report_success:
            used_in, used_out = tokens(result)
            elapsed = time.monotonic() - started
            self._hooks.on_call(CallRecord(kind, "ok", elapsed, used_in, used_out, attempts - 1))
        return result, attempts

    def _generate(
        self, kind: str, prompt: prompts.Prompt, **config: Any
    ) -> types.GenerateContentResponse:
        def request() -> types.GenerateContentResponse:
            response = self._client.models.generate_content(
                model=self._config.model,
                contents=prompt.user,
                config=types.GenerateContentConfig(system_instruction=prompt.system, **config),
            )
            if (refused := refusal(response)) is not None:
                raise refused
            return response

        return self._call(kind, request, _tokens)[0]

    # --- Provider -----------------------------------------------------------------

    def outline(self, request: ChapterRequest) -> Outline:
        """A title and exactly bullet_count bullets; one more try if the JSON is off."""
        prompt = prompts.outline_prompt(request)
        problem: MalformedOutputError | None = None
        for _ in range(2):
            response = self._generate(
                "outline",
                prompt,
                response_mime_type="application/json",
                response_json_schema=OUTLINE_SCHEMA,
            )
            try:
                return parse_outline(response.text, request.preferences.bullet_count)
            except MalformedOutputError as exc:
                problem = exc
        assert problem is not None
        raise problem

    def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
        response = self._generate("summary", prompts.summary_prompt(request, outline, text))
        summary = (response.text or "").strip()
        if not summary:
            raise MalformedOutputError("Gemini returned an empty summary")
        return summary

    def embed(self, text: str) -> list[float]:
        """A unit-length vector of the configured size (Google asks callers to
        normalise embeddings truncated below the model's full size)."""

        def request() -> types.EmbedContentResponse:
            return self._client.models.embed_content(
                model=self._config.embedding_model,
                contents=text,
                config=types.EmbedContentConfig(
                    output_dimensionality=self._config.embedding_dimensions
                ),
            )

        response = self._call("embedding", request, lambda _: (0, 0))[0]
        values = list((response.embeddings or [types.ContentEmbedding()])[0].values or [])
        if len(values) != self._config.embedding_dimensions:
            expected = self._config.embedding_dimensions
            raise MalformedOutputError(
                f"Gemini returned {len(values)} embedding values, expected {expected}"
            )
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        return [v / norm for v in values]

    def check(self) -> None:
        """Cheap proof that the key and model work: GET models/{model}."""
        self._call(
            "check", lambda: self._client.models.get(model=self._config.model), lambda _: (0, 0)
        )

    def stream_section(
        self, request: ChapterRequest, outline: Outline, index: int, previous_text: str
    ) -> Iterator[str]:
        """Yield the section's text as it streams. Retries happen only before the first
        chunk; a stream cut after that raises a retryable error (the job resumes)."""
        prompt = prompts.section_prompt(request, outline, index, previous_text)
        config = types.GenerateContentConfig(system_instruction=prompt.system)
        stream: Iterator[types.GenerateContentResponse] | None = None

        def first_chunk() -> types.GenerateContentResponse:
            nonlocal stream
            stream = iter(
                self._client.models.generate_content_stream(
                    model=self._config.model, contents=prompt.user, config=config
                )
            )
            try:
                chunk = next(stream)
            except StopIteration:
                raise MalformedOutputError("Gemini returned an empty stream") from None
            if (refused := refusal(chunk)) is not None:
                raise refused
            return chunk

        return _Stream(self, first_chunk, lambda: stream)


class _Stream:
    """Iterates one streamed section and reports its CallRecord when it ends."""

    def __init__(
        self, provider: GeminiProvider, first_chunk: Callable[[], Any], rest: Callable[[], Any]
    ) -> None:
        self._provider, self._first_chunk, self._rest = provider, first_chunk, rest
        self._gen = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._gen

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def _run(self) -> Iterator[str]:
        hooks = self._provider._hooks
        started, usage = time.monotonic(), (0, 0)
        # The first chunk goes through the retry core, which reports a failure itself;
        # once streaming, this generator reports one record, however it ends.
        chunk, attempts = self._provider._call(
            "prose", self._first_chunk, lambda _: (0, 0), report_success=False
        )
        outcome = "retryable_error"
        try:
            while chunk is not None:
                usage = _tokens(chunk) if getattr(chunk, "usage_metadata", None) else usage
                if (refused := refusal(chunk)) is not None:
                    outcome = "permanent_error"
                    raise refused
                if chunk.text:
                    yield chunk.text
                chunk = self._next_chunk()
            outcome = "ok"
        finally:
            stream = self._rest()
            if stream is not None and hasattr(stream, "close"):
                stream.close()
            elapsed = time.monotonic() - started
            hooks.on_call(CallRecord("prose", outcome, elapsed, *usage, retries=attempts - 1))

    def _next_chunk(self) -> Any:
        try:
            return next(self._rest())
        except StopIteration:
            return None
        except Exception as exc:  # a cut stream is classified, not lost
            raise classify(exc) from exc


def parse_outline(text: str | None, bullet_count: int) -> Outline:
    """The outline in `text`, or MalformedOutputError saying what is wrong with it."""
    try:
        data = json.loads(text or "")
    except json.JSONDecodeError:
        raise MalformedOutputError("Gemini's outline is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedOutputError("Gemini's outline is not a JSON object")
    title, bullets = data.get("title"), data.get("bullets")
    if not isinstance(title, str) or not title.strip():
        raise MalformedOutputError("Gemini's outline has no title")
    if not isinstance(bullets, list) or not all(isinstance(b, str) and b.strip() for b in bullets):
        raise MalformedOutputError("Gemini's outline bullets are not a list of non-empty strings")
    if len(bullets) != bullet_count:
        raise MalformedOutputError(
            f"Gemini's outline has {len(bullets)} bullets, expected {bullet_count}"
        )
    return Outline(title=title.strip(), bullets=tuple(b.strip() for b in bullets))
