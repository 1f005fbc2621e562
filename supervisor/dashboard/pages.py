"""The read-only pages: Overview, Jobs, Job (and its live text), Story, Workers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flask import Flask, abort, jsonify, request

from supervisor.dashboard import charts, filters, timeline
from supervisor.db import dashboard, registry
from supervisor.errors import JobNotFoundError

if TYPE_CHECKING:
    from supervisor.dashboard.cache import TtlCache
    from supervisor.dashboard.context import Context

HOUR, DAY = 3600, 86400
TOP_USERS = 10
WAITING_SHOWN = 10
#: Beyond any chapter's length (an int4 for PostgreSQL's substr).
MAX_OFFSET = 2**30


def register(app: Flask, context: Context) -> None:
    _lists(app, context)
    _job(app, context)
    _story_and_workers(app, context)


def _lists(app: Flask, context: Context) -> None:
    connection = context.config.connection

    @app.get("/")
    def overview() -> str:
        with connection() as conn:
            values = overview_values(conn, context.config.count_cap, context.cache)
        return context.render(
            "overview.html",
            page="overview",
            slow_seconds=context.config.slow_figures_seconds,
            **values,
        )

    @app.get("/jobs")
    def jobs() -> str:
        parsed = filters.parse(request.args)
        with connection() as conn:
            found = dashboard.jobs(conn, parsed.where, context.config.page_size, parsed.after)
        return context.render(
            "jobs.html",
            page="jobs",
            parsed=parsed,
            found=found,
            statuses=dashboard.STATUSES,
            notice=_notice(request.args),
        )


def _job(app: Flask, context: Context) -> None:
    connection = context.config.connection

    @app.get("/jobs/<uuid:job_id>")
    def job(job_id: UUID) -> str:
        with connection() as conn:
            row = dashboard.job(conn, job_id)
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return context.render("job.html", page="jobs", **timeline.describe(row))

    @app.get("/jobs/<uuid:job_id>/text")
    def text(job_id: UUID) -> Any:
        offset = request.args.get("offset", "0")
        offset_value = min(int(offset), MAX_OFFSET) if offset.isdigit() else 0
        with connection() as conn:
            row = dashboard.text_since(conn, job_id, offset_value)
        if row is None:
            return jsonify(error="no such job"), 404
        return jsonify(row)


def _story_and_workers(app: Flask, context: Context) -> None:
    connection = context.config.connection

    @app.get("/stories/<uuid:sequence_id>")
    def story(sequence_id: UUID) -> str:
        with connection() as conn:
            found = dashboard.story(conn, sequence_id)
            if found is None:
                abort(404)
            rows = dashboard.chapters(conn, sequence_id)
        return context.render("story.html", page="jobs", story=found, chapters=rows)

    @app.get("/workers")
    def workers() -> str:

        with connection() as conn:
            found = registry.view(conn)
            limits = registry.rate_limits(conn)
        return context.render("workers.html", page="workers", supervisors=found, limits=limits)


def overview_values(conn: Any, cap: int, cache: TtlCache) -> dict[str, Any]:
    """Everything the Overview shows: counts, the last hour and the registry fresh,
    the rest from `cache` (see `slow_figures`)."""

    hour = dashboard.series(conn, HOUR, 300)
    slow, computed = cache.get("overview", lambda: slow_figures(conn))
    day = slow["day"]
    return {
        **slow,
        "slow_at": datetime.fromtimestamp(computed, UTC).strftime("%H:%M:%S UTC"),
        "counts": dashboard.status_counts(conn, cap),
        "cap": cap,
        "oldest": dashboard.oldest_pending_seconds(conn),
        "charts": [
            charts.throughput("Jobs ended, last hour (5 min)", hour.completed, hour.failed, 300),
            charts.latency(
                "Queue latency, last hour (5 min)", hour.latency_p50, hour.latency_p95, 300
            ),
            charts.throughput("Jobs ended, last day (1 h)", day.completed, day.failed, HOUR),
            charts.latency("Queue latency, last day (1 h)", day.latency_p50, day.latency_p95, HOUR),
        ],
        "ended_hour": (sum(hour.completed), sum(hour.failed)),
        "ended_day": (sum(day.completed), sum(day.failed)),
        "supervisors": registry.view(conn),
    }


def slow_figures(conn: Any) -> dict[str, Any]:
    """What changes slowly and costs most at millions of jobs: the day's series and
    tokens, the backlog, and the jobs waiting on an earlier chapter."""
    waiting_total, waiting = dashboard.waiting(conn, WAITING_SHOWN)
    return {
        "day": dashboard.series(conn, DAY, HOUR),
        "waiting_total": waiting_total,
        "waiting": waiting,
        "backlog": dashboard.backlog(conn, TOP_USERS),
        "tokens": dashboard.tokens(conn, DAY),
    }


#: What a finished bulk action says, by its `done` argument.
DONE = {"retry": "Retried", "cancel": "Cancelled"}


def _notice(args: Any) -> str | None:
    done, count = args.get("done"), args.get("n", "")
    if done not in DONE or not count.isdigit():
        return None
    skipped = args.get("skipped", "0")
    extra = f" ({skipped} had changed meanwhile)" if skipped.isdigit() and skipped != "0" else ""
    return f"{DONE[done]} {int(count):,} job{'s' if count != '1' else ''}{extra}."
