"""What the dashboard is built from (`DashboardConfig`) and what its routes share
(`Context`): apart from app.py, so the route modules it wires need not import it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg
from flask import render_template, request

from supervisor.dashboard.auth import Auth, Session
from supervisor.dashboard.cache import TtlCache


@dataclass(frozen=True)
class DashboardConfig:
    """Everything the app depends on."""

    #: A context manager yielding an autocommit connection with dict rows.
    connection: Callable[[], AbstractContextManager[psycopg.Connection]]
    #: DASHBOARD_TOKEN; None: read-only.
    token: str | None = None
    #: Statuses are counted exactly up to this, estimated above it.
    count_cap: int = 10_000
    #: Most jobs one bulk action changes.
    bulk_limit: int = 1000
    page_size: int = 50
    #: How often pages refresh themselves, and the job page's live text.
    refresh_ms: int = 2000
    text_refresh_ms: int = 400
    #: The Overview's costly, slow-changing figures are computed at most this often.
    slow_figures_seconds: float = 15.0


@dataclass(frozen=True)
class Context:
    """What the routes share: the config and the authorisation rules."""

    config: DashboardConfig
    auth: Auth
    cache: TtlCache

    def session(self) -> Session | None:
        return self.auth.session(request.cookies, request.headers)

    def render(self, template: str, **values: Any) -> str:
        """A page, or only its live part when the page's script asks for it."""
        session = self.session()
        live = request.headers.get("X-Dashboard-Live") == "1"
        return render_template(
            template,
            live_only=live,
            can_act=session is not None,
            token_set=self.auth.enabled,
            csrf=self.auth.csrf(session) if session else "",
            refresh_ms=self.config.refresh_ms,
            text_refresh_ms=self.config.text_refresh_ms,
            **values,
        )
