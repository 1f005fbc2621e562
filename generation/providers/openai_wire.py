"""What crosses the wire between storyworker and an OpenAI-compatible server, in the
`openai` SDK's types: its exceptions read as storyworker's, refusals, token usage, and
embeddings in either encoding (the JSON answers' forms are in openai_json.py).

Failures reach us in three shapes (openai 3.x, checked against its source):
- HTTP error statuses as `openai.APIStatusError` subclasses (`status_code`, `code` and
  `message` from the body's "error" object, the HTTP `response` with its headers);
- transport failures as `openai.APITimeoutError` / `openai.APIConnectionError`, also
  when a stream breaks off mid-way (the SDK wraps its HTTP client's exceptions);
- an error event inside a stream as a bare `openai.APIError` (no status).
Refusals arrive as HTTP 200: `message.refusal`, a `refusal` delta, or finish_reason
`content_filter`. Messages quote only the status and the server's own error message,
with the API key taken out: never prompt or story text.

A server error whose message names `response_format` is the request's fault, not the
server's (llama-cpp-python answers a response format it does not know with a 500): it
reads as InvalidRequestError, so it is neither retried nor blamed on the provider.
"""

from __future__ import annotations

import base64
import contextlib
import math
import re
import socket
import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import openai

from generation.errors import (
    AuthenticationError,
    GenerationError,
    InvalidRequestError,
    MalformedOutputError,
    ModelUnavailableError,
    ProviderUnavailableError,
    QuotaExhaustedError,
    RateLimitedError,
    RefusedError,
)
from generation.providers.calls import Usage, estimate_tokens, parse_retry_after
from generation.story.prompts import Prompt

#: Longest piece of the server's error message quoted in ours.
DETAIL_LIMIT = 200
#: Error codes (the body's error.code) that mean the content was filtered: a refusal.
REFUSAL_CODES = frozenset({"content_filter", "content_policy_violation"})
#: 429 codes that mean the account will not be served until billing or quota changes.
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
#: Words in a 404's message that say the model is what is missing (Ollama, vLLM and
#: others answer a missing model with a 404 but without OpenAI's model_not_found code).
_MODEL_MISSING = re.compile(r"\bmodel\b.*\b(?:not found|does not exist|not exist)", re.I)
#: Masked keys servers echo back ("Incorrect API key provided: sk-abc***xyz").
_MASKED_KEY = re.compile(r"\b[\w-]*\*{3,}[\w-]*")


@dataclass(frozen=True)
class ModelSlot:
    """A configured model and the setting that names it, for messages that say what to
    change (`variable`, e.g. OPENAI_MODEL)."""

    name: str
    variable: str
    kind: str  # "model" | "embedding model"

    def unavailable(self, label: str, why: str) -> ModelUnavailableError:
        """The error for this model being unusable, telling the operator what to set."""
        return ModelUnavailableError(
            f"{label} has no {self.kind} {self.name} ({why}); "
            f"set {self.variable} to a model that server serves"
        )


@dataclass(frozen=True)
class Wire:
    """What classification needs to know of the provider: who it is (for messages) and
    the key (to keep it out of them)."""

    label: str
    secret: str

    def clean(self, text: Any) -> str:
        """`text` on one line, the key and masked keys taken out, cut to DETAIL_LIMIT."""
        line = " ".join(str(text).split())
        if self.secret:
            line = line.replace(self.secret, "***")
        return _MASKED_KEY.sub("***", line)[:DETAIL_LIMIT]


