"""What crosses the wire between storyworker and Gemini, in the google-genai SDK's types:
the errors it raises read as storyworker's, refusals, token usage, the outline's JSON
schema and answer, and stream chunks.

Three kinds of failure reach us, each in its own shape:
- HTTP error statuses arrive as `google.genai.errors.APIError` (with `.code`, `.status`,
  `.message`, `.details` and the HTTP `.response`);
- transport failures (refused or dropped connections, timeouts, a stream cut mid-way)
  arrive as the SDK's HTTP client's own exceptions: httpx2 by default in google-genai
  3.x, httpx when that is the one installed, so both are recognised;
- refusals arrive as HTTP 200 with no text: `prompt_feedback.block_reason`, or a
  candidate whose `finish_reason` says why it stopped.
Messages are short and built only from the HTTP status and Google's own error message:
never the API key, never prompt or story text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.genai import errors as genai_errors
from google.genai import types

from generation.errors import (
    AuthenticationError,
    GenerationError,
    InvalidRequestError,
    ModelUnavailableError,
    ProviderUnavailableError,
    QuotaExhaustedError,
    RateLimitedError,
    RefusedError,
)
from generation.providers.calls import Usage, parse_retry_after
from generation.providers.chat import Sampling
from generation.providers.gemini_config import rated_threshold

#: Candidate finish reasons that mean the model would not write this content.
REFUSAL_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "LANGUAGE",
        "MODEL_ARMOR",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
#: The harm categories the Gemini API (not Vertex AI) lets callers adjust, as its
#: safety-settings guide lists them. Left out on purpose: CIVIC_INTEGRITY (deprecated in
#: the SDK: "Election filter is no longer supported"), JAILBREAK (not among the Gemini
#: API's adjustable filters) and the IMAGE_* ones ("not supported in Gemini API").
ADJUSTABLE_HARM_CATEGORIES = (
    types.HarmCategory.HARM_CATEGORY_HARASSMENT,
    types.HarmCategory.HARM_CATEGORY_HATE_SPEECH,
    types.HarmCategory.HARM_CATEGORY_SEXUALLY_EXPLICIT,
    types.HarmCategory.HARM_CATEGORY_DANGEROUS_CONTENT,
)
#: Longest piece of Google's error message quoted in ours.
DETAIL_LIMIT = 200
_RETRY_DELAY = re.compile(r"\s*(\d+(?:\.\d+)?)s\s*")
_BILLING = re.compile(r"\bbilling\b.*\b(?:enable|disabled)|\benable billing\b", re.IGNORECASE)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP clients' transport failures: connect, read, write, timeouts, protocol."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        # DecodingError: a body whose compression broke off is a transport failure too.
        found.extend((module.TransportError, module.DecodingError))
    return tuple(found)


TRANSPORT_ERRORS = _transport_errors()


@dataclass(frozen=True)
class ModelSlot:
    """A configured model and the setting that names it, for messages that say what to
    change: `variable` (GEMINI_MODEL), what kind of model it is, a current one to use."""

    name: str
    variable: str
    kind: str
    suggestion: str

    def unavailable(self, why: str) -> ModelUnavailableError:
        """The error for this model being unusable, telling the operator what to set."""
        current = f"a current {self.kind}"
        if self.suggestion != self.name:
            current += f" such as {self.suggestion}"
        return ModelUnavailableError(
            f"Gemini {self.kind} {self.name} {why}; set {self.variable} to {current}"
        )


def classify(
    exc: BaseException, attempts: int = 1, model: ModelSlot | None = None
) -> GenerationError | None:
    """The storyworker error for an SDK or transport exception, or None if it is neither.

    `attempts` is how many HTTP attempts the operation made, and `model` what the request
    was for, both for the message. Unknown exceptions (bugs, SDK misuse) are not
    disguised as provider failures: the caller lets them propagate with their traceback.
    """
    after = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(exc, GenerationError):
        return exc
    if isinstance(exc, genai_errors.APIError):
        return _from_status(exc, after, model)
    if isinstance(exc, TRANSPORT_ERRORS):
        what = "did not answer in time" if "Timeout" in type(exc).__name__ else "was unreachable"
        return ProviderUnavailableError(f"Gemini {what}{after} ({type(exc).__name__})")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return ProviderUnavailableError(f"Gemini was unreachable{after} ({type(exc).__name__})")
    return None


def broken_stream(exc: Exception, model: ModelSlot | None = None) -> Exception:
    """The error for a stream that failed after it started: an error event keeps its
    status; a transport failure means the stream was cut (retryable)."""
    error = classify(exc, model=model)
    if error is None or isinstance(exc, (GenerationError, genai_errors.APIError)):
        return error or exc
    return ProviderUnavailableError(f"Gemini's stream broke off mid-way ({type(exc).__name__})")


def _from_status(
    exc: genai_errors.APIError, after: str, model: ModelSlot | None
) -> GenerationError:
    code = exc.code
    detail = _clean(exc.message or exc.status or "no message")
    if code == 429:
        return _rate_limited(exc, after, detail)
    if code == 408 or (isinstance(code, int) and code >= 500):
        return ProviderUnavailableError(
            f"Gemini returned HTTP {code}{after}: {detail}", retry_after=retry_after_seconds(exc)
        )
    if code == 404:
        # Every model call names its model: a 404 means the model is gone (retired while
        # we ran) or never existed, and every other job would get the same answer.
        status = f"HTTP 404 {exc.status or 'NOT_FOUND'}"
        if model is None:
            return ModelUnavailableError(f"Gemini has no such model ({status}): {detail}")
        return model.unavailable(f"is not available ({status})")
    if is_billing_disabled(exc):
        return QuotaExhaustedError(
            f"Gemini will not serve this key's project until billing is enabled "
            f"(HTTP {code}): {detail}"
        )
    if is_bad_key(exc):
        return AuthenticationError(f"Gemini rejected the API key (HTTP {code}): {detail}")
    return InvalidRequestError(f"Gemini rejected the request (HTTP {code}): {detail}")


def _rate_limited(exc: genai_errors.APIError, after: str, detail: str) -> GenerationError:
    """A 429: a spent daily quota is provider-wide; a per-minute limit passes soon."""
    retry_after = retry_after_seconds(exc)
    daily = [quota for quota in quota_ids(exc) if "PerDay" in quota]
    if daily:
        return QuotaExhaustedError(
            f"Gemini's daily quota is spent (HTTP 429, {daily[0]}){after}: {detail}",
            retry_after=retry_after,
        )
    return RateLimitedError(
        f"Gemini rate limited us (HTTP 429){after}: {detail}", retry_after=retry_after
    )


def quota_ids(exc: genai_errors.APIError) -> list[str]:
    """The `quotaId`s of a `google.rpc.QuotaFailure` detail's violations, e.g.
    "GenerateRequestsPerDayPerProjectPerModel-FreeTier"; [] when there is none."""
    found: list[str] = []
    for detail in _details(exc):
        kind = str(detail.get("@type", "")) if isinstance(detail, dict) else ""
        if not kind.endswith("QuotaFailure"):
            continue
        for violation in detail.get("violations") or []:
            if isinstance(violation, dict) and violation.get("quotaId"):
                found.append(str(violation["quotaId"]))
    return found


def is_billing_disabled(exc: genai_errors.APIError) -> bool:
    """A 400/403 saying the project's billing is disabled (ErrorInfo reason
    BILLING_DISABLED, or a message asking to enable billing)."""
    if exc.code not in (400, 403):
        return False
    reasons = {d.get("reason") for d in _details(exc) if isinstance(d, dict)}
    return "BILLING_DISABLED" in reasons or _BILLING.search(str(exc.message or "")) is not None


def is_bad_key(exc: genai_errors.APIError) -> bool:
    """401/403, or the 400 with reason API_KEY_INVALID that Google sends for a bad key."""
    if exc.code in (401, 403):
        return True
    if exc.code != 400:
        return False
    reasons = {d.get("reason") for d in _details(exc) if isinstance(d, dict)}
    return "API_KEY_INVALID" in reasons or "API key not valid" in str(exc.message or "")


def retry_after_seconds(exc: genai_errors.APIError) -> float | None:
    """The wait the server asked for: the Retry-After header (seconds or an HTTP date),
    else a `google.rpc.RetryInfo` detail's `retryDelay` ("7s"); None if it did not say."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    header = headers.get("retry-after") if hasattr(headers, "get") else None
    if isinstance(header, str) and (seconds := parse_retry_after(header)) is not None:
        return seconds
    for detail in _details(exc):
        if not isinstance(detail, dict) or not str(detail.get("@type", "")).endswith("RetryInfo"):
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and (match := _RETRY_DELAY.fullmatch(delay)):
            return float(match.group(1))
    return None


