"""One frozen settings object, built once from the environment, `.env` and CLI flags.

Precedence: CLI flag > process environment > `.env` in the working directory >
default. Every value is validated here, so a bad one stops start-up with one clear
line before anything forks. Secrets never appear in an error or a repr.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from generation.providers import PROVIDER_NAMES
from generation.providers.openai_config import OPENAI_TIMEOUT_SECONDS
from generation.types import (
    GEMINI_API_VERSION,
    GEMINI_EMBEDDING_DIMENSIONS,
    GEMINI_EMBEDDING_MODEL,
    GEMINI_MODEL,
    GEMINI_TIMEOUT_SECONDS,
    SAFETY_THRESHOLDS,
    THINKING_LEVELS,
)
from supervisor.errors import ConfigError
from supervisor.redact import redact, redact_dsn

LOG_FORMATS = ("text", "json")
#: Most workers one supervisor runs (its heartbeat table's slots; TTIN stops there).
MAX_CONCURRENCY = 256
API_KEY_VARIABLES = ("GOOGLE_GENERATIVE_AI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")
OPENAI_KEY_VARIABLE = "OPENAI_API_KEY"


@dataclass(frozen=True)
class Settings:
    """Validated configuration. `repr()` hides the API key and the database password."""

    database_url: str | None = field(default=None, repr=False)
    #: A session-capable connection for the supervisor's one LISTEN per host (None:
    #: DATABASE_URL, when LISTEN is proven to work there).
    database_listen_url: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    provider: str = "gemini"
    gemini_model: str = GEMINI_MODEL
    gemini_embedding_model: str = GEMINI_EMBEDDING_MODEL
    gemini_base_url: str | None = None
    gemini_api_version: str = GEMINI_API_VERSION
    gemini_timeout_seconds: float = GEMINI_TIMEOUT_SECONDS
    embedding_dimensions: int = GEMINI_EMBEDDING_DIMENSIONS
    gemini_thinking_level: str | None = None
    gemini_safety_threshold: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_model: str | None = None
    openai_embedding_model: str | None = None
    openai_timeout_seconds: float = OPENAI_TIMEOUT_SECONDS
    #: The openai provider's own rate limit; None: AI_REQUESTS_PER_MINUTE.
    openai_requests_per_minute: int | None = None
    #: Providers tried in order after `provider` when it refuses or is at fault.
    fallback: tuple[str, ...] = ()
    provider_probe_seconds: float = 15.0
    offline_latency_ms: int = 0
    concurrency: int = 1
    poll_interval_ms: int = 5000
    max_retries: int = 3
    retry_backoff_seconds: float = 10.0
    lease_seconds: float = 60.0
    worker_timeout_seconds: float = 300.0
    shutdown_grace_seconds: float = 30.0
    ai_requests_per_minute: int = 60
    port: int = 3951
    health_host: str = "0.0.0.0"
    log_level: str = "INFO"
    log_format: str = "text"
    prepared_statements: bool = True
    listen: bool = True

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr
        )
        database, listen = redact_dsn(self.database_url), redact_dsn(self.database_listen_url)
        return f"Settings(database={database!r}, listen_database={listen!r}, {shown})"

    @property
    def providers_in_use(self) -> tuple[str, ...]:
        """GENERATION_PROVIDER, then each GENERATION_FALLBACK not already named."""
        return tuple(dict.fromkeys((self.provider, *self.fallback)))

    def requests_per_minute(self, provider: str) -> int:
        """The rate limit on `provider`'s requests (its own limiter; 0 = off)."""
        if provider == "openai" and self.openai_requests_per_minute is not None:
            return self.openai_requests_per_minute
        return self.ai_requests_per_minute

    def require_database(self) -> str:
        """The DSN, or a ConfigError saying it is missing."""
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (put it in the environment or .env)")
        return self.database_url

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with `changes` applied (None values ignored) and validated again."""
        changes = {k: v for k, v in changes.items() if v is not None}
        updated = dataclasses.replace(self, **changes)
        _validate(updated)
        return updated


class _Invalid(ValueError):
    """A parser's complaint; load_settings prefixes the variable's name."""


def _int(*, minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        try:
            value = int(raw.strip())
        except ValueError:
            raise _Invalid(f"must be an integer {bound}, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise _Invalid(f"must be an integer {bound}, got {value}")
        return value

    return parse


def _float(*, minimum: float, exclusive: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        op = ">" if exclusive else ">="
        try:
            value = float(raw.strip())
        except ValueError:
            raise _Invalid(f"must be a number {op} {minimum:g}, got {raw!r}") from None
        if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
            raise _Invalid(f"must be a number {op} {minimum:g}, got {raw.strip()}")
        return value

    return parse


def _choice(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}; got {raw!r}")
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise _Invalid(f"must be true or false, got {raw!r}")


def _text(raw: str) -> str | None:
    return raw.strip() or None


def _url(raw: str) -> str | None:
    value = raw.strip()
    if value and urlsplit(value).scheme not in ("http", "https"):
        raise _Invalid(f"must be an http(s) URL, got {value!r}")
    return value or None


def _providers(raw: str) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in raw.split(",") if name.strip())
    unknown = [name for name in names if name not in PROVIDER_NAMES]
    if unknown:
        known = ", ".join(PROVIDER_NAMES)
        raise _Invalid(f"names unknown providers {', '.join(unknown)}; expected some of {known}")
    return names


def _dsn(raw: str) -> str | None:
    value = raw.strip()
    if "://" in value and urlsplit(value).scheme not in ("postgres", "postgresql"):
        raise _Invalid(f"must be a postgresql:// URL or a key=value DSN, got {redact_dsn(value)!r}")
    if value:
        # libpq's own parser: a malformed DSN is the operator's mistake (78), not an
        # unreachable database (69, which systemd would retry forever).
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(value)
        except ProgrammingError as exc:
            detail = redact(" ".join(str(exc).split()), value)
            raise _Invalid(f"is not a valid connection string ({detail})") from None
    return value or None


_LEVELS = tuple(logging.getLevelNamesMapping())

#: environment variable -> (Settings field, parser)
VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DATABASE_URL": ("database_url", _dsn),
    "DATABASE_LISTEN_URL": ("database_listen_url", _dsn),
    "GENERATION_PROVIDER": ("provider", _choice(PROVIDER_NAMES)),
    "GEMINI_MODEL": ("gemini_model", _text),
    "GEMINI_EMBEDDING_MODEL": ("gemini_embedding_model", _text),
    "GEMINI_BASE_URL": ("gemini_base_url", _url),
    "GEMINI_API_VERSION": ("gemini_api_version", _text),
    "GEMINI_TIMEOUT_SECONDS": ("gemini_timeout_seconds", _float(minimum=0, exclusive=True)),
    "GEMINI_EMBEDDING_DIMENSIONS": ("embedding_dimensions", _int(minimum=1, maximum=3072)),
    "GEMINI_THINKING_LEVEL": ("gemini_thinking_level", _choice(THINKING_LEVELS)),
    "GEMINI_SAFETY_THRESHOLD": ("gemini_safety_threshold", _choice(SAFETY_THRESHOLDS, upper=True)),
    "OPENAI_BASE_URL": ("openai_base_url", _url),
    "OPENAI_MODEL": ("openai_model", _text),
    "OPENAI_EMBEDDING_MODEL": ("openai_embedding_model", _text),
    "OPENAI_TIMEOUT_SECONDS": ("openai_timeout_seconds", _float(minimum=0, exclusive=True)),
    "OPENAI_REQUESTS_PER_MINUTE": ("openai_requests_per_minute", _int(minimum=0)),
    "GENERATION_FALLBACK": ("fallback", _providers),
    "OFFLINE_LATENCY_MS": ("offline_latency_ms", _int(minimum=0)),
    "PROVIDER_PROBE_SECONDS": ("provider_probe_seconds", _float(minimum=0.1)),
    "WORKER_CONCURRENCY": ("concurrency", _int(minimum=1, maximum=MAX_CONCURRENCY)),
    "POLL_INTERVAL_MS": ("poll_interval_ms", _int(minimum=10)),
    "MAX_RETRIES": ("max_retries", _int(minimum=0, maximum=100)),
    "RETRY_BACKOFF_SECONDS": ("retry_backoff_seconds", _float(minimum=0)),
    "LEASE_SECONDS": ("lease_seconds", _float(minimum=1)),
    "WORKER_TIMEOUT_SECONDS": ("worker_timeout_seconds", _float(minimum=1)),
    "SHUTDOWN_GRACE_SECONDS": ("shutdown_grace_seconds", _float(minimum=0)),
    "AI_REQUESTS_PER_MINUTE": ("ai_requests_per_minute", _int(minimum=0)),
    "PORT": ("port", _int(minimum=0, maximum=65535)),
    "HEALTH_HOST": ("health_host", _text),
    "LOG_LEVEL": ("log_level", _choice(_LEVELS, upper=True)),
    "LOG_FORMAT": ("log_format", _choice(LOG_FORMATS)),
    "DATABASE_PREPARED_STATEMENTS": ("prepared_statements", _bool),
    "DATABASE_LISTEN": ("listen", _bool),
}


def read_environment(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> dict[str, str]:
    """The process environment laid over the `.env` file, when that file exists."""
    merged: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    dotenv_path: str | Path | None = ".env",
    **overrides: Any,
) -> Settings:
    """Build and validate Settings. Raises ConfigError with one clear line on bad input.

    `overrides` are CLI flags by field name; None means "not given".
    """
    env = read_environment(environ, dotenv_path)
    values: dict[str, Any] = {}
    for variable, (name, parse) in VARIABLES.items():
        raw = env.get(variable)
        if raw is not None and raw.strip() != "":
            try:
                parsed = parse(raw)
            except _Invalid as exc:
                raise ConfigError(f"{variable} {exc}") from None
            if parsed is not None:
                values[name] = parsed
    api_key = next((env[v].strip() for v in API_KEY_VARIABLES if env.get(v, "").strip()), None)
    # Read apart from VARIABLES: no parser's message may ever quote a key.
    openai_key = env.get(OPENAI_KEY_VARIABLE, "").strip() or None
    settings = Settings(api_key=api_key, openai_api_key=openai_key, **values)
    return settings.with_overrides(**overrides)


def _validate(settings: Settings) -> None:
    if settings.provider not in PROVIDER_NAMES:
        raise ConfigError(
            f"provider must be one of {', '.join(PROVIDER_NAMES)}; got {settings.provider!r}"
        )
    if not 1 <= settings.concurrency <= MAX_CONCURRENCY:
        raise ConfigError(
            f"concurrency must be from 1 to {MAX_CONCURRENCY}, got {settings.concurrency}"
        )
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"port must be from 0 to 65535, got {settings.port}")
    # WORKER_TIMEOUT_SECONDS and the providers' timeouts are independent: a worker
    # waiting inside a bounded request keeps beating (supervisor/worker/watch.py).


def require_api_key(settings: Settings) -> str:
    """What every provider in use (GENERATION_PROVIDER and GENERATION_FALLBACK) needs
    before start-up, or a ConfigError naming the variable to set; returns the primary
    provider's API key ("" for one that needs none)."""
    keys = [_provider_key(settings, name) for name in settings.providers_in_use]
    return keys[0]


def _provider_key(settings: Settings, provider: str) -> str:
    if provider == "gemini":
        return require_gemini_key(settings)
    if provider == "openai":
        return require_openai(settings)
    return ""


def require_openai(settings: Settings) -> str:
    """The openai provider's key, once its key and model are both set; else a
    ConfigError naming the one that is missing."""
    for variable, value in (
        (OPENAI_KEY_VARIABLE, settings.openai_api_key),
        ("OPENAI_MODEL", settings.openai_model),
    ):
        if not value:
            raise ConfigError(
                f"the openai provider is in use but {variable} is not set "
                "(any non-empty key will do for a local server)"
            )
    assert settings.openai_api_key is not None
    return settings.openai_api_key


def require_gemini_key(settings: Settings) -> str:
    """The Gemini API key, or a ConfigError naming the variables that may hold it."""
    if not settings.api_key:
        raise ConfigError(
            "GENERATION_PROVIDER is gemini but no API key is set "
            f"({' / '.join(API_KEY_VARIABLES)}); set one or use GENERATION_PROVIDER=offline"
        )
    return settings.api_key
