"""The OpenAI-compatible provider's configuration, importable without the openai SDK.

One config serves OpenAI itself and every server that speaks its chat-completions API
(OpenRouter, Ollama, vLLM, llama.cpp server, LM Studio): only `base_url`, the key and
the model names differ. generation/providers/openai_chat.py, which imports the SDK, is imported only
when an OpenAIProvider is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from generation.providers.calls import RetryPolicy

#: The SDK's own default endpoint, passed explicitly so OPENAI_BASE_URL in the
#: environment can never redirect a provider configured without one.
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
OPENAI_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class OpenAIConfig:
    """How to reach an OpenAI-compatible server and how hard to try.

    `api_key` never appears in a repr. `embedding_model` None means the chapter summary
    is stored without an embedding (many local servers serve no embedding model).
    """

    api_key: str = field(repr=False)
    model: str
    embedding_model: str | None = None
    base_url: str | None = None
    timeout_seconds: float = OPENAI_TIMEOUT_SECONDS
    #: HTTP attempts per request, the first included.
    max_attempts: int = 5
    backoff_base_seconds: float = 1.0
    #: Longest wait between attempts; a server asking for longer ends the call at once.
    max_backoff_seconds: float = 60.0

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

    @property
    def endpoint(self) -> str:
        """The base URL requests go to."""
        return self.base_url or OPENAI_DEFAULT_BASE_URL

    @property
    def label(self) -> str:
        """Who the provider's messages name: OpenAI itself, or the server by its address
        (an operator with Ollama on one host and vLLM on another can tell them apart)."""
        if self.endpoint == OPENAI_DEFAULT_BASE_URL:
            return "OpenAI"
        return f"the OpenAI-compatible server at {urlsplit(self.endpoint).netloc}"

    @property
    def retry_policy(self) -> RetryPolicy:
        """The shared retry policy these settings describe."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_seconds=self.backoff_base_seconds,
            cap_seconds=self.max_backoff_seconds,
        )
