"""Validation and sanitising of a job's `user_preferences`.

The rules, which `parse_preferences` enforces and the tests check by property:

- The value must be a JSON object (or null, which means "all defaults"). Unknown keys are
  ignored. A key whose value is null counts as absent and takes its default.
- Text is cleaned first, then measured: control characters, lone surrogates and bidi
  override characters are removed; in the short fields (genre, tone, pov, tense,
  language, character names, themes) every run of whitespace becomes one space; in the
  long free-text fields (setting, character descriptions, instructions) newlines and tabs
  are kept and line endings become "\\n". Surrounding whitespace is stripped.
- A cleaned string longer than its bound is an error naming the field; nothing is ever
  silently truncated, so the model never sees a story request cut in half.
- Blank text means "not given": a blank short field takes its default, a blank setting or
  instructions becomes None, a blank theme is dropped. A character's name is required.
- Integers must be JSON integers: booleans and decimal numbers such as 4.0 are rejected.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from generation.errors import InvalidPreferencesError

SHORT_TEXT_MAX = 100
SETTING_MAX = 1000
DESCRIPTION_MAX = 1000
INSTRUCTIONS_MAX = 4000
LIST_MAX_ITEMS = 12
BULLET_COUNT_RANGE = (1, 12)
WORDS_PER_BULLET_RANGE = (50, 2000)
#: How a chapter ends: leading on to the next (the default), on a cliffhanger, or
#: closing the story.
ENDINGS = ("hook", "cliffhanger", "resolve")

SHORT_FIELD_DEFAULTS: dict[str, str] = {
    "genre": "literary fiction",
    "tone": "immersive",
    "pov": "third person limited",
    "tense": "past",
    "language": "English",
}

# Bidi embedding/override/isolate marks and the BOM: invisible, and the classic way to
# make text read differently to a model (or a reviewer) than it is stored.
_INVISIBLE = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
)
# Characters that end a line in some convention; long fields turn them all into "\n".
_LINE_BREAKS = str.maketrans(
    {"\r": "\n", "\x0b": "\n", "\x0c": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n"}
)


@dataclass(frozen=True)
class Character:
    """A character the story should feature."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class Preferences:
    """Validated, cleaned preferences for one chapter; every field is within its bound."""

    genre: str = SHORT_FIELD_DEFAULTS["genre"]
    tone: str = SHORT_FIELD_DEFAULTS["tone"]
    pov: str = SHORT_FIELD_DEFAULTS["pov"]
    tense: str = SHORT_FIELD_DEFAULTS["tense"]
    language: str = SHORT_FIELD_DEFAULTS["language"]
    setting: str | None = None
    characters: tuple[Character, ...] = ()
    themes: tuple[str, ...] = ()
    instructions: str | None = None
    bullet_count: int = 4
    words_per_bullet: int = 300
    ending: str = ENDINGS[0]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with the same keys as `user_preferences`."""
        data = asdict(self)
        data["characters"] = [asdict(c) for c in self.characters]
        data["themes"] = list(self.themes)
        return data


def parse_preferences(raw: object) -> Preferences:
    """Validate a decoded `user_preferences` value and return clean `Preferences`.

    Raises `InvalidPreferencesError` naming the first offending field and its rule; no
    other exception escapes for any decoded JSON value.
    """
    if raw is None:
        return Preferences()
    if not isinstance(raw, Mapping):
        raise InvalidPreferencesError("", "must be a JSON object")
    short = {
        name: _short_text(raw.get(name), name) or default
        for name, default in SHORT_FIELD_DEFAULTS.items()
    }
    return Preferences(
        **short,
        setting=_long_text(raw.get("setting"), "setting", SETTING_MAX) or None,
        characters=_characters(raw.get("characters")),
        themes=_themes(raw.get("themes")),
        instructions=_long_text(raw.get("instructions"), "instructions", INSTRUCTIONS_MAX) or None,
        bullet_count=_integer(raw.get("bullet_count"), "bullet_count", 4, BULLET_COUNT_RANGE),
        words_per_bullet=_integer(
            raw.get("words_per_bullet"), "words_per_bullet", 300, WORDS_PER_BULLET_RANGE
        ),
        ending=_choice(raw.get("ending"), "ending", ENDINGS),
    )


def clean_short_text(text: str) -> str:
    """`text` on one line: whitespace runs collapsed to one space, invisible characters gone."""
    spaced = "".join(" " if ch.isspace() else ch for ch in text)
    return " ".join(_drop_invisible(spaced, keep="").split())


def clean_long_text(text: str) -> str:
    """`text` with "\\n" line endings, tabs and newlines kept, other invisibles gone."""
    unified = text.replace("\r\n", "\n").translate(_LINE_BREAKS)
    return _drop_invisible(unified, keep="\n\t").strip()


def _drop_invisible(text: str, *, keep: str) -> str:
    return "".join(
        ch
        for ch in text
        if ch in keep or (unicodedata.category(ch) not in ("Cc", "Cs") and ch not in _INVISIBLE)
    )


def _short_text(raw: object, field: str) -> str:
    return _checked_text(raw, field, SHORT_TEXT_MAX, clean_short_text)


def _long_text(raw: object, field: str, limit: int) -> str:
    return _checked_text(raw, field, limit, clean_long_text)


def _checked_text(raw: object, field: str, limit: int, clean: Callable[[str], str]) -> str:
    """The cleaned text, "" for null; an error if not a string or longer than `limit`."""
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise InvalidPreferencesError(field, f"must be a string of at most {limit} characters")
    cleaned = clean(raw)
    if len(cleaned) > limit:
        raise InvalidPreferencesError(
            field, f"must be at most {limit} characters long (got {len(cleaned)})"
        )
    return cleaned


def _integer(raw: object, field: str, default: int, bounds: tuple[int, int]) -> int:
    """`raw` as an int within `bounds`, `default` for null; bools and floats are errors."""
    if raw is None:
        return default
    low, high = bounds
    rule = f"must be an integer from {low} to {high}"
    # bool is a subclass of int, and 4.0 == 4, so both need saying out loud.
    if isinstance(raw, bool):
        raise InvalidPreferencesError(field, f"{rule}, not a boolean")
    if isinstance(raw, float):
        raise InvalidPreferencesError(field, f"{rule}, not a decimal number ({raw!r})")
    if not isinstance(raw, int) or not low <= raw <= high:
        raise InvalidPreferencesError(field, rule)
    return raw


def _choice(raw: object, field: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first for null), compared without case."""
    if raw is None:
        return choices[0]
    value = raw.strip().lower() if isinstance(raw, str) else None
    if value not in choices:
        raise InvalidPreferencesError(field, f"must be one of {', '.join(choices)}")
    return value


