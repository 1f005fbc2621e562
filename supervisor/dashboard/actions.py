"""What changes state: logging in and out, and retry and cancel, of one job or of
every job matching the Jobs page's filter (counted first, at most a limit at a time).
Each job is changed exactly as `storyworker jobs retry/cancel ID` changes it.

Every state change is a POST that passes `Auth.same_origin`; without a token they
are all refused (read-only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from uuid import UUID

from flask import Flask, Response, redirect, request

from supervisor.dashboard import filters
from supervisor.dashboard.auth import COOKIE, safe_next
from supervisor.db import dashboard
from supervisor.errors import InvalidStateError

if TYPE_CHECKING:
    from supervisor.dashboard.context import Context

SESSION_SECONDS = 12 * 3600


def register(app: Flask, context: Context) -> None:
    _login(app, context)
    _single(app, context)
    _bulk(app, context)


def refused(context: Context) -> Response | None:
    """Why this POST may not change anything, as a response; None when it may."""
    session = context.session()
    if not context.auth.enabled:
        reason = "read-only: DASHBOARD_TOKEN is not set"
        return Response(reason + "\n", 403, mimetype="text/plain")
    host = request.host_url
    csrf = request.form.get("csrf")
    if session is None or not context.auth.same_origin(request.headers, host, session, csrf):
        reason = "refused: not from the dashboard's own pages, or not logged in"
        return Response(reason + "\n", 403, mimetype="text/plain")
    return None


def _login(app: Flask, context: Context) -> None:
    @app.get("/login")
    def login_form() -> Any:
        if not context.auth.enabled:
            return redirect("/", 303)
        return context.render("login.html", page="login", next=safe_next(request.args.get("next")))

    @app.post("/login")
    def login() -> Any:
        site = request.headers.get("Sec-Fetch-Site")
        if not context.auth.enabled or site not in (None, "same-origin"):
            return Response("refused\n", 403, mimetype="text/plain")
        target = safe_next(request.form.get("next"))
        if not context.auth.accepts(request.form.get("token", "")):
            page = context.render("login.html", page="login", next=target, wrong=True)
            return page, 403
        response = redirect(target, 303)
        response.set_cookie(
            COOKIE,
            context.auth.new_cookie(),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,
        )
        return response

    @app.post("/logout")
    def logout() -> Any:
        response = refused(context) or redirect("/login", 303)
        response.delete_cookie(COOKIE)
        return response


def _single(app: Flask, context: Context) -> None:
    @app.post("/jobs/<uuid:job_id>/<any(retry, cancel):action>")
    def one(job_id: UUID, action: str) -> Any:
        if (no := refused(context)) is not None:
            return no
        with context.config.connection() as conn:
            outcome = dashboard.act(conn, action, [job_id])
        if not outcome.changed:
            verb = {"retry": "retried", "cancel": "cancelled"}[action]
            raise InvalidStateError(f"job {job_id} cannot be {verb} now (its status changed)")
        return redirect(f"/jobs/{job_id}", 303)


def _bulk(app: Flask, context: Context) -> None:
    limit = context.config.bulk_limit

    @app.get("/jobs/bulk")
    def confirm() -> Any:
        action = request.args.get("action")
        if action not in dashboard.ACTIONABLE:
            return redirect("/jobs", 303)
        parsed = filters.parse(request.args)
        with context.config.connection() as conn:
            ids = dashboard.matching(conn, parsed.where, action, limit)
        return context.render(
            "bulk.html",
            page="jobs",
            action=action,
            parsed=parsed,
            count=min(len(ids), limit),
            more=len(ids) > limit,
            limit=limit,
            statuses=dashboard.ACTIONABLE[action],
        )

    @app.post("/jobs/bulk")
    def apply() -> Any:
        if (no := refused(context)) is not None:
            return no
        action = request.form.get("action")
        if action not in dashboard.ACTIONABLE:
            return Response("unknown action\n", 400, mimetype="text/plain")
        parsed = filters.parse(request.form)
        with context.config.connection() as conn:
            ids = dashboard.matching(conn, parsed.where, action, limit)[:limit]
            outcome = dashboard.act(conn, action, ids)
        done = {"done": action, "n": str(len(outcome.changed)), "skipped": str(outcome.skipped)}
        return redirect(f"/jobs?{urlencode({**parsed.args, **done})}", 303)
