"""Logging: one line per event with stable keys, every secret masked (supervisor.redact).

Call sites log an event name plus fields: ``log.info("job claimed", extra=fields(job_id=…))``.
Text lines read ``2026-11-28T10:00:00Z INFO worker.process job claimed job_id=… attempt=1``;
``LOG_FORMAT=json`` makes each line one JSON object with the same keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from supervisor.redact import redact


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: the event's key/value pairs."""
    return {"sw_fields": values}


def _format_value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


def _masked(value: Any) -> Any:
    """`value` with every secret in its text masked (supervisor.redact), before any
    escaping that would hide a secret's text from the masking."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return redact(str(value))


class TextFormatter(logging.Formatter):
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + "Z"
        parts = [
            stamp,
            record.levelname,
            record.name.removeprefix("supervisor."),
            redact(record.getMessage()),
        ]
        parts += [
            f"{k}={_format_value(_masked(v))}" for k, v in getattr(record, "sw_fields", {}).items()
        ]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name.removeprefix("supervisor."),
            "event": record.getMessage(),
            "pid": record.process,
        }
        data.update(getattr(record, "sw_fields", {}))
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        # Masked before encoding: JSON's escapes (\" and \\) would hide a DSN's text.
        return json.dumps({k: _masked(v) for k, v in data.items()}, default=str)


def formatter_path(fmt: str) -> str:
    """Dotted path of the formatter for `fmt`, for logging.config users (gunicorn)."""
    return f"{__name__}.{'JsonFormatter' if fmt == 'json' else 'TextFormatter'}"


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send every log line to stderr in `fmt` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter (HTTP client request lines) carries URLs; keep it quiet.
    for noisy in ("httpx", "httpx2", "httpcore", "google_genai", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