def _list(raw: object, field: str, what: str) -> list[object]:
    if raw is None:
        return []
    if not isinstance(raw, list | tuple):
        raise InvalidPreferencesError(field, f"must be a list of at most {LIST_MAX_ITEMS} {what}")
    if len(raw) > LIST_MAX_ITEMS:
        raise InvalidPreferencesError(
            field, f"must have at most {LIST_MAX_ITEMS} items (got {len(raw)})"
        )
    return list(raw)


def _characters(raw: object) -> tuple[Character, ...]:
    items = _list(raw, "characters", "objects with name and description")
    return tuple(_character(item, f"characters[{i}]") for i, item in enumerate(items))


def _character(raw: object, field: str) -> Character:
    if not isinstance(raw, Mapping):
        raise InvalidPreferencesError(field, "must be an object with name and description")
    name = _short_text(raw.get("name"), f"{field}.name")
    if not name:
        raise InvalidPreferencesError(
            f"{field}.name", f"must be a non-empty string of at most {SHORT_TEXT_MAX} characters"
        )
    description = _long_text(raw.get("description"), f"{field}.description", DESCRIPTION_MAX)
    return Character(name=name, description=description)


def _themes(raw: object) -> tuple[str, ...]:
    items = _list(raw, "themes", "strings")
    themes = (_theme(item, f"themes[{i}]") for i, item in enumerate(items))
    return tuple(theme for theme in themes if theme)


def _theme(raw: object, field: str) -> str:
    # Inside a list null is not "absent" but a wrong type.
    if raw is None:
        rule = f"must be a string of at most {SHORT_TEXT_MAX} characters"
        raise InvalidPreferencesError(field, rule)
    return _short_text(raw, field)
