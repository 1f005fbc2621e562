"""Validation and sanitising of a job's `user_preferences`.

The rules, which `parse_preferences` enforces and the tests check by property:

- The value must be a JSON object (or null, which means "all defaults"). A key whose
  value is null counts as absent and takes its default. Unknown keys change nothing;
  `unknown_keys` names them, for the worker to record on the job.
- A story's own defaults (`sequences.preferences`) are merged under the job's
  (`resolve_preferences`): a key the job gives wins; a key it leaves out, null or blank
  text, takes the story's. The merged object is validated as one, and a bad value that
  came from the story is named as `sequences.preferences.<field>`.
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
  `temperature` is any JSON number from 0 to 2 (never a boolean, a string or NaN).
- `pov`, `tense` and `language` must be known values, brought to their canonical form
  (generation/story/known_values.py); `ending` and `content_rating` are choices.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from generation.errors import InvalidPreferencesError
from generation.story import known_values

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
#: How mature the chapter may be; on Gemini also the safety settings' threshold
#: (generation/providers/gemini_config.py).
CONTENT_RATINGS = ("general", "teen", "mature", "explicit")
STYLE_SAMPLE_MAX = 4000
CHAPTER_BEATS_MAX = 4000
TEMPERATURE_RANGE = (0.0, 2.0)
#: Unknown keys named on the job at most (each cut to SHORT_TEXT_MAX characters).
UNKNOWN_KEYS_MAX = 20

SHORT_FIELD_DEFAULTS: dict[str, str] = {
    "genre": "literary fiction",
    "tone": "immersive",
    "pov": "third person limited",
    "tense": "past",
    "language": "English",
}
#: The short fields that take known values: their normaliser and the rule when a value
#: is not one of them.
_KNOWN: dict[str, tuple[Callable[[str], str | None], str]] = {
    "pov": (known_values.pov, f"must be one of {', '.join(known_values.POV_VALUES)}"),
    "tense": (known_values.tense, f"must be one of {', '.join(known_values.TENSE_VALUES)}"),
    "language": (
        known_values.language,
        "must be a language name (such as English, French or 日本語) or a BCP 47 tag "
        "(such as en, pt-BR or zh-Hant-TW)",
    ),
}
#: Optional fields left out of `to_json` while unset, so a job that does not use them
#: is sent (and seeded, offline) exactly as before they existed.
_OPTIONAL = ("pov_character", "style_sample", "content_rating", "chapter_beats", "temperature")

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
    pov_character: str | None = None
    style_sample: str | None = None
    content_rating: str | None = None
    chapter_beats: str | None = None
    #: The sampling temperature of every generation request; None: the provider's.
    temperature: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with the same keys as `user_preferences` (the optional
        ones only when set)."""
        data = asdict(self)
        data["characters"] = [asdict(c) for c in self.characters]
        data["themes"] = list(self.themes)
        for name in _OPTIONAL:
            if data[name] is None:
                del data[name]
        return data


#: Every key `user_preferences` knows.
KNOWN_KEYS = frozenset(Preferences.__dataclass_fields__)


@dataclass(frozen=True)
class Resolved:
    """A job's preferences with its story's defaults under them, and the unknown keys
    the two objects held (for the job's record)."""

    preferences: Preferences
    unknown: tuple[str, ...] = field(default=())


