"""Turns what the google-genai SDK raises or returns into storyworker's errors.

Transport failures come from the SDK's HTTP client (httpx / httpx2), not as
`APIError`; refusals come as HTTP 200 with no text. Messages never carry the API key
or the prompt: only the status and Google's own short message.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

from google.genai import errors as genai_errors

from generation.errors import (
    AuthenticationError,
    GenerationError,
    InvalidRequestError,
    ProviderUnavailableError,
    RateLimitedError,
    RefusedError,
)

#: Candidate finish reasons that mean the model would not write this.
REFUSAL_REASONS = frozenset(
    {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"}
)


def _transport_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        found.append(module.TransportError)  # connect, read, write, timeouts, protocol
        found.append(module.StreamError)
    return tuple(found)


TRANSPORT_ERRORS = _transport_errors()


def _clean(text: Any, limit: int = 200) -> str:
    return " ".join(str(text or "").split())[:limit]


def retry_after_seconds(exc: genai_errors.APIError) -> float | None:
    """The wait a 429/503 asked for: Retry-After header, else RetryInfo.retryDelay."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    header = headers.get("retry-after") if hasattr(headers, "get") else None
    if header:
        header = header.strip()
        if re.fullmatch(r"\d+(\.\d+)?", header):
            return float(header)
        when = email.utils.parsedate_to_datetime(header)
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    details = (
        (exc.details or {}).get("error", {}).get("details", [])
        if isinstance(exc.details, dict)
        else []
    )
    for detail in details:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and (match := re.fullmatch(r"(\d+(?:\.\d+)?)s", delay.strip())):
            return float(match.group(1))
    return None


def _is_bad_key(exc: genai_errors.APIError) -> bool:
    if exc.code in (401, 403):
        return True
    text = str(exc.details)
    return exc.code == 400 and ("API_KEY_INVALID" in text or "API key not valid" in text)


def classify(exc: BaseException) -> GenerationError:
    """The storyworker error for an SDK or transport exception."""
    if isinstance(exc, GenerationError):
        return exc
    if isinstance(exc, genai_errors.APIError):
        code, detail = exc.code, _clean(exc.message or exc.status)
        if code == 429:
            return RateLimitedError(
                f"Gemini rate limit (HTTP 429): {detail}", retry_after=retry_after_seconds(exc)
            )
        if code == 408 or (code is not None and code >= 500):
            return ProviderUnavailableError(
                f"Gemini returned HTTP {code}: {detail}", retry_after=retry_after_seconds(exc)
            )
        if _is_bad_key(exc):
            return AuthenticationError(f"Gemini rejected the API key (HTTP {code}): {detail}")
        return InvalidRequestError(f"Gemini rejected the request (HTTP {code}): {detail}")
    if isinstance(exc, TRANSPORT_ERRORS):
        return ProviderUnavailableError(f"Gemini unreachable: {type(exc).__name__}: {_clean(exc)}")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return ProviderUnavailableError(f"Gemini unreachable: {type(exc).__name__}")
    return ProviderUnavailableError(f"Gemini call failed: {type(exc).__name__}: {_clean(exc)}")


def refusal(response: Any) -> RefusedError | None:
    """A RefusedError when a (200) response says the model would not write."""
    feedback = getattr(response, "prompt_feedback", None)
    reason = getattr(feedback, "block_reason", None)
    if reason is not None:
        return RefusedError(f"Gemini refused the prompt (block_reason={_name(reason)})")
    for candidate in getattr(response, "candidates", None) or []:
        finish = _name(getattr(candidate, "finish_reason", None))
        if finish in REFUSAL_REASONS:
            return RefusedError(f"Gemini refused to write this content (finish_reason={finish})")
    return None


def _name(value: Any) -> str:
    return str(getattr(value, "value", value) or "")