def classify(
    exc: BaseException, wire: Wire, attempts: int = 1, model: ModelSlot | None = None
) -> GenerationError | None:
    """The storyworker error for an SDK exception, or None if it is not a provider
    failure at all (a bug), which the caller lets propagate with its traceback."""
    after = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(exc, GenerationError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderUnavailableError(f"{wire.label} did not answer in time{after}")
    if isinstance(exc, openai.APIConnectionError):
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection error"
        return ProviderUnavailableError(f"{wire.label} was unreachable{after} ({cause})")
    if isinstance(exc, openai.APIStatusError):
        return _from_status(exc, wire, after, model)
    if isinstance(exc, openai.APIError):  # an error event inside a stream: no status
        return ProviderUnavailableError(
            f"{wire.label} reported an error mid-stream: {wire.clean(exc.message)}"
        )
    if isinstance(exc, (ConnectionError, TimeoutError)):
        name = type(exc).__name__
        return ProviderUnavailableError(f"{wire.label} was unreachable{after} ({name})")
    return None


def _from_status(
    exc: openai.APIStatusError, wire: Wire, after: str, model: ModelSlot | None
) -> GenerationError:
    code, detail = exc.status_code, wire.clean(_message(exc))
    what = f"HTTP {code}" + (f" {exc.code}" if exc.code else "")
    retry_after = retry_after_seconds(exc)
    if code == 429 and exc.code in QUOTA_CODES:
        return QuotaExhaustedError(
            f"{wire.label} will not serve this account until its quota or billing changes "
            f"({what}): {detail}",
            retry_after=retry_after,
        )
    if code == 429:
        return RateLimitedError(
            f"{wire.label} rate limited us ({what}){after}: {detail}", retry_after=retry_after
        )
    if code >= 500 and "response_format" in _message(exc):
        return InvalidRequestError(f"{wire.label} rejected the request ({what}): {detail}")
    if code == 408 or code >= 500:
        return ProviderUnavailableError(
            f"{wire.label} returned {what}{after}: {detail}", retry_after=retry_after
        )
    if code in (401, 403):
        return AuthenticationError(f"{wire.label} rejected the API key ({what}): {detail}")
    if exc.code in REFUSAL_CODES:
        return RefusedError(f"{wire.label}: the model refused to write this content ({what})")
    if (
        code == 404
        and model is not None
        and (exc.code == "model_not_found" or _MODEL_MISSING.search(detail))
    ):
        return model.unavailable(wire.label, what)
    return InvalidRequestError(f"{wire.label} rejected the request ({what}): {detail}")


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message


def retry_after_seconds(exc: openai.APIStatusError) -> float | None:
    """The wait the server asked for: `retry-after-ms` (OpenAI's own), else the standard
    Retry-After header (seconds or an HTTP date); None if it did not say."""
    headers = exc.response.headers
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    header = headers.get("retry-after")
    return parse_retry_after(header) if header is not None else None


def schema_rejected(error: GenerationError) -> bool:
    """Whether the server turned the request down as such (a 4xx other than a refusal,
    or a 5xx that names response_format): for a JSON answer, the server does not take that
    response format, and the next form is worth one try."""
    return isinstance(error, InvalidRequestError)


def refusal(choice: Any, label: str) -> RefusedError | None:
    """A RefusedError when a completion choice (or a stream chunk's choice) refuses: a
    `refusal` on its message or delta, or finish_reason content_filter."""
    said = getattr(choice, "message", None) or getattr(choice, "delta", None)
    if getattr(said, "refusal", None):
        return RefusedError(f"{label}: the model refused to write this content (refusal)")
    if getattr(choice, "finish_reason", None) == "content_filter":
        return RefusedError(
            f"{label}: the model refused to write this content (finish_reason=content_filter)"
        )
    return None


def usage_of(usage: Any) -> Usage:
    """Tokens a completion was billed for. completion_tokens includes reasoning tokens,
    which are billed as output; `thinking_tokens` says how many there were. Usage()
    when the server reported none (see `estimated_usage`)."""
    if usage is None:
        return Usage()
    details = getattr(usage, "completion_tokens_details", None)
    thinking = getattr(details, "reasoning_tokens", None) or 0
    return Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0, thinking)


def estimated_usage(prompt: Prompt, text: str, chunks: int = 0) -> Usage:
    """Our estimate of a completion's tokens when the server reported none: from the
    prompt's and the answer's lengths, and at least one output token per streamed text
    chunk (llama.cpp and Ollama send one token a chunk); marked as an estimate."""
    input_tokens = estimate_tokens(prompt.system) + estimate_tokens(prompt.user)
    return Usage(input_tokens, max(chunks, estimate_tokens(text)), estimated=True)


