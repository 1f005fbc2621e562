"""The LLM providers, their wire formats and the call machinery they share, behind one
registry keyed by name (registry.py).

Importing this package loads no provider SDK: a provider's module is imported only
when the registry builds it.
"""

from __future__ import annotations

from generation.providers.fallback import PROBE_MAX_SECONDS, FallbackProvider
from generation.providers.registry import (
    PROVIDER_NAMES,
    REGISTRY,
    GeminiConfig,
    OfflineConfig,
    OpenAIConfig,
    ProviderEntry,
    build_provider,
    entry,
)

__all__ = [
    "PROBE_MAX_SECONDS",
    "PROVIDER_NAMES",
    "REGISTRY",
    "FallbackProvider",
    "GeminiConfig",
    "OfflineConfig",
    "OpenAIConfig",
    "ProviderEntry",
    "build_provider",
    "entry",
]
