"""The web dashboard (`storyworker dashboard`): Overview, Jobs, Job, Story and
Workers pages over the database, live, read-only unless DASHBOARD_TOKEN is set.

`create_app(DashboardConfig(...))` builds the Flask app from what it is given;
`serve(settings)` runs it under gunicorn after `require_safe(settings)`.
"""

from supervisor.dashboard.app import DashboardConfig, create_app
from supervisor.dashboard.server import require_free_port, require_safe, serve

__all__ = ["DashboardConfig", "create_app", "require_free_port", "require_safe", "serve"]
