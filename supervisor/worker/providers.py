"""Builds the generation provider from Settings: the providers in use, each from its
own config object (Settings.provider_config), and, when GENERATION_FALLBACK names
providers, the composite that asks them after GENERATION_PROVIDER
(generation/providers/registry.py builds both); and each provider's rate limit.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from generation.providers import build_providers
from generation.types import Provider, ProviderHooks
from supervisor.config import Settings
from supervisor.db.ratelimit import RateLimiter

#: Hooks for one provider, by its name: each provider's requests can then be counted
#: against a rate limit of its own.
HooksFor = Callable[[str], ProviderHooks]


def build_provider(
    settings: Settings, hooks: ProviderHooks | None = None, *, hooks_for: HooksFor | None = None
) -> Provider:
    """The configured provider wired to `hooks` (rate limit, metrics), or to
    `hooks_for(name)` for each provider when given: GENERATION_PROVIDER alone, or a
    FallbackProvider over it and GENERATION_FALLBACK. A ConfigError when a setting a
    provider in use needs is missing (an API key, OPENAI_MODEL)."""
    shared = hooks or ProviderHooks()
    configs = [(name, settings.provider_config(name)) for name in settings.providers_in_use]
    return build_providers(
        configs,
        hooks_for or (lambda _name: shared),
        probe_seconds=settings.provider_probe_seconds,
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
