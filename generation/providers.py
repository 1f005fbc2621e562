"""Chooses and builds the provider named in the configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from generation.offline import OfflineProvider
from generation.types import Provider, ProviderHooks

if TYPE_CHECKING:
    from generation.gemini import GeminiConfig

PROVIDER_NAMES = ("gemini", "offline")


def build_provider(
    name: str,
    *,
    hooks: ProviderHooks,
    offline_latency_ms: int = 0,
    gemini_config: GeminiConfig | None = None,
) -> Provider:
    """A ready provider for `name` ("offline" or "gemini"); ValueError for anything else.

    The Gemini module is imported only when asked for, so the offline provider works
    (and its tests run) without the SDK being importable.
    """
    if name == "offline":
        return OfflineProvider(latency_ms=offline_latency_ms, hooks=hooks)
    if name == "gemini":
        if gemini_config is None:
            raise ValueError("the gemini provider needs a GeminiConfig")
        from generation.gemini import GeminiProvider

        return GeminiProvider(gemini_config, hooks)
    raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDER_NAMES)}")
