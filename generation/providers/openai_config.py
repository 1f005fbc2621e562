"""The OpenAI-compatible provider's configuration, importable without the openai SDK.

One config serves OpenAI itself and every server that speaks its chat-completions API
(OpenRouter, Ollama, vLLM, llama.cpp server, LM Studio): only `base_url`, the key and
the model names differ. generation/providers/openai_chat.py, which imports the SDK, is
imported only when an OpenAIProvider is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from generation.providers.calls import Retrying
from generation.settings import integer, number, setting, url

#: The SDK's own default endpoint, passed explicitly so OPENAI_BASE_URL in the
#: environment can never redirect a provider configured without one.
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
OPENAI_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class OpenAIConfig(Retrying):
    """How to reach an OpenAI-compatible server and how hard to try.

    `api_key` never appears in a repr. `embedding_model` None means the chapter summary
    is stored without an embedding (many local servers serve no embedding model).
    `embedding_dimensions` is the size its vectors must have (checked at boot, never
    sent: few servers take OpenAI's `dimensions`); None takes the size the model
    answers at boot.
    """

    api_key: str = setting(
        "OPENAI_API_KEY",
        doc="key of the `openai` provider (any non-empty string for a local server)",
        secret=True,
        missing="{names} is not set (any non-empty key will do for a local server)",
    )
    model: str = setting(
        "OPENAI_MODEL", doc="chat model, checked at boot", missing="{names} is not set"
    )
    embedding_model: str | None = setting(
        "OPENAI_EMBEDDING_MODEL", doc="embedding model (unset: none stored)", default=None
    )
    embedding_dimensions: int | None = setting(
        "OPENAI_EMBEDDING_DIMENSIONS",
        integer(minimum=1, maximum=16384),
        doc="size of the embedding model's vectors, checked at boot (unset: its own)",
        default=None,
    )
    base_url: str | None = setting(
        "OPENAI_BASE_URL", url, doc="the server (SDK default: OpenAI)", default=None
    )
    timeout_seconds: float = setting(
        "OPENAI_TIMEOUT_SECONDS",
        number(minimum=0, exclusive=True),
        doc="per-request timeout",
        default=OPENAI_TIMEOUT_SECONDS,
    )
    #: The provider's own rate limit across every worker on every host (None: the
    #: service's AI_REQUESTS_PER_MINUTE; 0: none). The service enforces it.
    requests_per_minute: int | None = setting(
        "OPENAI_REQUESTS_PER_MINUTE",
        integer(minimum=0),
        doc="the openai provider's own rate limit",
        default=None,
    )

    def __post_init__(self) -> None:
        # An empty key would make the SDK fall back to OPENAI_API_KEY from the environment.
        if not self.api_key.strip():
            raise ValueError("OpenAIConfig.api_key is empty (any non-empty string will do locally)")
        if not self.model.strip():
            raise ValueError("OpenAIConfig.model is empty")
        if self.timeout_seconds <= 0 or self.max_attempts < 1:
            raise ValueError("OpenAIConfig needs timeout_seconds > 0 and max_attempts >= 1")
        if self.backoff_base_seconds < 0 or self.max_backoff_seconds < 0:
            raise ValueError("OpenAIConfig backoff seconds must be >= 0")
        if self.embedding_dimensions is not None and self.embedding_dimensions < 1:
            raise ValueError("OpenAIConfig.embedding_dimensions must be >= 1")

    @property
    def endpoint(self) -> str:
        """The base URL requests go to."""
        return self.base_url or OPENAI_DEFAULT_BASE_URL

    @property
    def is_openai(self) -> bool:
        """OpenAI's own endpoint (which wants `max_completion_tokens`, and refuses
        `max_tokens` for its reasoning models), not another server."""
        return self.endpoint == OPENAI_DEFAULT_BASE_URL

    @property
    def label(self) -> str:
        """Who the provider's messages name: OpenAI itself, or the server by its address
        (an operator with Ollama on one host and vLLM on another can tell them apart)."""
        if self.is_openai:
            return "OpenAI"
        return f"the OpenAI-compatible server at {urlsplit(self.endpoint).netloc}"
