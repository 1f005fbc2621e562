"""The providers this package can build, in one registry keyed by name.

A provider is its own module plus its own frozen config dataclass; adding one means one
entry here. Entries import their module only when they build, so the offline provider
works (and its tests run) without any provider's SDK being importable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generation.providers.gemini_config import GeminiConfig
from generation.providers.offline import OfflineConfig, OfflineProvider
from generation.providers.openai_config import OpenAIConfig
from generation.types import Provider, ProviderHooks

__all__ = [
    "PROVIDER_NAMES",
    "REGISTRY",
    "GeminiConfig",
    "OfflineConfig",
    "OpenAIConfig",
    "ProviderEntry",
    "build_provider",
    "entry",
]


@dataclass(frozen=True)
class ProviderEntry:
    """How to build one provider, and what it needs from whoever configures it."""

    name: str
    #: The supervisor refuses to start without an API key for this provider.
    needs_api_key: bool
    #: (the provider's own config object, hooks) -> a ready provider; ValueError when the
    #: config is not the provider's own config class.
    build: Callable[[Any, ProviderHooks], Provider]


def _build_offline(config: Any, hooks: ProviderHooks) -> Provider:
    if not isinstance(config, OfflineConfig):
        raise _wrong_config("offline", OfflineConfig, config)
    return OfflineProvider.from_config(config, hooks)


def _build_gemini(config: Any, hooks: ProviderHooks) -> Provider:
    if not isinstance(config, GeminiConfig):
        raise _wrong_config("gemini", GeminiConfig, config)
    # Only now: generation.providers.gemini imports the google-genai SDK (GeminiConfig does not).
    from generation.providers.gemini import GeminiProvider

    return GeminiProvider(config, hooks)


def _build_openai(config: Any, hooks: ProviderHooks) -> Provider:
    if not isinstance(config, OpenAIConfig):
        raise _wrong_config("openai", OpenAIConfig, config)
    # Only now: generation.providers.openai_chat imports the openai SDK (OpenAIConfig does not).
    from generation.providers.openai_chat import OpenAIProvider

    return OpenAIProvider(config, hooks)


def _wrong_config(name: str, expected: type, config: Any) -> ValueError:
    return ValueError(
        f"the {name} provider is configured by {expected.__name__}, not {type(config).__name__}"
    )


REGISTRY: dict[str, ProviderEntry] = {
    item.name: item
    for item in (
        ProviderEntry("gemini", needs_api_key=True, build=_build_gemini),
        ProviderEntry("offline", needs_api_key=False, build=_build_offline),
        ProviderEntry("openai", needs_api_key=True, build=_build_openai),
    )
}
PROVIDER_NAMES: tuple[str, ...] = tuple(REGISTRY)


def entry(name: str) -> ProviderEntry:
    """The registry entry for `name`; ValueError naming the known providers otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(PROVIDER_NAMES)
        raise ValueError(f"unknown provider {name!r}; expected one of {known}") from None


def build_provider(name: str, config: Any, hooks: ProviderHooks) -> Provider:
    """A ready provider `name` built from its own `config`, reporting to `hooks`.

    ValueError for an unknown name or a config of the wrong class.
    """
    return entry(name).build(config, hooks)
