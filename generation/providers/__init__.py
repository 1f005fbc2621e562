"""The LLM providers, their wire formats and the call machinery they share, behind one
registry keyed by name (registry.py).

Importing this package loads no provider SDK: a provider's module is imported only
when the registry builds it.
"""

from __future__ import annotations

from generation.providers.fallback import PROBE_MAX_SECONDS, FallbackProvider
from generation.providers.gemini_config import GeminiConfig
from generation.providers.offline import OfflineConfig, OfflineProvider
from generation.providers.openai_config import OpenAIConfig
from generation.providers.registry import (
    PROVIDER_NAMES,
    REGISTRY,
    ProviderEntry,
    build_provider,
    build_providers,
    entry,
    register,
)

__all__ = [
    "PROBE_MAX_SECONDS",
    "PROVIDER_NAMES",
    "REGISTRY",
    "FallbackProvider",
    "GeminiConfig",
    "OfflineConfig",
    "OfflineProvider",
    "OpenAIConfig",
    "ProviderEntry",
    "build_provider",
    "build_providers",
    "entry",
    "register",
]
