"""The OpenAI-compatible provider, on the official `openai` SDK (3.x): OpenAI itself,
OpenRouter, Ollama, vLLM, llama.cpp server, LM Studio, all through chat completions.

What the SDK would do on its own is settled here on purpose:
- the key and the base URL are always passed (the SDK's default endpoint when none is
  configured), so OPENAI_API_KEY / OPENAI_BASE_URL in the environment cannot swap them;
- retries: the SDK's own are off (`max_retries=0`, its default is 2), so ours, under
  the shared policy of generation/providers/calls.py and honouring Retry-After, are the only
  ones, and `before_request` (the rate limit) sees every request;
- one timeout for connect, write and each read (`timeout=` seconds; the SDK's default
  is 600 s); a stream must also send text within that time (keep-alives renew the
  socket's timeout but not this deadline, calls.text_deadline), or it is cut;
- an output limit on every request (calls.max_output_tokens), the job's temperature if set;
- answers in JSON (the outline, the chapter memory) as structured output
  (`response_format` json_schema). A server that refuses that form (a 4xx, or a 5xx
  naming response_format) is asked with the next of openai_json.JSON_FORMS (JSON mode
  with the schema, which llama.cpp enforces; then plain JSON mode with the schema in
  the prompt), the answer parsed and checked; the form that worked is kept for this
  provider (one server, one model);
- sections streamed (`stream=True`, `stream_options={"include_usage": True}`: the last
  chunk carries the usage, with no choices). A server that reports no usage gets it
  estimated, marked so; an empty stream is asked once without streaming, which either
  answers or says why;
- embeddings many texts to a request, as base64 (openai_embed.py); check() asks for
  one and insists on one flat vector of the configured size.
One client lives as long as the provider.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

import openai

from generation.errors import (
    GenerationError,
    MalformedOutputError,
    OutputLimitError,
    ProviderUnavailableError,
)
from generation.providers.calls import (
    Operation,
    RequestRunner,
    Usage,
    ask_twice,
    max_output_tokens,
    text_deadline,
    until_text,
)
from generation.providers.chat import ChatProvider, Sampling
from generation.providers.openai_config import OpenAIConfig
from generation.providers.openai_embed import Embeddings
from generation.providers.openai_json import JSON_FORMS, in_forms
from generation.providers.openai_wire import (
    ModelSlot,
    Wire,
    classify,
    connection_cutter,
    estimated_usage,
    has_text,
    output_limit,
    refusal,
    rest_of_stream,
    schema_rejected,
    usage_of,
)
from generation.providers.structured import json_object, outline_from
from generation.story import prompts, schemas
from generation.types import ChapterRequest, Outline, ProviderHooks, Source

__all__ = ["OpenAIConfig", "OpenAIProvider"]

#: check() is a probe (start-up, /ready): one attempt, answered quickly or not at all.
CHECK_TIMEOUT_SECONDS = 10.0
#: Words an outline is asked for: a few for the title, one or two sentences a bullet.
OUTLINE_TITLE_WORDS = 20
OUTLINE_WORDS_PER_BULLET = 40

_DEFAULT_HOOKS = ProviderHooks()


class OpenAIProvider(ChatProvider):
    """A `Provider` on an OpenAI-compatible chat-completions API; see the module
    docstring for its policies. Every public method reports exactly one CallRecord
    through `hooks.on_call` (a stream when it ends) and raises only GenerationError
    subclasses for provider failures."""

    name = "openai"

    def __init__(self, config: OpenAIConfig, hooks: ProviderHooks = _DEFAULT_HOOKS) -> None:
        self._config = config
        self._wire = Wire(config.label, config.api_key)
        self._runner = RequestRunner(self.name, config.retry_policy, self._classify, hooks)
        self._text = ModelSlot(config.model, "OPENAI_MODEL", "model")
        self._embedding = (
            ModelSlot(config.embedding_model, "OPENAI_EMBEDDING_MODEL", "embedding model")
            if config.embedding_model
            else None
        )
        #: How answers in JSON are asked for (one of JSON_FORMS): the first this
        #: server took; it moves on only when the server refuses the form.
        self.json_form = JSON_FORMS[0]
        #: Who served the last outline, section or summary (always this provider's model).
        self.served_by = Source(self.name, config.model)
        self._client = openai.OpenAI(
            api_key=config.api_key,
            base_url=config.endpoint,
            timeout=config.timeout_seconds,
            max_retries=0,
        )
        self._embeddings = Embeddings(
            self._client, self._runner, self._embedding, config.label, config.embedding_dimensions
        )

    def __repr__(self) -> str:
        return f"OpenAIProvider({self._config!r})"

    @property
    def json_schema(self) -> bool:
        """Whether JSON answers are still asked for as json_schema structured output."""
        return self.json_form == JSON_FORMS[0]

    @property
    def embedding_model(self) -> str:
        return self._config.embedding_model or ""

    @property
    def embedding_size(self) -> int | None:
        """The size every embedding must have: configured, else the one seen at boot."""
        return self._embeddings.size

    # --- Provider -----------------------------------------------------------------

    def outline(self, request: ChapterRequest) -> Outline:
        """A non-empty title and exactly `bullet_count` non-empty bullets, as structured
        output (or JSON mode, see the module docstring). A malformed answer is asked for
        once more, then MalformedOutputError."""
        prompt = prompts.outline_prompt(request)
        count = request.preferences.bullet_count
        limit = max_output_tokens(OUTLINE_TITLE_WORDS + OUTLINE_WORDS_PER_BULLET * count)
        ask = (schemas.OUTLINE, schemas.outline_schema(count), prompt)
        with self._runner.operation("outline", self._config.model) as op:
            return ask_twice(
                op,
                lambda: outline_from(
                    self._json(op, ask, limit, Sampling.of(request), "the outline"),
                    count,
                    self._label,
                ),
            )

    def structured(self, request: ChapterRequest, ask: schemas.JsonAsk) -> dict[str, Any]:
        """One JSON object of `ask`'s shape (checked by the caller), asked for as the
        outline is; a malformed answer is MalformedOutputError, not asked again."""
        limit = max_output_tokens(ask.words)
        with self._runner.operation(ask.kind, self._config.model, ask.attempts) as op:
            return self._json(
                op, (ask.name, ask.schema, ask.prompt), limit, Sampling.of(request), ask.what
            )

    def summarize(self, request: ChapterRequest, outline: Outline, text: str) -> str:
        """A short plain-text summary of the finished chapter; never empty."""
        prompt = prompts.summary_prompt(request, outline, text)
        limit = max_output_tokens(prompts.SUMMARY_TARGET_WORDS)
        with self._runner.operation("summary", self._config.model) as op:
            summary = self._complete(op, prompt, limit, Sampling.of(request)).strip()
            if not summary:
                raise MalformedOutputError(f"{self._label} returned an empty summary")
            return summary

    def embed(self, text: str) -> list[float]:
        """A unit-length embedding of `text` by OPENAI_EMBEDDING_MODEL, of whatever size
        that model makes; [] without a request when no embedding model is configured."""
        vectors = self._embeddings.many([text])
        return vectors[0] if vectors else []

    def embed_many(self, texts: Sequence[str]) -> list[list[float]]:
        """Embeddings of `texts` in order, as `embed` makes them, in one operation (a
        request per openai_embed.EMBEDDING_BATCH texts); [] without an embedding model."""
        return self._embeddings.many(texts)

    def check(self) -> None:
        """Prove the key and the models work: GET /models/{model} for each, or the model
        list where a server has no such endpoint. A rejected key raises
        AuthenticationError; a model the server does not serve, ModelUnavailableError
        naming the variable to change; an unreachable server, a RetryableError. One
        attempt each: callers decide whether to try again."""
        with self._runner.operation("check", self._config.model) as op:
            for slot in (self._text, self._embedding):
                if slot is not None:
                    self._check_model(op, slot)
            self._embeddings.check(op, min(self._config.timeout_seconds, CHECK_TIMEOUT_SECONDS))

    # --- requests -----------------------------------------------------------------

    @property
    def _label(self) -> str:
        return self._config.label

    def _messages(self, prompt: prompts.Prompt) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ]

    def _json(
        self,
        op: Operation,
        ask: tuple[str, Mapping[str, Any], prompts.Prompt],
        limit: int,
        sampling: Sampling,
        what: str,
    ) -> dict[str, Any]:
        """The JSON object answering `ask` (name, schema, prompt), in the form this
        server takes (openai_json.in_forms), which is kept for the next answers."""

        def complete(prompt: prompts.Prompt, response_format: Any) -> str:
            return self._complete(op, prompt, limit, sampling, response_format)

        text, self.json_form = in_forms(op, complete, ask, self.json_form, what)
        return json_object(text, self._label, what)

    def _options(self, limit: int, sampling: Sampling) -> dict[str, Any]:
        """A generation request's output limit, and the job's temperature when set (a
        reasoning model that takes only its default answers 400: a permanent failure)."""
        options: dict[str, Any] = output_limit(limit, self._config.is_openai)
        if sampling.temperature is not None:
            options["temperature"] = sampling.temperature
        return options

    def _complete(
        self,
        op: Operation,
        prompt: prompts.Prompt,
        limit: int,
        sampling: Sampling,
        response_format: Any = None,
    ) -> str:
        """One non-streamed completion of at most `limit` tokens under the retry policy:
        its text. A refusal is RefusedError; no choice at all, MalformedOutputError."""
        options = self._options(limit, sampling)
        if response_format is not None:
            options["response_format"] = response_format

        def request() -> Any:
            completion = self._client.chat.completions.create(
                model=self._config.model, messages=self._messages(prompt), **options
            )
            choice = (completion.choices or [None])[0]
            text = (getattr(choice, "message", None) and choice.message.content) or ""
            # A refused answer is billed too; a server that says nothing gets an estimate.
            op.add_usage(
                usage_of(completion.usage) if completion.usage else estimated_usage(prompt, text)
            )
            if choice is not None and (refused := refusal(choice, self._label)) is not None:
                raise refused
            return choice

        choice = self._runner.send(op, request)
        if choice is None:
            raise MalformedOutputError(f"{self._label} returned no choices")
        return choice.message.content or ""

    def _stream(self, prompt: prompts.Prompt, limit: int, sampling: Sampling) -> Iterator[str]:
        with self._runner.operation("prose", self._config.model) as op:
            chunks, head = self._open_stream(op, prompt, limit, sampling)
            if not head:  # nothing at all: ask without streaming, to answer or say why
                chunks.close()
                op.retries += 1
                yield self._complete(op, prompt, limit, sampling)
                return
            finish: str | None = None
            usage: Usage | None = None
            pieces: list[str] = []
            try:
                for chunk in rest_of_stream(chunks, head, self._wire):
                    if chunk.usage is not None:
                        usage = usage_of(chunk.usage)
                    for choice in chunk.choices or []:
                        if (refused := refusal(choice, self._label)) is not None:
                            raise refused
                        finish = choice.finish_reason or finish
                        if text := getattr(choice.delta, "content", None):
                            pieces.append(text)
                            yield text
            finally:
                chunks.close()
                op.add_usage(usage or estimated_usage(prompt, "".join(pieces), len(pieces)))
            if finish is None:
                raise ProviderUnavailableError(
                    f"{self._label}: the stream ended before the model finished "
                    f"(no finish_reason after {len(pieces)} pieces of text, and no error)"
                )
            if finish == "length":
                raise OutputLimitError(
                    f"{self._label} stopped at its output limit ({limit} tokens)"
                )

    def _open_stream(
        self, op: Operation, prompt: prompts.Prompt, limit: int, sampling: Sampling
    ) -> tuple[Generator[Any, None, None], list[Any]]:
        """Start one streamed completion and read it up to its first text, retrying
        failures up to there (nothing has been yielded yet); the chunks come within the
        text deadline (OPENAI_TIMEOUT_SECONDS without text cuts the stream)."""

        def request() -> tuple[Generator[Any, None, None], list[Any]]:
            stream = self._client.chat.completions.create(
                model=self._config.model,
                messages=self._messages(prompt),
                stream=True,
                stream_options={"include_usage": True},
                **self._options(limit, sampling),
            )
            chunks = text_deadline(
                stream,
                self._config.timeout_seconds,
                has_text,
                label=self._label,
                cut=connection_cutter(stream),
            )
            try:
                return chunks, until_text(chunks, has_text)
            except BaseException:
                chunks.close()
                raise

        return self._runner.send(op, request)

    def _check_model(self, op: Operation, slot: ModelSlot) -> None:
        timeout = min(self._config.timeout_seconds, CHECK_TIMEOUT_SECONDS)
        models = self._client.models
        try:
            self._runner.send(
                op, lambda: models.retrieve(slot.name, timeout=timeout), tries=1, model=slot.name
            )
            return
        except GenerationError as exc:
            # A 404 that does not say the model is missing: this server may simply have
            # no GET /models/{id} (or model ids with slashes, as OpenRouter's): ask the list.
            if not schema_rejected(exc):
                raise
        try:
            page = self._runner.send(op, lambda: models.list(timeout=timeout), tries=1)
        except GenerationError as exc:
            if schema_rejected(exc):
                return  # no model list either: the first real request will tell
            raise
        served = {model.id for model in page.data or []}
        if served and not {slot.name, f"{slot.name}:latest"} & served:
            raise slot.unavailable(self._label, "not in the server's model list")

    def _classify(self, exc: Exception, attempts: int, model: str) -> GenerationError | None:
        slot = self._embedding if self._embedding and model == self._embedding.name else None
        return classify(exc, self._wire, attempts, slot or self._text)