def parse_preferences(raw: object) -> Preferences:
    """Validate a decoded `user_preferences` value and return clean `Preferences`.

    Raises `InvalidPreferencesError` naming the first offending field and its rule; no
    other exception escapes for any decoded JSON value.
    """
    if raw is None:
        return Preferences()
    if not isinstance(raw, Mapping):
        raise InvalidPreferencesError("", "must be a JSON object")
    return Preferences(
        **{name: _short_field(raw.get(name), name) or default
           for name, default in SHORT_FIELD_DEFAULTS.items()},
        setting=_long_text(raw.get("setting"), "setting", SETTING_MAX) or None,
        characters=_characters(raw.get("characters")),
        themes=_themes(raw.get("themes")),
        instructions=_long_text(raw.get("instructions"), "instructions", INSTRUCTIONS_MAX) or None,
        bullet_count=_integer(raw.get("bullet_count"), "bullet_count", 4, BULLET_COUNT_RANGE),
        words_per_bullet=_integer(
            raw.get("words_per_bullet"), "words_per_bullet", 300, WORDS_PER_BULLET_RANGE
        ),
        ending=_choice(raw.get("ending"), "ending", ENDINGS),
        pov_character=_short_text(raw.get("pov_character"), "pov_character") or None,
        style_sample=_long_text(raw.get("style_sample"), "style_sample", STYLE_SAMPLE_MAX)
        or None,
        content_rating=_optional_choice(
            raw.get("content_rating"), "content_rating", CONTENT_RATINGS
        ),
        chapter_beats=_long_text(raw.get("chapter_beats"), "chapter_beats", CHAPTER_BEATS_MAX)
        or None,
        temperature=_temperature(raw.get("temperature")),
    )  # fmt: skip


def resolve_preferences(job: object, story: object = None) -> Resolved:
    """The job's `user_preferences` merged over its story's defaults (`story`, the
    sequence's `preferences`; None: it has none), validated as one object.

    A key the job leaves out, sets to null or to blank text takes the story's value.
    Raises `InvalidPreferencesError`: a non-object, or a bad value, from the story is
    named as `sequences.preferences[.field]`; anything else as `user_preferences...`.
    """
    if story is None:
        return Resolved(parse_preferences(job), unknown_keys(job))
    if not isinstance(story, Mapping):
        raise InvalidPreferencesError("", "must be a JSON object", source=STORY_SOURCE)
    if job is not None and not isinstance(job, Mapping):
        raise InvalidPreferencesError("", "must be a JSON object")
    own = {key: value for key, value in (job or {}).items() if _given(value)}
    merged = {**{key: value for key, value in story.items() if _given(value)}, **own}
    try:
        preferences = parse_preferences(merged)
    except InvalidPreferencesError as exc:
        top = _TOP_KEY.match(exc.field)
        if top is None or top.group() in own:
            raise
        raise InvalidPreferencesError(exc.field, exc.rule, source=STORY_SOURCE) from None
    return Resolved(preferences, unknown_keys(merged))


def unknown_keys(raw: object) -> tuple[str, ...]:
    """The keys of `raw` (a decoded `user_preferences`) that no field reads, sorted and
    cleaned to one line; at most UNKNOWN_KEYS_MAX, each at most SHORT_TEXT_MAX long."""
    if not isinstance(raw, Mapping):
        return ()
    names = {clean_short_text(str(key))[:SHORT_TEXT_MAX] for key in raw if key not in KNOWN_KEYS}
    return tuple(sorted(names))[:UNKNOWN_KEYS_MAX]


#: How an error names a field that came from the story's defaults.
STORY_SOURCE = "sequences.preferences"
_TOP_KEY = re.compile(r"[^.\[]+")


def _given(value: object) -> bool:
    """Whether a job's value counts as given: not null, not blank text."""
    return value is not None and not (isinstance(value, str) and not clean_long_text(value))


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


def _short_field(raw: object, field: str) -> str:
    """A short field's text; `pov`, `tense` and `language` in their canonical form."""
    text = _short_text(raw, field)
    if not text or field not in _KNOWN:
        return text
    normalise, rule = _KNOWN[field]
    value = normalise(text)
    if value is None:
        raise InvalidPreferencesError(field, rule)
    return value


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


def _optional_choice(raw: object, field: str, choices: tuple[str, ...]) -> str | None:
    """One of `choices`, or None for null or blank text."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _choice(raw, field, choices)


def _temperature(raw: object) -> float | None:
    """A JSON number from 0 to 2 as a float; None for null."""
    if raw is None:
        return None
    low, high = TEMPERATURE_RANGE
    rule = f"must be a number from {low:g} to {high:g}"
    if isinstance(raw, bool):
        raise InvalidPreferencesError("temperature", f"{rule}, not a boolean")
    # NaN and the infinities fail the range test (and a huge integer never becomes a float).
    if not isinstance(raw, int | float) or not low <= raw <= high:
        raise InvalidPreferencesError("temperature", rule)
    return float(raw)


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
