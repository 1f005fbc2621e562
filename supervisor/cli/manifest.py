"""What `jobs show` says of a job's `context`: per step, what its prompt held of the
story so far, so a team can answer "why did chapter 9 forget the sword?"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The key of `context` that names the job's unknown preference keys (not a step).
UNKNOWN_PREFERENCES = "unknown_preferences"
#: Keys of `context` that are about the chapter, not one step's prompt: how its
#: passages were retrieved, and how its memory was made after it was written.
RETRIEVAL, MEMORY = "retrieval", "memory"


def describe(context: Any) -> list[str]:
    """One line per step ("outline", "section 1", ...), in the order they ran."""
    if not isinstance(context, Mapping) or not context:
        return []
    steps = sorted((i for i in context.items() if i[0] != UNKNOWN_PREFERENCES), key=_order)
    return [f"{step}: {_DESCRIBE.get(step, _step)(manifest)}" for step, manifest in steps]


def unknown_preferences(context: Any) -> list[str]:
    """The keys of the job's preferences (and its story's) that no field reads."""
    keys = context.get(UNKNOWN_PREFERENCES) if isinstance(context, Mapping) else None
    return [str(key) for key in keys] if isinstance(keys, list) else []


def _order(item: tuple[str, Any]) -> tuple[int, int]:
    step = item[0]
    if step == RETRIEVAL:
        return (0, 1)
    if step == "outline":
        return (0, 0)
    number = step.rpartition(" ")[2]
    return (1, int(number)) if number.isdigit() else (2, 0)


def _retrieval(record: Any) -> str:
    """How the sections' passages were found."""
    if not isinstance(record, Mapping):
        return "?"
    if record.get("by") == "full-text+embeddings":
        found = record.get("similar_found", "?")
        return f"full-text search + embeddings ({record.get('embedding_model')}, {found} found)"
    error = record.get("embedding_error")
    return "full-text search" + (f" (the bullets' embedding failed: {error})" if error else "")


def _memory(record: Any) -> str:
    """How the story's memory was updated after the chapter, and at what cost."""
    if not isinstance(record, Mapping):
        return "?"
    cost = f"{record.get('elapsed_ms', '?')} ms"
    if record.get("input_tokens") is not None:
        cost += f", {record['input_tokens']} in / {record.get('output_tokens')} out tokens"
    if record.get("by") != "model":
        why = record.get("error") or "?"
        return f"extractive (the model's extraction failed: {why}); {cost}"
    names = ", ".join(record.get("characters") or []) or "none"
    arc = _numbers(record.get("arc_chapters"))
    return (
        f"by the model: characters {names}, {record.get('facts', 0)} facts, "
        f"arc of chapters {arc} ({record.get('arc_words', '?')} words); {cost}"
    )


def _step(manifest: Any) -> str:
    if not isinstance(manifest, Mapping):
        return "?"
    parts = [f"{manifest.get('used_tokens', '?')} of {manifest.get('budget_tokens', '?')} tokens"]
    parts += [text for text in map(lambda part: _part(part, manifest), _PARTS) if text]
    if manifest.get("stale_after") is not None:
        parts.append(f"memory stale after chapter {manifest['stale_after']}")
    return "; ".join(parts)


_PARTS = ("previous_ending", "summaries", "arc", "missing", "bible", "passages", "not_shown")


def _part(part: str, manifest: Mapping[str, Any]) -> str:
    record = manifest.get(part)
    if part == "not_shown":
        return f"not shown: chapters {_numbers(record)}" if record else ""
    if not isinstance(record, Mapping):
        return ""
    if part == "previous_ending":
        cut = ", cut" if record.get("cut") else ""
        return f"end of chapter {record.get('chapter')} ({record.get('characters')} chars{cut})"
    if part == "summaries" and record.get("chapters"):
        return f"summaries of chapters {_numbers(record['chapters'])}"
    if part == "arc" and record.get("chapters"):
        return f"arc of chapters {_numbers(record['chapters'])}"
    if part == "missing":
        return f"missing chapters {_numbers(record.get('chapters'))}"
    if part == "bible":
        names = ", ".join(record.get("characters") or []) or "none"
        return f"characters {names}, {record.get('facts', 0)} facts"
    if part == "passages":
        shown = record.get("shown") or []
        return "passages " + ", ".join(f"ch{p['chapter']}@{p['offset']}" for p in shown)
    return ""


_DESCRIBE = {RETRIEVAL: _retrieval, MEMORY: _memory}


def _numbers(numbers: Any) -> str:
    return ",".join(str(n) for n in numbers) if isinstance(numbers, list) else "?"
