"""Builds the generation provider from Settings (the one place that maps them)."""

from __future__ import annotations

from generation.providers import build_provider as _build
from generation.types import Provider, ProviderHooks
from supervisor.config import Settings, require_api_key


def build_provider(settings: Settings, hooks: ProviderHooks | None = None) -> Provider:
    """The configured provider, wired to `hooks` (rate limit, metrics)."""
    hooks = hooks or ProviderHooks()
    if settings.provider == "offline":
        return _build("offline", hooks=hooks, offline_latency_ms=settings.offline_latency_ms)
    from generation.gemini import GeminiConfig

    config = GeminiConfig(
        api_key=require_api_key(settings),
        model=settings.gemini_model,
        embedding_model=settings.gemini_embedding_model,
        base_url=settings.gemini_base_url,
        api_version=settings.gemini_api_version,
        timeout_seconds=settings.gemini_timeout_seconds,
        embedding_dimensions=settings.embedding_dimensions,
    )
    return _build("gemini", hooks=hooks, gemini_config=config)
