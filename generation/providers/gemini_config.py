"""The Gemini provider's configuration, importable without the google-genai SDK.

The composition root builds (and so validates) a GeminiConfig from its settings before
anything imports the SDK; generation/providers/gemini.py is imported only when a GeminiProvider
is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from generation.providers.calls import RetryPolicy
from generation.types import (
    GEMINI_API_VERSION,
    GEMINI_EMBEDDING_DIMENSIONS,
    GEMINI_EMBEDDING_MODEL,
    GEMINI_MODEL,
    GEMINI_TIMEOUT_SECONDS,
    SAFETY_THRESHOLDS,
    THINKING_LEVELS,
)


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
    #: One of THINKING_LEVELS for every generation request; None leaves the model's own
    #: default. Never sent as a thinking budget.
    thinking_level: str | None = None
    #: One of SAFETY_THRESHOLDS for every adjustable harm category of every generation
    #: request; None leaves the API's defaults. Embedding requests carry neither.
    safety_threshold: str | None = None

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
        _check_choice("thinking_level", self.thinking_level, THINKING_LEVELS)
        _check_choice("safety_threshold", self.safety_threshold, SAFETY_THRESHOLDS)

    @property
    def retry_policy(self) -> RetryPolicy:
        """The shared retry policy these settings describe."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_seconds=self.backoff_base_seconds,
            cap_seconds=self.max_backoff_seconds,
        )


def _check_choice(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(
            f"GeminiConfig.{name} must be one of {', '.join(allowed)} (or None), got {value!r}"
        )
