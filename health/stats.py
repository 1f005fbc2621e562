"""What the health app is told about the queue, by whoever owns the database (the
supervisor's wiring): a plain value, so that neither side imports the other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class QueueStats:
    """What the queue looks like: jobs per status, and how long the oldest job that
    could run now has waited (None when there is none)."""

    depth_by_status: Mapping[str, int]
    oldest_runnable_age_seconds: float | None
