"""The LISTEN probe, shared by the host listener (`supervisor.arbiter.listener`) and
a worker's own wait (`supervisor.worker.listener`).

Behind a transaction-mode pooler LISTEN may be accepted and never delivered, so
whoever LISTENs first proves it: a probe NOTIFY sent from another connection must come
back on the listening one, exactly as a new job's NOTIFY would arrive.
"""

from __future__ import annotations

import time
import uuid

import psycopg

from supervisor.db.connection import translated

#: The channel new jobs are announced on (`listen_jobs` in queries.sql).
CHANNEL = "generation_jobs"
PROBE_TIMEOUT_SECONDS = 2.0
PROBE_PREFIX = "probe:"


def probe_returns(
    conn: psycopg.Connection, probe: str, timeout: float = PROBE_TIMEOUT_SECONDS
) -> bool:
    """Whether our own probe arrives on the listening `conn` within `timeout`. Other
    notifications may come first (a sibling's probe, a new job's NOTIFY): look past
    them."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        with translated("waiting for the LISTEN probe"):
            for note in conn.notifies(timeout=remaining):
                if note.payload == probe:
                    return True
    return False


def probe_payload() -> str:
    """A probe's NOTIFY payload: unique, and never mistaken for a job."""
    return f"{PROBE_PREFIX}{uuid.uuid4()}"
