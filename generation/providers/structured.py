"""Answers in JSON, read the same way for every provider: one JSON object (a ```json
fence around it, as models in JSON mode or without a format tend to write, is taken
off), and the outline's checks on it."""

from __future__ import annotations

import json
import re
from typing import Any

from generation.errors import MalformedOutputError
from generation.types import Outline

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.I)


def json_object(text: str | None, label: str, what: str) -> dict[str, Any]:
    """The JSON object in `text`; else MalformedOutputError naming `what` it should
    have been ("the outline")."""
    raw = _FENCE.sub("", (text or "").strip())
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise MalformedOutputError(f"{label}: {what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedOutputError(f"{label}: {what} is not a JSON object")
    return data


def outline_from(data: dict[str, Any], bullet_count: int, label: str) -> Outline:
    """The outline in `data`: a non-empty title and exactly `bullet_count` non-empty
    bullets, stripped; else MalformedOutputError saying what is wrong with it."""
    title, bullets = data.get("title"), data.get("bullets")
    if not isinstance(title, str) or not title.strip():
        raise MalformedOutputError(f"{label}: the outline has no title")
    if not isinstance(bullets, list) or not all(isinstance(b, str) and b.strip() for b in bullets):
        raise MalformedOutputError(f"{label}: the outline bullets are not all non-empty strings")
    if len(bullets) != bullet_count:
        raise MalformedOutputError(
            f"{label}: the outline has {len(bullets)} bullets, expected {bullet_count}"
        )
    return Outline(title=title.strip(), bullets=tuple(b.strip() for b in bullets))
