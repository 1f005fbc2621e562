"""The documented entry point for running the health server apart from the supervisor:
`gunicorn 'supervisor.health_wiring:app_from_env()'`. It lives in the arbiter."""

from supervisor.arbiter.health_wiring import app_from_env, build_health_app

__all__ = ["app_from_env", "build_health_app"]
