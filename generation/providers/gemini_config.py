"""The Gemini provider's configuration, importable without the google-genai SDK.

The composition root builds (and so validates) a GeminiConfig from its settings before
anything imports the SDK; generation/providers/gemini.py is imported only when a GeminiProvider
is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from generation.providers.calls import Retrying
from generation.settings import choice, integer, number, setting, url

# The current stable Flash model (2026-12); the whole 2.5 family answers 404 since it
# was retired on 2026-10-16.
GEMINI_MODEL = "gemini-3.5-flash"
GEMINI_EMBEDDING_MODEL = "gemini-embedding-001"
#: Gemini 3's thinking levels (thinking_config.thinking_level), in the lower case
#: GEMINI_THINKING_LEVEL is written in. Gemini 3.5 and later reject a thinking budget.
THINKING_LEVELS = ("minimal", "low", "medium", "high")
#: Block thresholds for GEMINI_SAFETY_THRESHOLD, as the API spells them, laxest first.
SAFETY_THRESHOLDS = (
    "OFF",
    "BLOCK_NONE",
    "BLOCK_ONLY_HIGH",
    "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_LOW_AND_ABOVE",
)
#: The block threshold a job's `content_rating` asks for. The operator's
#: GEMINI_SAFETY_THRESHOLD is a floor the app cannot go below: a request carries the
#: stricter of the two (`rated_threshold`).
RATING_THRESHOLDS = {
    "general": "BLOCK_LOW_AND_ABOVE",
    "teen": "BLOCK_MEDIUM_AND_ABOVE",
    "mature": "BLOCK_ONLY_HIGH",
    "explicit": "BLOCK_NONE",
}
#: The environment variables that may hold the key, in the order they are tried.
API_KEY_VARIABLES = ("GOOGLE_GENERATIVE_AI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")


@dataclass(frozen=True)
class GeminiConfig(Retrying):
    """How to reach Gemini and how hard to try. `api_key` never appears in a repr."""

    api_key: str = setting(
        API_KEY_VARIABLES,
        doc="Gemini key",
        secret=True,
        missing="no API key is set ({names}); set one or use GENERATION_PROVIDER=offline",
    )
    model: str = setting(
        "GEMINI_MODEL", doc="text model, checked at boot", default=GEMINI_MODEL
    )
    embedding_model: str = setting(
        "GEMINI_EMBEDDING_MODEL", doc="embeddings", default=GEMINI_EMBEDDING_MODEL
    )
    base_url: str | None = setting(
        "GEMINI_BASE_URL", url, doc="API endpoint override (proxies, tests)", default=None
    )
    #: The SDK defaults to v1; see generation/providers/gemini.py.
    api_version: str = setting(
        "GEMINI_API_VERSION", doc="API version the SDK speaks", default="v1beta"
    )
    timeout_seconds: float = setting(
        "GEMINI_TIMEOUT_SECONDS",
        number(minimum=0, exclusive=True),
        doc="per-request timeout",
        default=120.0,
    )
    embedding_dimensions: int = setting(
        "GEMINI_EMBEDDING_DIMENSIONS",
        integer(minimum=1, maximum=3072),
        doc="embedding size (output_dimensionality)",
        default=768,
    )
    #: One of THINKING_LEVELS for every generation request; None leaves the model's own
    #: default. Never sent as a thinking budget.
    thinking_level: str | None = setting(
        "GEMINI_THINKING_LEVEL",
        choice(THINKING_LEVELS),
        doc="Gemini 3's thinking_level on every generation request",
        default=None,
    )
    #: One of SAFETY_THRESHOLDS for every adjustable harm category of every generation
    #: request; None leaves the API's defaults. Embedding requests carry neither.
    safety_threshold: str | None = setting(
        "GEMINI_SAFETY_THRESHOLD",
        choice(SAFETY_THRESHOLDS, upper=True),
        doc="block threshold for every adjustable harm category",
        default=None,
    )

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


def _check_choice(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(
            f"GeminiConfig.{name} must be one of {', '.join(allowed)} (or None), got {value!r}"
        )


def rated_threshold(operator: str | None, rating: str | None) -> str | None:
    """The block threshold of a request for a job rated `rating` (None: unrated) under
    the operator's GEMINI_SAFETY_THRESHOLD (`operator`, None: unset): the stricter of
    the two, so a rating can make a request stricter but never laxer than the operator
    set. None when neither says anything (the API's defaults apply)."""
    asked = RATING_THRESHOLDS.get(rating) if rating is not None else None
    if asked is None or operator is None:
        return asked or operator
    return max(asked, operator, key=SAFETY_THRESHOLDS.index)
