"""Settings: every variable parsed, every bad value one clear error, no secret shown."""

from __future__ import annotations

import pytest

from supervisor.config import Settings, load_settings
from supervisor.errors import ConfigError
from supervisor.redact import redact_dsn

SECRET_DSN = "postgresql://app:hunter2-secret@db.example.com:5432/app"


def load(**env: str) -> Settings:
    return load_settings(env, dotenv_path=None)


def test_defaults_match_the_contract():
    s = load()
    assert (s.provider, s.concurrency, s.poll_interval_ms, s.max_retries) == ("gemini", 1, 5000, 3)
    assert (s.retry_backoff_seconds, s.lease_seconds, s.worker_timeout_seconds) == (10, 60, 300)
    assert (s.shutdown_grace_seconds, s.ai_requests_per_minute, s.port) == (30, 60, 3951)
    assert (s.health_host, s.log_level, s.log_format) == ("0.0.0.0", "INFO", "text")
    assert s.options("gemini").api_version == "v1beta" and s.options("offline").latency_ms == 0
    assert s.database_url is None and s.options("gemini").api_key is None


def test_every_variable_is_read():
    s = load(
        DATABASE_URL=SECRET_DSN,
        GOOGLE_GENERATIVE_AI_API_KEY="k1",
        GENERATION_PROVIDER="Offline",
        GEMINI_MODEL="m",
        GEMINI_EMBEDDING_MODEL="e",
        GEMINI_BASE_URL="http://127.0.0.1:9",
        GEMINI_API_VERSION="v1",
        OFFLINE_LATENCY_MS="5",
        WORKER_CONCURRENCY="4",
        POLL_INTERVAL_MS="250",
        MAX_RETRIES="0",
        RETRY_BACKOFF_SECONDS="0.5",
        LEASE_SECONDS="20",
        WORKER_TIMEOUT_SECONDS="40",
        SHUTDOWN_GRACE_SECONDS="3",
        AI_REQUESTS_PER_MINUTE="0",
        PORT="8080",
        HEALTH_HOST="127.0.0.1",
        LOG_LEVEL="debug",
        LOG_FORMAT="JSON",
        DATABASE_PREPARED_STATEMENTS="off",
        DATABASE_LISTEN="no",
    )
    gemini = s.options("gemini")
    assert s.database_url == SECRET_DSN and gemini.api_key == "k1" and s.provider == "offline"
    assert (gemini.model, gemini.embedding_model, gemini.api_version) == ("m", "e", "v1")
    assert gemini.base_url == "http://127.0.0.1:9" and s.options("offline").latency_ms == 5
    assert (s.concurrency, s.poll_interval_ms, s.max_retries) == (4, 250, 0)
    assert (s.retry_backoff_seconds, s.lease_seconds, s.worker_timeout_seconds) == (0.5, 20, 40)
    assert (s.shutdown_grace_seconds, s.ai_requests_per_minute, s.port) == (3, 0, 8080)
    assert (s.health_host, s.log_level, s.log_format) == ("127.0.0.1", "DEBUG", "json")
    assert s.prepared_statements is False and s.listen is False


@pytest.mark.parametrize("variable", ["GEMINI_API_KEY", "GOOGLE_API_KEY"])
def test_alternative_api_key_names(variable):
    assert load(**{variable: "abc"}).options("gemini").api_key == "abc"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"WORKER_CONCURRENCY": "four"},
            "WORKER_CONCURRENCY must be an integer from 1 to 256, got 'four'",
        ),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be an integer from 1 to 256, got 0"),
        ({"POLL_INTERVAL_MS": "-5"}, "POLL_INTERVAL_MS must be an integer >= 10, got -5"),
        (
            {"GENERATION_PROVIDER": "claude"},
            "GENERATION_PROVIDER must be one of gemini, offline, openai; got 'claude'",
        ),
        (
            {"GENERATION_FALLBACK": "openai, claude"},
            "GENERATION_FALLBACK names unknown providers claude; "
            "expected some of gemini, offline, openai",
        ),
        (
            {"OPENAI_TIMEOUT_SECONDS": "0"},
            "OPENAI_TIMEOUT_SECONDS must be a number > 0, got 0",
        ),
        ({"MAX_RETRIES": "1.5"}, "MAX_RETRIES must be an integer from 0 to 100, got '1.5'"),
        ({"RETRY_BACKOFF_SECONDS": "nan"}, "RETRY_BACKOFF_SECONDS must be a number >= 0, got nan"),
        ({"LEASE_SECONDS": "soon"}, "LEASE_SECONDS must be a number >= 1, got 'soon'"),
        ({"PORT": "70000"}, "PORT must be an integer from 0 to 65535, got 70000"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of text, json; got 'xml'"),
        (
            {"DATABASE_PREPARED_STATEMENTS": "maybe"},
            "DATABASE_PREPARED_STATEMENTS must be true or false, got 'maybe'",
        ),
        ({"GEMINI_BASE_URL": "ftp://x"}, "GEMINI_BASE_URL must be an http(s) URL, got 'ftp://x'"),
    ],
)
def test_bad_values_give_one_clear_line(env, message):
    with pytest.raises(ConfigError) as info:
        load(**env)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_flags_override_the_environment():
    s = load_settings({"WORKER_CONCURRENCY": "2"}, dotenv_path=None, concurrency=5, port=None)
    assert s.concurrency == 5 and s.port == 3951
    for wrong in (0, 257):  # the flag has the variable's bounds
        with pytest.raises(ConfigError, match="concurrency must be from 1 to 256"):
            load_settings({}, dotenv_path=None, concurrency=wrong)


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("WORKER_CONCURRENCY=3\nPORT=4000\n")
    s = load_settings({"PORT": "5000"}, dotenv_path=dotenv)
    assert s.concurrency == 3 and s.port == 5000


def test_secrets_never_show():
    s = load(DATABASE_URL=SECRET_DSN, GEMINI_API_KEY="AIzaSy-very-secret")
    for text in (repr(s), str(s)):
        assert "hunter2" not in text and "AIzaSy" not in text
    assert "db.example.com" in repr(s)
    assert redact_dsn(SECRET_DSN) == "postgresql://app:***@db.example.com:5432/app"
    assert redact_dsn("host=x password=hunter2 user=u") == "host=x password=*** user=u"
    with pytest.raises(ConfigError) as info:
        load(DATABASE_URL="mysql://u:hunter2@h/db")
    assert "hunter2" not in str(info.value)


def test_missing_database_url_is_a_config_error():
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        load().require_database()


def test_the_worker_timeout_is_independent_of_the_providers_timeout():
    # A worker inside a bounded request keeps beating (supervisor/worker/watch.py), so a
    # short WORKER_TIMEOUT_SECONDS no longer has to exceed GEMINI_TIMEOUT_SECONDS.
    s = load(WORKER_TIMEOUT_SECONDS="5", GENERATION_PROVIDER="gemini")
    assert s.worker_timeout_seconds == 5 and s.options("gemini").timeout_seconds == 120
