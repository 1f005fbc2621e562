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
from supervisor.config import Settings, load_settings
from supervisor.errors import ConfigError
from supervisor.worker import providers as wiring
from tests.fakegemini import VALID_KEY


def env(**variables: str) -> Settings:
    """Settings read from `variables` alone, as the service reads its environment."""
    return load_settings(variables, dotenv_path=None)


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
    provider = wiring.build_provider(env(GENERATION_PROVIDER="offline", OFFLINE_LATENCY_MS="3"))
    assert isinstance(provider, OfflineProvider) and provider._latency == 0.003


def test_settings_build_the_gemini_provider_with_every_setting() -> None:
    settings = env(
        GENERATION_PROVIDER="gemini",
        GEMINI_API_KEY=VALID_KEY,
        GEMINI_MODEL="gemini-3.7-flash",
        GEMINI_EMBEDDING_MODEL="emb",
        GEMINI_BASE_URL="http://127.0.0.1:9",
        GEMINI_API_VERSION="v1",
        GEMINI_TIMEOUT_SECONDS="7.0",
        GEMINI_EMBEDDING_DIMENSIONS="256",
    )
    assert settings.provider_config("gemini") == GeminiConfig(
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
        wiring.build_provider(env(GENERATION_PROVIDER="gemini"))


def test_every_registered_provider_reads_its_settings_from_its_config_class() -> None:
    settings = env(GEMINI_MODEL="g", OPENAI_MODEL="o", OFFLINE_LATENCY_MS="4")
    assert set(settings.provider_options) == set(providers.PROVIDER_NAMES)
    assert settings.options("gemini").model == "g" and settings.options("openai").model == "o"
    assert settings.options("offline").latency_ms == 4


def test_settings_build_the_openai_provider_with_every_setting() -> None:
    settings = env(
        GENERATION_PROVIDER="openai",
        OPENAI_API_KEY="sk-local",
        OPENAI_MODEL="llama3.2",
        OPENAI_EMBEDDING_MODEL="nomic-embed-text",
        OPENAI_BASE_URL="http://127.0.0.1:11434/v1",
        OPENAI_TIMEOUT_SECONDS="9.0",
    )
    assert settings.provider_config("openai") == OpenAIConfig(
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
        (env(GENERATION_PROVIDER="openai", OPENAI_MODEL="m"), "OPENAI_API_KEY"),
        (env(GENERATION_PROVIDER="openai", OPENAI_API_KEY="k"), "OPENAI_MODEL"),
        (
            env(GENERATION_PROVIDER="offline", GENERATION_FALLBACK="openai", OPENAI_API_KEY="k"),
            "OPENAI_MODEL",
        ),
    ],
)
def test_openai_without_its_key_or_model_is_a_config_error(settings, missing) -> None:
    with pytest.raises(ConfigError, match=f"{missing} is not set"):
        wiring.build_provider(settings)


def test_every_provider_in_use_is_checked_before_start_up() -> None:
    from supervisor.config import require_api_key

    both = env(GENERATION_PROVIDER="gemini", GEMINI_API_KEY=VALID_KEY, GENERATION_FALLBACK="openai")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        require_api_key(both)
    ready = env(
        GENERATION_PROVIDER="openai",
        OPENAI_API_KEY="k",
        OPENAI_MODEL="m",
        GENERATION_FALLBACK="gemini",
    )
    with pytest.raises(ConfigError, match="no API key is set"):
        require_api_key(ready)
    assert require_api_key(Settings(provider="offline")) == ""


def test_a_fallback_builds_the_composite_with_hooks_per_provider() -> None:
    from generation.providers.fallback import FallbackProvider

    settings = env(
        GENERATION_PROVIDER="offline",
        GENERATION_FALLBACK="openai,offline",  # the primary named again is ignored
        OPENAI_API_KEY="k",
        OPENAI_MODEL="m",
        PROVIDER_PROBE_SECONDS="2.0",
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
    settings = env(AI_REQUESTS_PER_MINUTE="60", OPENAI_REQUESTS_PER_MINUTE="0")
    assert settings.requests_per_minute("gemini") == 60
    assert settings.requests_per_minute("openai") == 0
    assert Settings(ai_requests_per_minute=30).requests_per_minute("openai") == 30
