"""What /ready says about the models of every provider in use."""

from __future__ import annotations

from supervisor.arbiter.health_wiring import describe_models
from supervisor.config import Settings, load_settings


def test_the_models_of_every_provider_in_use_are_named():
    gemini = Settings(provider="gemini")
    assert describe_models(gemini) == "gemini: gemini-3.5-flash, gemini-embedding-001"
    both = load_settings(
        {"GENERATION_FALLBACK": "openai", "OPENAI_MODEL": "llama3.1"}, dotenv_path=None
    )
    assert describe_models(both).endswith("; openai: llama3.1")
    assert describe_models(Settings(provider="offline")) == "offline: no model to check"