def _details(exc: genai_errors.APIError) -> list[Any]:
    body = exc.details
    error = body.get("error", body) if isinstance(body, dict) else {}
    details = error.get("details") if isinstance(error, dict) else None
    return details if isinstance(details, list) else []


def _clean(text: Any) -> str:
    return " ".join(str(text).split())[:DETAIL_LIMIT]


def refusal(response: Any) -> RefusedError | None:
    """A RefusedError when a (HTTP 200) response or stream chunk says the model would not
    write: a blocked prompt, or a candidate stopped for safety, recitation and the like."""
    feedback = getattr(response, "prompt_feedback", None)
    reason = getattr(feedback, "block_reason", None)
    if reason is not None:
        return RefusedError(f"Gemini refused the prompt (block_reason={enum_name(reason)})")
    for candidate in getattr(response, "candidates", None) or []:
        finish = enum_name(getattr(candidate, "finish_reason", None))
        if finish in REFUSAL_FINISH_REASONS:
            return RefusedError(f"Gemini refused to write this content (finish_reason={finish})")
    return None


def enum_name(value: Any) -> str:
    """An SDK enum (or the plain string the SDK keeps for values it does not know) as text."""
    return str(getattr(value, "value", value) or "")


def usage_of(response: Any) -> Usage:
    """The tokens a response was billed for. Output includes thinking tokens, which are
    billed as output; `thinking_tokens` says how many of them there were."""
    usage = getattr(response, "usage_metadata", None)
    if usage is None:
        return Usage()
    thinking = usage.thoughts_token_count or 0
    output = (usage.candidates_token_count or 0) + thinking
    return Usage(usage.prompt_token_count or 0, output, thinking)


