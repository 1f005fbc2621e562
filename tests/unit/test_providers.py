"""The provider registry (generation/providers/registry.py) and the Settings mapping onto it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from generation import providers
from generation.providers import (
    PROVIDER_NAMES,
    REGISTRY,
    GeminiConfig,
    OfflineConfig,
    OpenAIConfig,
    ProviderEntry,
    build_provider,
    entry,
)
from generation.providers.offline import OfflineProvider
from generation.types import ProviderHooks
from supervisor.config import Settings
from supervisor.errors import ConfigError
from supervisor.worker import providers as wiring
from tests.fakegemini import VALID_KEY


def test_the_registry_holds_every_provider_by_name() -> None:
    assert PROVIDER_NAMES == ("gemini", "offline", "openai") == tuple(REGISTRY)
    assert all(isinstance(e, ProviderEntry) and REGISTRY[e.name] is e for e in REGISTRY.values())
    assert entry("gemini").needs_api_key and not entry("offline").needs_api_key
    assert entry("openai").needs_api_key


def test_an_unknown_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown provider 'claude'; expected one of gemini, offline, openai"
    ):
        entry("claude")
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        build_provider("nope", OfflineConfig(), ProviderHooks())


def test_each_provider_takes_only_its_own_config() -> None:
    with pytest.raises(
        ValueError, match="the offline provider is configured by OfflineConfig, not GeminiConfig"
    ):
        build_provider("offline", GeminiConfig(api_key=VALID_KEY), ProviderHooks())
    with pytest.raises(
        ValueError, match="the gemini provider is configured by GeminiConfig, not OfflineConfig"
    ):
        build_provider("gemini", OfflineConfig(), ProviderHooks())


def test_the_offline_provider_is_built_from_its_config() -> None:
    sleeps: list[float] = []
    provider = build_provider(
        "offline", OfflineConfig(latency_ms=7, dimensions=16), ProviderHooks()
    )
    assert isinstance(provider, OfflineProvider)
    assert len(provider.embed("words")) == 16
    provider._sleep = sleeps.append  # type: ignore[attr-defined]
    provider.check()
    provider.embed("x")
    assert sleeps == [0.007]


@pytest.mark.parametrize("options", [{"latency_ms": -1}, {"dimensions": 0}])
def test_a_bad_offline_config_is_refused(options: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="OfflineConfig"):
        OfflineConfig(**options)


def test_offline_and_gemini_configs_need_no_sdk() -> None:
    # A fresh interpreter: nothing of google-genai is loaded until a GeminiProvider is built.
    script = (
        "import sys\n"
        "from generation.providers import GeminiConfig, OfflineConfig, build_provider\n"
        "from generation.types import ProviderHooks\n"
        "GeminiConfig(api_key='k')\n"
        "build_provider('offline', OfflineConfig(), ProviderHooks()).outline\n"
        "assert 'generation.providers.gemini' not in sys.modules, 'gemini module imported'\n"
        "assert not any(m.startswith('google.genai') for m in sys.modules), 'SDK imported'\n"
        "build_provider('gemini', GeminiConfig(api_key='k'), ProviderHooks()).close()\n"
        "assert 'google.genai' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


# --- supervisor/worker/providers.py: Settings -> each provider's config ------------------------


def test_settings_build_the_offline_provider() -> None:
    provider = wiring.build_provider(Settings(provider="offline", offline_latency_ms=3))
    assert isinstance(provider, OfflineProvider) and provider._latency == 0.003


def test_settings_build_the_gemini_provider_with_every_setting() -> None:
    settings = Settings(
        provider="gemini",
        api_key=VALID_KEY,
        gemini_model="gemini-3.7-flash",
        gemini_embedding_model="emb",
        gemini_base_url="http://127.0.0.1:9",
        gemini_api_version="v1",
        gemini_timeout_seconds=7.0,
        embedding_dimensions=256,
    )
    assert wiring.PROVIDER_CONFIGS["gemini"](settings) == GeminiConfig(
        api_key=VALID_KEY,
        model="gemini-3.7-flash",
        embedding_model="emb",
        base_url="http://127.0.0.1:9",
        api_version="v1",
        timeout_seconds=7.0,
        embedding_dimensions=256,
    )
    provider = wiring.build_provider(settings)
    try:
        assert provider.name == "gemini" and provider.embedding_model == "emb"
    finally:
        provider.close()  # type: ignore[attr-defined]


def test_gemini_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no API key is set"):
        wiring.build_provider(Settings(provider="gemini", api_key=None))


def test_every_registered_provider_has_a_settings_mapping() -> None:
    assert set(wiring.PROVIDER_CONFIGS) == set(providers.PROVIDER_NAMES)


def test_settings_build_the_openai_provider_with_every_setting() -> None:
    settings = Settings(
        provider="openai",
        openai_api_key="sk-local",
        openai_model="llama3.2",
        openai_embedding_model="nomic-embed-text",
        openai_base_url="http://127.0.0.1:11434/v1",
        openai_timeout_seconds=9.0,
    )
    assert wiring.PROVIDER_CONFIGS["openai"](settings) == OpenAIConfig(
        api_key="sk-local",
        model="llama3.2",
        embedding_model="nomic-embed-text",
        base_url="http://127.0.0.1:11434/v1",
        timeout_seconds=9.0,
    )
    provider = wiring.build_provider(settings)
    try:
        assert provider.name == "openai" and provider.embedding_model == "nomic-embed-text"
    finally:
        provider.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "settings, missing",
    [
        (Settings(provider="openai", openai_model="m"), "OPENAI_API_KEY"),
        (Settings(provider="openai", openai_api_key="k"), "OPENAI_MODEL"),
        (Settings(provider="offline", fallback=("openai",), openai_api_key="k"), "OPENAI_MODEL"),
    ],
)
def test_openai_without_its_key_or_model_is_a_config_error(settings, missing) -> None:
    with pytest.raises(ConfigError, match=f"{missing} is not set"):
        wiring.build_provider(settings)


def test_every_provider_in_use_is_checked_before_start_up() -> None:
    from supervisor.config import require_api_key

    both = Settings(provider="gemini", api_key=VALID_KEY, fallback=("openai",))
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        require_api_key(both)
    ready = Settings(provider="openai", openai_api_key="k", openai_model="m", fallback=("gemini",))
    with pytest.raises(ConfigError, match="no API key is set"):
        require_api_key(ready)
    assert require_api_key(Settings(provider="offline")) == ""


def test_a_fallback_builds_the_composite_with_hooks_per_provider() -> None:
    from generation.providers.fallback import FallbackProvider

    settings = Settings(
        provider="offline",
        fallback=("openai", "offline"),  # the primary named again is ignored
        openai_api_key="k",
        openai_model="m",
        provider_probe_seconds=2.0,
    )
    asked: list[str] = []

    def hooks_for(name: str) -> ProviderHooks:
        asked.append(name)
        return ProviderHooks()

    provider = wiring.build_provider(settings, hooks_for=hooks_for)
    assert isinstance(provider, FallbackProvider) and provider.name == "offline+openai"
    assert asked == ["offline", "openai"]
    assert settings.providers_in_use == ("offline", "openai")


def test_each_provider_has_its_own_rate_limit() -> None:
    settings = Settings(ai_requests_per_minute=60, openai_requests_per_minute=0)
    assert settings.requests_per_minute("gemini") == 60
    assert settings.requests_per_minute("openai") == 0
    assert Settings(ai_requests_per_minute=30).requests_per_minute("openai") == 30
