"""Streams of text, as providers hand them out and the writer reads them."""

from __future__ import annotations

from typing import Any


def close(stream: Any) -> None:
    """Close a stream (a generator, an SDK's response iterator) now: its finally blocks
    run (HTTP responses released, call records reported) now rather than whenever it is
    garbage collected. Anything without a close() is left alone."""
    closer = getattr(stream, "close", None)
    if callable(closer):
        closer()
