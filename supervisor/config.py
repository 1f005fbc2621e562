"""One frozen settings object, built once from the environment, `.env` and CLI flags.

Precedence: CLI flag > process environment > `.env` in the working directory >
default. Every value is validated here, so a bad one stops start-up with one clear
line before anything forks. Secrets never appear in an error or a repr.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from generation.providers import REGISTRY, entry
from generation.settings import (
    Invalid,
    boolean,
    choice,
    declared,
    integer,
    number,
    options,
    read,
    setting,
    text,
)
from generation.types import DEFAULT_BUDGET_TOKENS
from supervisor.dsn import problem as dsn_problem
from supervisor.errors import ConfigError
from supervisor.redact import redact_dsn, remember

LOG_FORMATS = ("text", "json")
#: Most workers one supervisor runs (its heartbeat table's slots; TTIN stops there).
MAX_CONCURRENCY = 256
_LEVELS = tuple(logging.getLevelNamesMapping())


def _providers(raw: str) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in raw.split(",") if name.strip())
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        known = ", ".join(REGISTRY)
        raise Invalid(f"names unknown providers {', '.join(unknown)}; expected some of {known}")
    return names


def _provider(raw: str) -> str:
    return choice(tuple(REGISTRY))(raw)


def _dsn(raw: str) -> str | None:
    value = raw.strip()
    if "://" in value and urlsplit(value).scheme not in ("postgres", "postgresql"):
        raise Invalid(f"must be a postgresql:// URL or a key=value DSN, got {redact_dsn(value)!r}")
    # A malformed DSN (an unencoded @ or / in the password, a port that is no number)
    # is the operator's mistake (78), not an unreachable database (69, which systemd
    # would retry forever). The reason never quotes the DSN.
    wrong = dsn_problem(value) if value else None
    if wrong:
        raise Invalid(f"{wrong}: {redact_dsn(value)}")
    return value or None


@dataclass(frozen=True)
class Settings:
    """Validated configuration: the service's own settings, each declared once with its
    variable, parser and meaning, and every registered provider's options as read
    (`provider_options`: provider -> field -> value, declared by its config class).
    `repr()` hides the API keys and the database password."""

    database_url: str | None = setting(
        "DATABASE_URL", _dsn, doc="Postgres DSN", default=None, shown=False
    )
    #: A session-capable connection for the supervisor's one LISTEN per host (None:
    #: DATABASE_URL, when LISTEN is proven to work there).
    database_listen_url: str | None = setting(
        "DATABASE_LISTEN_URL", _dsn, doc="the host's LISTEN connection", default=None, shown=False
    )
    provider: str = setting(
        "GENERATION_PROVIDER", _provider, doc="the provider", default="gemini"
    )
    #: Providers tried in order after `provider` when it refuses or is at fault.
    fallback: tuple[str, ...] = setting(
        "GENERATION_FALLBACK", _providers, doc="providers asked after it", default=()
    )
    provider_options: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict, repr=False
    )
    provider_probe_seconds: float = setting(
        "PROVIDER_PROBE_SECONDS", number(minimum=0.1), doc="first probe wait", default=15.0
    )
    concurrency: int = setting(
        "WORKER_CONCURRENCY",
        integer(minimum=1, maximum=MAX_CONCURRENCY),
        doc="worker processes",
        default=1,
    )
    poll_interval_ms: int = setting(
        "POLL_INTERVAL_MS", integer(minimum=10), doc="fallback poll", default=5000
    )
    max_retries: int = setting(
        "MAX_RETRIES", integer(minimum=0, maximum=100), doc="retries", default=3
    )
    retry_backoff_seconds: float = setting(
        "RETRY_BACKOFF_SECONDS", number(minimum=0), doc="retry backoff base", default=10.0
    )
    lease_seconds: float = setting(
        "LEASE_SECONDS", number(minimum=1), doc="job lease", default=60.0
    )
    worker_timeout_seconds: float = setting(
        "WORKER_TIMEOUT_SECONDS", number(minimum=1), doc="stale worker", default=300.0
    )
    shutdown_grace_seconds: float = setting(
        "SHUTDOWN_GRACE_SECONDS", number(minimum=0), doc="grace on TERM", default=30.0
    )
    ai_requests_per_minute: int = setting(
        "AI_REQUESTS_PER_MINUTE", integer(minimum=0), doc="shared rate limit", default=60
    )
    port: int = setting(
        "PORT", integer(minimum=0, maximum=65535), doc="health server port", default=3951
    )
    health_host: str = setting("HEALTH_HOST", text, doc="health address", default="0.0.0.0")
    dashboard_host: str = setting(
        "DASHBOARD_HOST", text, doc="`storyworker dashboard` address", default="127.0.0.1"
    )
    dashboard_port: int = setting(
        "DASHBOARD_PORT", integer(minimum=0, maximum=65535), doc="dashboard port", default=3952
    )
    #: Actions (and, when set, every page) need it; None: a read-only dashboard.
    dashboard_token: str | None = setting(
        "DASHBOARD_TOKEN", doc="dashboard token", default=None, secret=True
    )
    log_level: str = setting(
        "LOG_LEVEL", choice(_LEVELS, upper=True), doc="log level", default="INFO"
    )
    log_format: str = setting(
        "LOG_FORMAT", choice(LOG_FORMATS), doc="text or json", default="text"
    )
    prepared_statements: bool = setting(
        "DATABASE_PREPARED_STATEMENTS", boolean, doc="prepared statements", default=True
    )
    listen: bool = setting("DATABASE_LISTEN", boolean, doc="LISTEN/NOTIFY", default=True)
    database_wait_seconds: float = setting(
        "DATABASE_WAIT_SECONDS",
        number(minimum=0),
        doc="how long run waits at start for an unavailable database (0: not at all)",
        default=60.0,
    )
    context_budget_tokens: int = setting(
        "CONTEXT_BUDGET_TOKENS",
        integer(minimum=500, maximum=1_000_000),
        doc="what a prompt may hold of the story so far, in (estimated) tokens",
        default=DEFAULT_BUDGET_TOKENS,
    )
    live_text: str = setting(
        "LIVE_TEXT", choice(("row", "broadcast")), doc="live text: row or broadcast", default="row"
    )
    live_text_interval_ms: int = setting(
        "LIVE_TEXT_INTERVAL_MS",
        integer(minimum=10, maximum=60_000),
        doc="broadcast: at most one delta per interval",
        default=250,
    )
    #: At most this many jobs of one user in flight on every host (None: no cap).
    max_jobs_per_user: int | None = setting(
        "MAX_JOBS_PER_USER", integer(minimum=1), doc="jobs in flight per user", default=None
    )

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

    def options(self, provider: str) -> Any:
        """Provider `provider`'s options by attribute, defaults filled in, without
        validating them (that is `provider_config`'s job)."""
        return options(entry(provider).config_class, self.provider_options.get(provider, {}))

    def provider_config(self, provider: str) -> Any:
        """Provider `provider`'s own config object, built from its options; a
        ConfigError naming the variable when one it requires is not set."""
        config_class = entry(provider).config_class
        values = self.provider_options.get(provider, {})
        for name, variable in declared(config_class):
            if variable.missing and not values.get(name):
                why = variable.missing.format(names=" / ".join(variable.names))
                raise ConfigError(f"the {provider} provider is in use but {why}")
        try:
            return config_class(**values)
        except ValueError as exc:
            raise ConfigError(f"the {provider} provider: {exc}") from None

    def requests_per_minute(self, provider: str) -> int:
        """The rate limit on `provider`'s requests (its own limiter; 0 = off)."""
        own = getattr(self.options(provider), "requests_per_minute", None)
        return self.ai_requests_per_minute if own is None else own

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


def variables() -> list[str]:
    """Every environment variable read, the service's and each provider's, for the
    README's configuration table (tested against it)."""
    classes = [Settings, *(item.config_class for item in REGISTRY.values())]
    return [name for cls in classes for _, v in declared(cls) for name in v.names]


def parse_variable(variable: str, raw: str, *, label: str | None = None) -> Any:
    """`raw` read as the service's `variable` is read (for a flag that stands for it);
    a ConfigError naming `label` (default: the variable) when it is wrong."""
    for _, declared_variable in declared(Settings):
        if variable in declared_variable.names:
            try:
                return declared_variable.parse(raw)
            except Invalid as exc:
                raise ConfigError(f"{label or variable} {exc}") from None
    raise KeyError(variable)


def _remember_secrets(env: Mapping[str, str]) -> None:
    """Every DSN variable's value and every secret variable's (the providers' keys)
    become secrets `redact` masks wherever this process prints them."""
    classes = [Settings, *(item.config_class for item in REGISTRY.values())]
    found = [v for cls in classes for _, v in declared(cls)]
    remember(
        dsns=(env.get(name) for v in found if v.parse is _dsn for name in v.names),
        keys=(env.get(name) for v in found if v.secret for name in v.names),
    )


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
    _remember_secrets(env)
    try:
        values = read(Settings, env)
        provider_options = {name: read(e.config_class, env) for name, e in REGISTRY.items()}
    except Invalid as exc:
        raise ConfigError(str(exc)) from None
    settings = Settings(provider_options=provider_options, **values)
    return settings.with_overrides(**overrides)


def _validate(settings: Settings) -> None:
    if settings.provider not in REGISTRY:
        raise ConfigError(
            f"provider must be one of {', '.join(REGISTRY)}; got {settings.provider!r}"
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
    configs = [settings.provider_config(name) for name in settings.providers_in_use]
    return getattr(configs[0], "api_key", "")
