"""Builds the generation provider from Settings (the one place that maps them).

Providers are found by name in generation's registry; this module owns only how
Settings become each provider's own config object, and, when GENERATION_FALLBACK names
providers, the composite that asks them after GENERATION_PROVIDER
(generation/providers/fallback.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from generation import providers
from generation.providers import (
    PROBE_MAX_SECONDS,
    FallbackProvider,
    GeminiConfig,
    OfflineConfig,
    OpenAIConfig,
)
from generation.types import Provider, ProviderHooks
from supervisor.config import Settings, require_gemini_key, require_openai
from supervisor.db.ratelimit import RateLimiter

#: Hooks for one provider, by its name: each provider's requests can then be counted
#: against a rate limit of its own.
HooksFor = Callable[[str], ProviderHooks]


def _offline_config(settings: Settings) -> OfflineConfig:
    return OfflineConfig(latency_ms=settings.offline_latency_ms)


def _gemini_config(settings: Settings) -> GeminiConfig:
    return GeminiConfig(
        api_key=require_gemini_key(settings),
        model=settings.gemini_model,
        embedding_model=settings.gemini_embedding_model,
        base_url=settings.gemini_base_url,
        api_version=settings.gemini_api_version,
        timeout_seconds=settings.gemini_timeout_seconds,
        embedding_dimensions=settings.embedding_dimensions,
        thinking_level=settings.gemini_thinking_level,
        safety_threshold=settings.gemini_safety_threshold,
    )


def _openai_config(settings: Settings) -> OpenAIConfig:
    api_key = require_openai(settings)
    assert settings.openai_model is not None  # require_openai says so
    return OpenAIConfig(
        api_key=api_key,
        model=settings.openai_model,
        embedding_model=settings.openai_embedding_model,
        base_url=settings.openai_base_url,
        timeout_seconds=settings.openai_timeout_seconds,
    )


#: Provider name -> its config, from Settings. A ConfigError when a setting it needs is
#: missing (an API key, OPENAI_MODEL).
PROVIDER_CONFIGS: dict[str, Callable[[Settings], Any]] = {
    "offline": _offline_config,
    "gemini": _gemini_config,
    "openai": _openai_config,
}


def build_one(settings: Settings, name: str, hooks: ProviderHooks) -> Provider:
    """Provider `name` configured from `settings`, wired to `hooks`."""
    entry = providers.entry(name)
    try:
        config_for = PROVIDER_CONFIGS[entry.name]
    except KeyError:
        raise ValueError(f"no settings are mapped to the {entry.name} provider") from None
    return entry.build(config_for(settings), hooks)


def build_provider(
    settings: Settings, hooks: ProviderHooks | None = None, *, hooks_for: HooksFor | None = None
) -> Provider:
    """The configured provider wired to `hooks` (rate limit, metrics), or to
    `hooks_for(name)` for each provider when given: GENERATION_PROVIDER alone, or a
    FallbackProvider over it and GENERATION_FALLBACK, whose members stay "tripped" for
    PROVIDER_PROBE_SECONDS (doubling to five minutes) after a provider-wide fault."""
    shared = hooks or ProviderHooks()
    members = [
        build_one(settings, name, hooks_for(name) if hooks_for else shared)
        for name in settings.providers_in_use
    ]
    if len(members) == 1:
        return members[0]
    return FallbackProvider(
        members,
        probe_base_seconds=settings.provider_probe_seconds,
        probe_max_seconds=max(PROBE_MAX_SECONDS, settings.provider_probe_seconds),
    )


def rate_limits(conn: psycopg.Connection, settings: Settings) -> Callable[[str], None]:
    """`before_request` by provider name: each provider's requests wait for a limiter
    of its own, a row named after the provider (`gemini`, `openai`) shared by every
    worker on every host, at `settings.requests_per_minute(provider)` (0: no limit)."""
    limiters: dict[str, RateLimiter | None] = {}

    def before_request(provider: str) -> None:
        if provider not in limiters:
            per_minute = settings.requests_per_minute(provider)
            limiters[provider] = (
                RateLimiter(conn, per_minute, name=provider) if per_minute > 0 else None
            )
        limiter = limiters[provider]
        if limiter is not None:
            limiter.acquire()

    return before_request
