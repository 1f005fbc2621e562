"""The Gemini provider, on Google's maintained `google-genai` SDK (3.x).

What the SDK leaves open, or would do on its own, is settled here on purpose:
- the API version (v1beta; the SDK defaults to v1) and the base URL are always passed,
  as is the key, so the SDK's environment variables (GOOGLE_GEMINI_BASE_URL,
  GOOGLE_API_KEY, GEMINI_API_KEY, GOOGLE_GENAI_API_VERSION, GOOGLE_GENAI_USE_VERTEXAI)
  can neither redirect us nor swap the key;
- a per-request timeout (the SDK sets none; httpx2 applies it to connect and to each
  read), and the same time as a deadline for text: a stream that sends no text for that
  long is given up (calls.text_deadline), however many empty chunks it sends;
- retries: the SDK's own are off (`HttpRetryOptions(attempts=1)`), and so are its
  automatic stream continuation and function calling, which would send requests past
  the `before_request` hook (the shared rate limit). We retry with the shared policy of
  generation/providers/calls.py, honouring Retry-After and RetryInfo (read in gemini_wire.py),
  and follow continuation tokens ourselves;
- one Client for the provider's lifetime: a temporary one closes its HTTP connection
  under you;
- a job's temperature and content rating on each of its generation requests
  (gemini_wire.sampling_controls): the rating's safety threshold, never laxer than
  GEMINI_SAFETY_THRESHOLD (gemini_config.rated_threshold).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

from google import genai
from google.genai import types

from generation import streams
from generation.errors import (
    GenerationError,
    MalformedOutputError,
    OutputLimitError,
    ProviderUnavailableError,
)
from generation.providers.calls import (
    Operation,
    RequestRunner,
    ask_twice,
    max_output_tokens,
    text_deadline,
    until_text,
)
from generation.providers.chat import ChatProvider, Sampling
from generation.providers.gemini_config import (
    GEMINI_EMBEDDING_MODEL,
    GEMINI_MODEL,
    GeminiConfig,
)
from generation.providers.gemini_wire import (
    ModelSlot,
    StreamHop,
    broken_stream,
    classify,
    finish_reason,
    generation_controls,
    refusal,
    response_schema,
    sampling_controls,
    supports,
    usage_of,
)
from generation.providers.structured import json_object, outline_from
from generation.story import prompts, schemas
from generation.story.guards import whole_sentences
from generation.types import ChapterRequest, Outline, ProviderHooks, Source

__all__ = ["DEFAULT_BASE_URL", "GeminiConfig", "GeminiProvider"]

#: Used when GeminiConfig.base_url is None, so GOOGLE_GEMINI_BASE_URL cannot win.
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"
#: check() is a probe (start-up, /ready): one attempt, answered quickly or not at all.
CHECK_TIMEOUT_SECONDS = 10.0
#: Output tokens allowed for thinking, by GEMINI_THINKING_LEVEL (None: the model's own
#: default, which may think hard): Gemini 3 counts thinking against max_output_tokens.
THINKING_ALLOWANCE = {None: 8192, "high": 8192, "medium": 4096, "low": 2048, "minimal": 512}
#: Words of outline per bullet (a sentence or two), title included in one more.
OUTLINE_WORDS_PER_BULLET = 40
#: A stream may be continued this many times (finish_reason CONTINUATION) at most.
MAX_CONTINUATIONS = 20
#: Texts per batchEmbedContents request (the API takes at most 100).
EMBEDDING_BATCH = 100

_DEFAULT_HOOKS = ProviderHooks()


class GeminiProvider(ChatProvider):
    """A `Provider` backed by the Gemini API; see the module docstring for its policies.

    Every public method reports exactly one CallRecord through `hooks.on_call` (a stream
    when it ends) and raises only GenerationError subclasses for provider failures.
    """

    name = "gemini"

    def __init__(self, config: GeminiConfig, hooks: ProviderHooks = _DEFAULT_HOOKS) -> None:
        self._config = config
        self._runner = RequestRunner(self.name, config.retry_policy, self._classify, hooks)
        # The variables are the service's names for these settings, so that an error
        # about a model tells the operator what to change.
        self._text = ModelSlot(config.model, "GEMINI_MODEL", "model", GEMINI_MODEL)
        self._embedding = ModelSlot(
            config.embedding_model,
            "GEMINI_EMBEDDING_MODEL",
            "embedding model",
            GEMINI_EMBEDDING_MODEL,
        )
        #: Who serves its outlines, sections and summaries.
        self.served_by = Source(self.name, config.model)
        self._controls = generation_controls(config.thinking_level, config.safety_threshold)
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

    # --- Provider -----------------------------------------------------------------

    def outline(self, request: ChapterRequest) -> Outline:
        """A non-empty title and exactly `bullet_count` non-empty bullets, as structured
        JSON. A malformed answer is asked for once more, then MalformedOutputError."""
        prompt = prompts.outline_prompt(request)
        count = request.preferences.bullet_count
        schema = schemas.outline_schema(count)
        limit = self._limit(OUTLINE_WORDS_PER_BULLET * (count + 1))
        sampling = Sampling.of(request)
        with self._runner.operation("outline", self._config.model) as op:
            return ask_twice(
                op,
                lambda: outline_from(
                    self._json(op, prompt, schema, limit, sampling, what="the outline"),
                    count,
                    "Gemini",
                ),
            )

    def structured(self, request: ChapterRequest, ask: schemas.JsonAsk) -> dict[str, Any]:
        """One JSON object of `ask`'s shape (checked by the caller), asked for as the
        outline is (responseSchema); a malformed answer is MalformedOutputError."""
        limit = self._limit(ask.words)
        with self._runner.operation(ask.kind, self._config.model, ask.attempts) as op:
            return self._json(
                op, ask.prompt, ask.schema, limit, Sampling.of(request), what=ask.what
            )

    def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
        """A short plain-text summary of the finished chapter; never empty."""
        prompt = prompts.summary_prompt(request, outline, text)
        limit = self._limit(prompts.SUMMARY_TARGET_WORDS)
        with self._runner.operation("summary", self._config.model) as op:
            config = self._content_config(prompt, Sampling.of(request), max_output_tokens=limit)
            response = self._generate(op, prompt, config)
            finish = finish_reason(response)
            summary = (response.text or "").strip()
            if finish == "MAX_TOKENS":  # cut at the limit: its whole sentences stand
                summary = whole_sentences(summary)
            if not summary or finish == "CONTINUATION":
                raise MalformedOutputError(
                    f"Gemini returned an unfinished summary (finish_reason={finish or 'none'})"
                )
            return summary

    def embed(self, text: str) -> list[float]:
        """A unit-length vector of exactly `embedding_dimensions` values (Google asks
        callers to normalise embeddings requested below the model's full size)."""
        return self.embed_many([text])[0]

    def embed_many(self, texts: Sequence[str]) -> list[list[float]]:
        """Embeddings of `texts` in order, as `embed` makes them, in one operation (one
        batchEmbedContents request per EMBEDDING_BATCH texts)."""
        if not texts:
            return []
        config = types.EmbedContentConfig(output_dimensionality=self._config.embedding_dimensions)
        with self._runner.operation("embedding", self._config.embedding_model) as op:
            vectors: list[list[float]] = []
            for start in range(0, len(texts), EMBEDDING_BATCH):
                batch = list(texts[start : start + EMBEDDING_BATCH])
                response = self._runner.send(
                    op,
                    lambda batch=batch: self._client.models.embed_content(
                        model=self._config.embedding_model, contents=batch, config=config
                    ),
                )
                embeddings = response.embeddings or []
                if len(embeddings) != len(batch):
                    raise MalformedOutputError(
                        f"Gemini returned {len(embeddings)} embeddings for {len(batch)} texts"
                    )
                vectors += [self._unit(e.values) for e in embeddings]
            return vectors

    def _unit(self, raw: Sequence[float] | None) -> list[float]:
        size = self._config.embedding_dimensions
        values = [float(v) for v in raw or []]
        if len(values) != size or not all(math.isfinite(v) for v in values):
            raise MalformedOutputError(
                f"Gemini returned {len(values)} usable embedding values, expected {size}"
            )
        norm = math.sqrt(sum(v * v for v in values))
        if norm == 0:
            raise MalformedOutputError("Gemini returned an all-zero embedding")
        return [v / norm for v in values]

    def check(self) -> None:
        """Prove the key and both models work, with one quick GET models/{model} each: a
        rejected key raises AuthenticationError; a model that does not exist, or does not
        support generateContent (the text model) or embedContent (the embedding model),
        ModelUnavailableError naming the model and the variable to change; an unreachable
        or failing server a RetryableError. One attempt each: callers decide whether to
        try again."""
        timeout = _millis(min(self._config.timeout_seconds, CHECK_TIMEOUT_SECONDS))
        config = types.GetModelConfig(http_options=types.HttpOptions(timeout=timeout))
        with self._runner.operation("check", self._config.model) as op:
            for slot, method in (
                (self._text, "generateContent"),
                (self._embedding, "embedContent"),
            ):
                get = functools.partial(self._client.models.get, model=slot.name, config=config)
                model = self._runner.send(op, get, tries=1, model=slot.name)
                if not supports(model, method):
                    raise slot.unavailable(f"does not support {method}")

    # --- requests -----------------------------------------------------------------

    def _content_config(
        self, prompt: prompts.Prompt, sampling: Sampling, **options: Any
    ) -> types.GenerateContentConfig:
        """A request's config: the operator's controls, then what the job asks
        (`sampling`: its temperature, its rating's safety settings), then `options`."""
        controls = {
            **self._controls,
            **sampling_controls(sampling, self._config.safety_threshold),
            **options,
        }
        return types.GenerateContentConfig(
            system_instruction=prompt.system,
            automatic_continuation=False,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            **controls,
        )

    def _json(
        self,
        op: Operation,
        prompt: prompts.Prompt,
        schema: Mapping[str, Any],
        limit: int,
        sampling: Sampling,
        *,
        what: str,
    ) -> dict[str, Any]:
        """One answer as the JSON object of `schema` (responseSchema): its object, or
        MalformedOutputError saying what is wrong with it (cut at the output limit, not
        JSON, not an object)."""
        config = self._content_config(
            prompt,
            sampling,
            response_mime_type="application/json",
            response_schema=response_schema(schema),
            max_output_tokens=limit,
        )
        response = self._generate(op, prompt, config)
        if finish_reason(response) == "MAX_TOKENS":
            raise MalformedOutputError(
                f"Gemini: {what} was cut at its output limit ({limit} tokens)"
            )
        return json_object(response.text, "Gemini", what)

    def _generate(
        self, op: Operation, prompt: prompts.Prompt, config: types.GenerateContentConfig
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

        return self._runner.send(op, request)

    def _limit(self, words: int) -> int:
        """The output limit of a request for about `words` words. On Gemini 3 the
        limit covers the model's thinking too, so the thinking level's allowance is
        added to the answer's own (calls.max_output_tokens)."""
        return max_output_tokens(words) + THINKING_ALLOWANCE[self._config.thinking_level]

    def _stream(self, prompt: prompts.Prompt, limit: int, sampling: Sampling) -> Iterator[str]:
        with self._runner.operation("prose", self._config.model) as op:
            hop, yielded = StreamHop(), False
            for _ in range(MAX_CONTINUATIONS + 1):
                config = self._content_config(
                    prompt, sampling, continuation_token=hop.token, max_output_tokens=limit
                )
                chunks = self._open_stream(op, prompt, config, retry=not yielded)
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
            if hop.finish == "MAX_TOKENS":
                raise OutputLimitError(f"Gemini stopped at its output limit ({limit} tokens)")
            if hop.finish in ("", "CONTINUATION"):
                raise ProviderUnavailableError(
                    "Gemini's stream ended before the model finished "
                    f"(finish_reason={hop.finish or 'none'})"
                )

    def _open_stream(
        self,
        op: Operation,
        prompt: prompts.Prompt,
        config: types.GenerateContentConfig,
        *,
        retry: bool,
    ) -> Generator[types.GenerateContentResponse, None, None]:
        """Start one streamed response (`config` says from which continuation token, if
        any) and read it up to its first text, retrying failures up to there when
        `retry` (nothing yielded yet)."""

        def request() -> tuple[Iterator[types.GenerateContentResponse], list[Any]]:
            stream = self._client.models.generate_content_stream(
                model=self._config.model, contents=prompt.user, config=config
            )
            # Read on a thread of its own, so no text for GEMINI_TIMEOUT_SECONDS ends it
            # here even while the connection stays alive (the thread ends with its read).
            chunks = text_deadline(stream, self._config.timeout_seconds, _has_text, label="Gemini")
            try:
                return chunks, until_text(chunks, _has_text)
            except BaseException:
                streams.close(chunks)
                raise

        chunks, head = self._runner.send(op, request, tries=None if retry else 1)
        return _rest_of_stream(chunks, head, self._text)

    def _classify(self, exc: Exception, attempts: int, model: str) -> GenerationError | None:
        slot = self._text if model == self._text.name else self._embedding
        return classify(exc, attempts, slot)


def _rest_of_stream(
    stream: Iterator[types.GenerateContentResponse], head: list[Any], model: ModelSlot
) -> Generator[types.GenerateContentResponse, None, None]:
    """`head` (the chunks already read), then the rest of `stream`; a failure mid-way
    becomes a GenerationError."""
    try:
        if not head:
            return
        yield from head
        while True:
            try:
                chunk = next(stream)
            except StopIteration:
                return
            except Exception as exc:
                raise broken_stream(exc, model) from exc
            yield chunk
    finally:
        streams.close(stream)


def _has_text(chunk: types.GenerateContentResponse) -> bool:
    """Whether a chunk carries text (an empty or usage-only chunk does not)."""
    for candidate in chunk.candidates or []:
        for part in getattr(candidate.content, "parts", None) or []:
            if part.text:
                return True
    return False


def _millis(seconds: float) -> int:
    """HttpOptions.timeout is in milliseconds."""
    return max(1, round(seconds * 1000))
