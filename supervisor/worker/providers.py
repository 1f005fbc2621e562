"""Builds the generation provider from Settings (the one place that maps them).

Providers are found by name in generation's registry; this module owns only how
Settings become each provider's own config object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from generation import providers
from generation.providers import GeminiConfig, OfflineConfig
from generation.types import Provider, ProviderHooks
from supervisor.config import Settings, require_api_key


def _offline_config(settings: Settings) -> OfflineConfig:
    return OfflineConfig(latency_ms=settings.offline_latency_ms)


def _gemini_config(settings: Settings) -> GeminiConfig:
    return GeminiConfig(
        api_key=require_api_key(settings),
        model=settings.gemini_model,
        embedding_model=settings.gemini_embedding_model,
        base_url=settings.gemini_base_url,
        api_version=settings.gemini_api_version,
        timeout_seconds=settings.gemini_timeout_seconds,
        embedding_dimensions=settings.embedding_dimensions,
        thinking_level=settings.gemini_thinking_level,
        safety_threshold=settings.gemini_safety_threshold,
    )


#: Provider name -> its config, from Settings. A ConfigError when a setting it needs is
#: missing (an API key for a provider whose registry entry says it needs one).
PROVIDER_CONFIGS: dict[str, Callable[[Settings], Any]] = {
    "offline": _offline_config,
    "gemini": _gemini_config,
}


def build_provider(settings: Settings, hooks: ProviderHooks | None = None) -> Provider:
    """The configured provider, wired to `hooks` (rate limit, metrics)."""
    entry = providers.entry(settings.provider)
    try:
        config_for = PROVIDER_CONFIGS[entry.name]
    except KeyError:
        raise ValueError(f"no settings are mapped to the {entry.name} provider") from None
    return entry.build(config_for(settings), hooks or ProviderHooks())
