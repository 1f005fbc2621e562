"""A tiny client for `storyworker health`: GET /health, with the answer either way."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class HealthClientError(Exception):
    """The health server could not be reached or did not answer in JSON."""


def fetch_health(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of `url`; 503 answers are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HealthClientError(f"cannot reach {url}: {reason}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        raise HealthClientError(f"{url} answered HTTP {status} without JSON") from None
