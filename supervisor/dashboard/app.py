"""The dashboard's Flask app, built by `create_app(config)` from what it is given:
a way to get a database connection, the token (or none), and its limits. Nothing
reaches it any other way; the DSN is not even in the config, so no page can show it.

Every response carries a strict Content-Security-Policy (scripts and styles from the
dashboard itself only), and every page is rendered with Jinja's autoescape, so user
content (titles, prose, error text) is always text.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import psycopg
from flask import Flask, Response, redirect, request

from supervisor.dashboard import actions, pages
from supervisor.dashboard.auth import Auth
from supervisor.dashboard.cache import TtlCache
from supervisor.dashboard.context import Context, DashboardConfig
from supervisor.errors import DatabaseError, InvalidStateError, JobNotFoundError

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(config: DashboardConfig) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    context = Context(config, Auth(config.token), TtlCache(config.slow_figures_seconds))
    _guard(app, context)
    pages.register(app, context)
    actions.register(app, context)
    _errors(app, context)
    return app


#: Reachable without the token: the login form and the dashboard's own files.
OPEN_PATHS = ("/login", "/static/")


def _guard(app: Flask, context: Context) -> None:
    @app.before_request
    def require_token() -> Any:
        if not context.auth.enabled or request.path.startswith(OPEN_PATHS):
            return None
        if context.session() is not None:
            return None
        if request.method == "GET" and request.headers.get("X-Dashboard-Live") != "1":
            target = quote(request.full_path.rstrip("?"), safe="")
            return redirect(f"/login?next={target}", 303)
        return Response("log in first\n", 401, mimetype="text/plain")

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def _errors(app: Flask, context: Context) -> None:
    @app.errorhandler(DatabaseError)
    @app.errorhandler(psycopg.Error)
    def unavailable(exc: Exception) -> tuple[str, int]:
        # The message stays in the log: it may name the database's host.
        log.warning("dashboard query failed", exc_info=exc)
        return context.render("error.html", code=503, message=UNAVAILABLE), 503

    @app.errorhandler(JobNotFoundError)
    def missing(exc: JobNotFoundError) -> tuple[str, int]:
        return context.render("error.html", code=404, message=str(exc)), 404

    @app.errorhandler(InvalidStateError)
    def conflict(exc: InvalidStateError) -> tuple[str, int]:
        return context.render("error.html", code=409, message=str(exc)), 409

    @app.errorhandler(404)
    def not_found(exc: Exception) -> tuple[str, int]:
        return context.render("error.html", code=404, message="no such page"), 404

    @app.errorhandler(405)
    def not_allowed(exc: Exception) -> tuple[str, int]:
        return context.render("error.html", code=405, message="method not allowed"), 405


UNAVAILABLE = (
    "The database did not answer (or refused the query). The dashboard's log says why;"
    " this page refreshes by itself."
)
