"""The documented entry point for running the health server apart from the supervisor:
`gunicorn 'supervisor.health_wiring:app_from_env()'` (or `table_app_from_env()` for the heartbeat
table alone). It lives in the arbiter."""

from supervisor.arbiter.health_wiring import app_from_env, build_health_app, table_app_from_env

__all__ = ["app_from_env", "build_health_app", "table_app_from_env"]
