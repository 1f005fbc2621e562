"""The health server: a Flask app (served by gunicorn) over the shared-memory
heartbeat table. It imports neither `generation` nor `supervisor`: the supervisor
hands it what it needs (the table, readiness checks, queue statistics)."""
