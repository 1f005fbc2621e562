"""The JSON answers the story asks a provider for, and their shapes.

A `JsonAsk` is one request for one JSON object: the prompt, the object's JSON Schema,
a name for it, and about how many words it holds (its output limit). Providers send it
their own way (Gemini's responseSchema, OpenAI's json_schema response format and its
fallbacks) through one operation, `Provider.structured`; the outline keeps its own
operation but the same shape rules.

Schemas keep to what Gemini's responseSchema and OpenAI's strict structured output
both take: object (every property required, no others), array (minItems, maxItems),
string and integer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from generation.types import JsonAsk

__all__ = ["MEMORY", "OUTLINE", "JsonAsk", "memory_schema", "outline_schema"]

#: The outline's name on the wire (OpenAI's json_schema.name).
OUTLINE = "chapter_outline"
#: The chapter memory's name on the wire.
MEMORY = "chapter_memory"


def obj(**properties: Mapping[str, Any]) -> dict[str, Any]:
    """An object schema: every property required, no others."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties),
        "additionalProperties": False,
    }


def array(items: Mapping[str, Any], *, min_items: int = 0, max_items: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": dict(items), "maxItems": max_items}
    if min_items:
        schema["minItems"] = min_items
    return schema


STRING: Mapping[str, Any] = {"type": "string"}
INTEGER: Mapping[str, Any] = {"type": "integer"}


def outline_schema(bullet_count: int) -> dict[str, Any]:
    """The outline's JSON Schema: a title and exactly `bullet_count` bullets."""
    return obj(title=STRING, bullets=array(STRING, min_items=bullet_count, max_items=bullet_count))


def memory_schema(arc_entries: int, characters: int, facts: int) -> dict[str, Any]:
    """The chapter memory's JSON Schema: the chapter's summary, the rolling arc (at most
    `arc_entries` {chapter, gist}), the characters the chapter shows (at most
    `characters`) and the facts it establishes (at most `facts`)."""
    return obj(
        summary=STRING,
        arc=array(obj(chapter=INTEGER, gist=STRING), min_items=1, max_items=arc_entries),
        characters=array(obj(name=STRING, about=STRING, state=STRING), max_items=characters),
        facts=array(STRING, max_items=facts),
    )