def finish_reason(response: types.GenerateContentResponse) -> str:
    """The first candidate's finish reason as text; "" when there is none."""
    candidates = response.candidates or []
    return enum_name(candidates[0].finish_reason) if candidates else ""


def generation_controls(thinking_level: str | None, safety_threshold: str | None) -> dict[str, Any]:
    """GenerateContentConfig options for Gemini 3's controls: `thinking_config` with a
    thinking level (never a thinking budget, which Gemini 3.5 and later reject) and
    `safety_settings` with one threshold for every adjustable harm category. A control
    left at None is left out, so the model's or the API's default applies."""
    options: dict[str, Any] = {}
    if thinking_level is not None:
        level = types.ThinkingLevel(thinking_level.upper())
        options["thinking_config"] = types.ThinkingConfig(thinking_level=level)
    if safety_threshold is not None:
        options["safety_settings"] = safety_settings(safety_threshold)
    return options


def safety_settings(threshold: str) -> list[types.SafetySetting]:
    """One SafetySetting at `threshold` for every adjustable harm category."""
    level = types.HarmBlockThreshold(threshold)
    return [
        types.SafetySetting(category=category, threshold=level)
        for category in ADJUSTABLE_HARM_CATEGORIES
    ]


def sampling_controls(sampling: Sampling, operator_threshold: str | None) -> dict[str, Any]:
    """GenerateContentConfig options for what a job's preferences ask: its temperature,
    and for a rated job the safety settings at the stricter of its rating's threshold
    and the operator's (gemini_config.rated_threshold). Empty for a job that asks
    neither, so the provider's own controls (generation_controls) stand."""
    options: dict[str, Any] = {}
    if sampling.temperature is not None:
        options["temperature"] = sampling.temperature
    if sampling.content_rating is not None:
        threshold = rated_threshold(operator_threshold, sampling.content_rating)
        if threshold is not None:
            options["safety_settings"] = safety_settings(threshold)
    return options


def supports(model: types.Model, method: str) -> bool:
    """Whether models.get's answer lists `method` ("generateContent", "embedContent")
    among the model's supportedGenerationMethods. A model that lists none (a proxy that
    says little) is given the benefit of the doubt: its first real call will tell."""
    actions = model.supported_actions
    return actions is None or method in actions


#: JSON Schema keywords and the responseSchema (OpenAPI) fields they become; any other
#: keyword (additionalProperties: Gemini's objects never have more) is left out.
_SCHEMA_FIELDS = {
    "required": "required",
    "minItems": "min_items",
    "maxItems": "max_items",
    "description": "description",
    "enum": "enum",
}


def response_schema(schema: Mapping[str, Any]) -> types.Schema:
    """The responseSchema for a JSON Schema of generation/story/schemas.py's subset:
    types in Gemini's spelling, and the properties in the order given
    (property_ordering), which is the order the model writes them in."""
    fields: dict[str, Any] = {"type": types.Type(str(schema["type"]).upper())}
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        fields["properties"] = {k: response_schema(v) for k, v in properties.items()}
        fields["property_ordering"] = list(properties)
    if isinstance(schema.get("items"), Mapping):
        fields["items"] = response_schema(schema["items"])
    for keyword, name in _SCHEMA_FIELDS.items():
        if keyword in schema:
            fields[name] = schema[keyword]
    return types.Schema(**fields)


@dataclass
class StreamHop:
    """What one streamed HTTP response (one "hop" of a stream) said so far."""

    finish: str = ""
    token: bytes | None = None
    #: Each chunk's usage is the running total of its response, so the last one counts.
    usage: Usage = field(default_factory=Usage)

    def observe(self, chunk: types.GenerateContentResponse) -> str:
        """The chunk's text; RefusedError if the chunk refuses."""
        if chunk.usage_metadata is not None:
            self.usage = usage_of(chunk)
        if (refused := refusal(chunk)) is not None:
            raise refused
        if candidate := (chunk.candidates or [None])[0]:
            self.finish = enum_name(candidate.finish_reason) or self.finish
            self.token = candidate.continuation_token or self.token
        return chunk.text or ""

    @property
    def continues(self) -> bool:
        """Gemini stopped at its per-request limit and said where to pick up."""
        return self.finish == "CONTINUATION" and bool(self.token)
