"""A tiny client for `storyworker health`: GET /health, with the answer either way."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class HealthClientError(Exception):
    """The health server could not be reached or did not answer with a JSON object."""


def fetch_health(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of an http(s) `url`. Error statuses such as 503 are
    returned, not raised; HealthClientError when nothing answers within `timeout`
    seconds, or the answer is not a JSON object."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise HealthClientError(f"{url} is not an http:// or https:// URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        with err:
            status, raw = err.code, err.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc or type(exc).__name__
        raise HealthClientError(f"cannot reach {url}: {reason}") from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise HealthClientError(f"{url} answered HTTP {status} without JSON") from None
    if not isinstance(body, dict):
        raise HealthClientError(f"{url} answered HTTP {status} without a JSON object")
    return status, body
