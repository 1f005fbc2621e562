"""The providers this package can build, in one registry keyed by name.

A provider is its own module plus its own frozen config dataclass whose fields declare
their environment variables (generation/settings.py); adding one means its module and
one entry here. The service reads each provider's settings by walking its config class,
builds the providers in use with `build_providers`, and asks the entry for the rest
(its call timeout, its models). Entries import their module only when they build, so
the offline provider works without any provider's SDK being importable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from generation.providers.fallback import PROBE_MAX_SECONDS, FallbackProvider
from generation.providers.gemini_config import GeminiConfig
from generation.providers.offline import OfflineConfig
from generation.providers.openai_config import OpenAIConfig
from generation.settings import declared
from generation.types import Provider, ProviderHooks

__all__ = [
    "PROVIDER_NAMES",
    "REGISTRY",
    "ProviderEntry",
    "build_provider",
    "build_providers",
    "entry",
    "register",
]


@dataclass(frozen=True)
class ProviderEntry:
    """How to build one provider, and what it needs from whoever configures it."""

    name: str
    #: Its config dataclass, declared with generation.settings.setting fields.
    config_class: type
    #: "module:callable" making the provider from (config, hooks); imported only when
    #: one is built, so an SDK is loaded only for a provider in use.
    provider_path: str
    #: config -> how long one of its requests may block, in seconds.
    call_timeout: Callable[[Any], float]
    #: config -> the models it is configured with (checked at boot, named by /ready).
    models: Callable[[Any], tuple[str, ...]] = lambda _config: ()

    @property
    def needs_api_key(self) -> bool:
        """Whether its config declares a secret (the supervisor refuses to start
        without it)."""
        return any(variable.secret for _, variable in declared(self.config_class))

    def build(self, config: Any, hooks: ProviderHooks) -> Provider:
        """A ready provider from its own `config`; ValueError for another config class."""
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"the {self.name} provider is configured by {self.config_class.__name__}, "
                f"not {type(config).__name__}"
            )
        module, _, path = self.provider_path.partition(":")
        make: Any = importlib.import_module(module)
        for attribute in path.split("."):
            make = getattr(make, attribute)
        return make(config, hooks)


def _models(*fields: str) -> Callable[[Any], tuple[str, ...]]:
    return lambda config: tuple(m for m in (getattr(config, f) for f in fields) if m)


REGISTRY: dict[str, ProviderEntry] = {}


def register(item: ProviderEntry) -> ProviderEntry:
    """Add `item` to the registry (a test may register a throwaway provider)."""
    REGISTRY[item.name] = item
    return item


for _item in (
    ProviderEntry(
        "gemini",
        GeminiConfig,
        "generation.providers.gemini:GeminiProvider",
        call_timeout=lambda config: config.timeout_seconds,
        models=_models("model", "embedding_model"),
    ),
    ProviderEntry(
        "offline",
        OfflineConfig,
        "generation.providers.offline:OfflineProvider.from_config",
        call_timeout=lambda config: config.latency_ms / 1000,
    ),
    ProviderEntry(
        "openai",
        OpenAIConfig,
        "generation.providers.openai_chat:OpenAIProvider",
        call_timeout=lambda config: config.timeout_seconds,
        models=_models("model", "embedding_model"),
    ),
):
    register(_item)

#: The built-in providers' names (REGISTRY may gain more at run time, in tests).
PROVIDER_NAMES: tuple[str, ...] = tuple(REGISTRY)


def entry(name: str) -> ProviderEntry:
    """The registry entry for `name`; ValueError naming the known providers otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise ValueError(f"unknown provider {name!r}; expected one of {known}") from None


def build_provider(name: str, config: Any, hooks: ProviderHooks) -> Provider:
    """A ready provider `name` built from its own `config`, reporting to `hooks`.

    ValueError for an unknown name or a config of the wrong class.
    """
    return entry(name).build(config, hooks)


def build_providers(
    configs: Sequence[tuple[str, Any]],
    hooks_for: Callable[[str], ProviderHooks],
    *,
    probe_seconds: float,
) -> Provider:
    """The providers in use, in order, each from its (name, config) and wired to
    `hooks_for(name)`: the first alone, or a FallbackProvider that asks the others after
    it, whose members stay "tripped" for `probe_seconds` (doubling to five minutes)
    after a provider-wide fault."""
    members = [build_provider(name, config, hooks_for(name)) for name, config in configs]
    if len(members) == 1:
        return members[0]
    return FallbackProvider(
        members,
        probe_base_seconds=probe_seconds,
        probe_max_seconds=max(PROBE_MAX_SECONDS, probe_seconds),
    )