def output_limit(tokens: int, is_openai: bool) -> dict[str, int]:
    """The request option that limits the answer to `tokens`: OpenAI's own API wants
    `max_completion_tokens` (its reasoning models refuse `max_tokens`); every other
    server reads `max_tokens` (llama.cpp's, Ollama's, vLLM's, OpenRouter's)."""
    return {"max_completion_tokens" if is_openai else "max_tokens": tokens}


def embedding_values(raw: Any, label: str) -> list[float]:
    """One embedding as floats, unit length: a JSON list of numbers (encoding_format
    float, or a server that ignores the format) or base64 of little-endian float32
    (encoding_format base64); else MalformedOutputError."""
    if isinstance(raw, str):
        try:
            packed = base64.b64decode(raw, validate=True)
        except ValueError:
            raise MalformedOutputError(f"{label} returned an embedding not in base64") from None
        if len(packed) % 4:
            raise MalformedOutputError(f"{label} returned a truncated base64 embedding")
        values = list(struct.unpack(f"<{len(packed) // 4}f", packed))
    elif isinstance(raw, list) and all(isinstance(v, (int, float)) for v in raw):
        values = [float(v) for v in raw]
    else:
        raise MalformedOutputError(f"{label} returned no usable embedding")
    if not values or not all(math.isfinite(v) for v in values):
        raise MalformedOutputError(f"{label} returned an empty or non-finite embedding")
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0:
        raise MalformedOutputError(f"{label} returned an all-zero embedding")
    return [v / norm for v in values]


def has_text(chunk: Any) -> bool:
    """Whether a stream chunk carries text (or a refusal): what keeps a stream's
    deadline from running out. A role-only, empty or usage-only chunk does not."""
    for choice in getattr(chunk, "choices", None) or []:
        delta = getattr(choice, "delta", None)
        if getattr(delta, "content", None) or getattr(delta, "refusal", None):
            return True
    return False


def connection_cutter(stream: Any) -> Callable[[], None]:
    """A function that breaks the HTTP connection under an SDK `stream` at once (both
    ways, so a read blocked on it returns and the server sees the client go); a no-op
    when the connection cannot be reached."""

    def cut() -> None:
        extensions = getattr(getattr(stream, "response", None), "extensions", None) or {}
        network = extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    return cut


def embedding_shape_error(raw: Any, slot: ModelSlot, label: str, size: int | None) -> str | None:
    """Why the embedding `raw` (one input's, as the server sent it) is not one flat
    vector of `size` values (any size when None); None when it is."""
    if isinstance(raw, list) and raw and all(isinstance(v, list) for v in raw):
        return (
            f"{label}: the embedding model {slot.name} answered one vector per token "
            f"({len(raw)} vectors), not one pooled vector; set {slot.variable} to an "
            "embedding model (one with pooling)"
        )
    try:
        values = embedding_values(raw, label)
    except MalformedOutputError as exc:
        return f"{exc}; set {slot.variable} to an embedding model"
    if size is not None and len(values) != size:
        return (
            f"{label}: the embedding model {slot.name} makes vectors of {len(values)} "
            f"values, not {size} (OPENAI_EMBEDDING_DIMENSIONS); set {slot.variable} "
            "to a model of that size, or the size to the model's"
        )
    return None


def rest_of_stream(chunks: Any, head: list[Any], wire: Wire) -> Generator[Any, None, None]:
    """`head` (the chunks already read), then the rest of `chunks`; a failure mid-way
    becomes a GenerationError (a transport failure there means the stream was cut:
    retryable)."""
    if not head:
        return
    yield from head
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except Exception as exc:
            error = classify(exc, wire)
            if error is None:
                raise
            if isinstance(exc, openai.APIConnectionError):
                error = ProviderUnavailableError(f"{wire.label}: the stream broke off mid-way")
            raise error from exc
        yield chunk
