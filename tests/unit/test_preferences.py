"""user_preferences validation: properties over any JSON, and each field's rules."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.errors import InvalidPreferencesError
from generation.story.known_values import POV_VALUES, TENSE_VALUES
from generation.story.preferences import (
    SHORT_FIELD_DEFAULTS,
    Character,
    Preferences,
    parse_preferences,
)

SHORT_FIELDS = tuple(SHORT_FIELD_DEFAULTS)
NEW_KEYS = ("pov_character", "style_sample", "content_rating", "chapter_beats", "temperature")
FIELD_NAME = re.compile(
    r"^user_preferences(\.(genre|tone|pov|tense|language|setting|instructions|bullet_count"
    r"|words_per_bullet|characters|characters\[\d+\](\.(name|description))?|themes"
    r"|themes\[\d+\]|ending|pov_character|style_sample|content_rating|chapter_beats"
    r"|temperature))? "
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats()
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
# Text rich in what cleaning must handle: controls, line breaks, bidi marks, surrogates.
nasty_text = st.text(
    alphabet=st.characters(codec=None)
    | st.sampled_from("\x00\x07\x1b\x7f\x85\t\n\r\x0b\x0c \u00a0\u2028\u202e\u200b\ufeff"),
    max_size=130,
)
# Long runs around the bounds, built cheaply (hypothesis shrinks these poorly otherwise).
long_text = st.builds(
    lambda unit, count, tail: unit * count + tail,
    st.sampled_from(["ab ", "a\n", "x\x00", "yy", "\t"]),
    st.integers(min_value=30, max_value=2100),
    nasty_text,
)
field_values = st.one_of(json_values, nasty_text, long_text)


@st.composite
def preference_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Objects whose known keys get plausible, borderline and hostile values."""
    keys = [
        *SHORT_FIELDS,
        *NEW_KEYS,
        "setting",
        "instructions",
        "bullet_count",
        "words_per_bullet",
        "ending",
    ]
    obj: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    for key in draw(st.lists(st.sampled_from(keys), unique=True)):
        obj[key] = draw(field_values | st.integers(min_value=-5, max_value=2100))
    if draw(st.booleans()):
        character = st.fixed_dictionaries(
            {}, optional={"name": field_values, "description": field_values}
        )
        obj["characters"] = draw(st.lists(character | json_values, max_size=14))
    if draw(st.booleans()):
        obj["themes"] = draw(st.lists(nasty_text | json_values, max_size=14))
    return obj


def assert_clean(text: str, limit: int, *, multiline: bool) -> None:
    allowed = "\n\t" if multiline else ""
    assert len(text) <= limit
    assert text == text.strip()
    for char in text:
        category = unicodedata.category(char)
        assert char in allowed or category not in ("Cc", "Cs"), repr(char)
        assert char not in "\u202e\ufeff"
    if not multiline:
        assert "  " not in text
        assert not any(c.isspace() and c != " " for c in text)


def assert_valid(prefs: Preferences) -> None:
    for name in SHORT_FIELDS:
        value = getattr(prefs, name)
        assert value
        assert_clean(value, 100, multiline=False)
    if prefs.setting is not None:
        assert prefs.setting
        assert_clean(prefs.setting, 1000, multiline=True)
    if prefs.instructions is not None:
        assert prefs.instructions
        assert_clean(prefs.instructions, 4000, multiline=True)
    assert len(prefs.characters) <= 12
    for character in prefs.characters:
        assert character.name
        assert_clean(character.name, 100, multiline=False)
        assert_clean(character.description, 1000, multiline=True)
    assert len(prefs.themes) <= 12
    for theme in prefs.themes:
        assert theme
        assert_clean(theme, 100, multiline=False)
    assert type(prefs.bullet_count) is int and 1 <= prefs.bullet_count <= 12
    assert type(prefs.words_per_bullet) is int and 50 <= prefs.words_per_bullet <= 2000
    assert prefs.pov in POV_VALUES and prefs.tense in TENSE_VALUES
    for name, limit, multiline in (
        ("pov_character", 100, False),
        ("style_sample", 4000, True),
        ("chapter_beats", 4000, True),
    ):
        value = getattr(prefs, name)
        assert value is None or (value and assert_clean(value, limit, multiline=multiline) is None)
    assert prefs.content_rating in (None, "general", "teen", "mature", "explicit")
    assert prefs.temperature is None or (
        type(prefs.temperature) is float and 0 <= prefs.temperature <= 2
    )
    json.dumps(prefs.to_json(), allow_nan=False)


def check_any(raw: object) -> None:
    try:
        prefs = parse_preferences(raw)
    except InvalidPreferencesError as exc:
        assert FIELD_NAME.match(str(exc)), str(exc)
        assert str(exc).startswith(f"user_preferences.{exc.field} " if exc.field else "user_")
    else:
        assert_valid(prefs)


@settings(max_examples=300)
@given(json_values)
def test_any_json_value_validates_or_names_a_field(raw: object) -> None:
    check_any(raw)


@settings(max_examples=300)
@given(preference_objects())
def test_targeted_objects_validate_or_name_a_field(raw: dict[str, Any]) -> None:
    check_any(raw)


@given(nasty_text)
def test_text_is_cleaned_within_bounds(text: str) -> None:
    check_any({"genre": text, "themes": [text], "characters": [{"name": text}]})
    check_any(
        {"setting": text, "instructions": text, "characters": [{"name": "a", "description": text}]}
    )


def test_defaults() -> None:
    assert parse_preferences(None) == Preferences()
    assert parse_preferences({}) == Preferences()
    prefs = Preferences()
    assert (prefs.genre, prefs.tone, prefs.pov, prefs.tense, prefs.language) == (
        "literary fiction",
        "immersive",
        "third person limited",
        "past",
        "English",
    )
    assert (prefs.bullet_count, prefs.words_per_bullet) == (4, 300)
    assert prefs.setting is None and prefs.instructions is None
    assert prefs.characters == () and prefs.themes == ()


def test_unknown_keys_and_nulls_are_ignored() -> None:
    prefs = parse_preferences({"mood": 3, "genre": None, "bullet_count": None, "x": [1]})
    assert prefs == Preferences()


@pytest.mark.parametrize("raw", [[], "genre", 4, 4.5, True])
def test_non_object_is_rejected(raw: object) -> None:
    with pytest.raises(InvalidPreferencesError) as info:
        parse_preferences(raw)
    assert str(info.value) == "user_preferences must be a JSON object"


def test_bullet_count_exact_message() -> None:
    with pytest.raises(InvalidPreferencesError) as info:
        parse_preferences({"bullet_count": 13})
    assert str(info.value) == "user_preferences.bullet_count must be an integer from 1 to 12"
    assert info.value.field == "bullet_count"
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("value", "suffix"),
    [
        (0, ""),
        (-1, ""),
        ("4", ""),
        ([4], ""),
        (True, ", not a boolean"),
        (4.0, ", not a decimal number (4.0)"),
    ],
)
def test_bullet_count_rejections(value: object, suffix: str) -> None:
    with pytest.raises(InvalidPreferencesError) as info:
        parse_preferences({"bullet_count": value})
    assert str(info.value) == (
        f"user_preferences.bullet_count must be an integer from 1 to 12{suffix}"
    )


@pytest.mark.parametrize("value", [1, 12])
def test_bullet_count_bounds_are_inclusive(value: int) -> None:
    assert parse_preferences({"bullet_count": value}).bullet_count == value


@pytest.mark.parametrize(("value", "ok"), [(49, False), (50, True), (2000, True), (2001, False)])
def test_words_per_bullet_bounds(value: int, ok: bool) -> None:
    if ok:
        assert parse_preferences({"words_per_bullet": value}).words_per_bullet == value
    else:
        with pytest.raises(InvalidPreferencesError, match=r"words_per_bullet must be an integer"):
            parse_preferences({"words_per_bullet": value})


# pov, tense and language take known values (test_preference_values.py): their messy
# spelling of one is cleaned to it, and only the free-text fields take any 100 characters.
MESSY = {
    "genre": ("  dark\t\tand\nstormy\x00\u202e ", "dark and stormy"),
    "tone": ("  dark\t\tand\nstormy\x00\u202e ", "dark and stormy"),
    "pov": ("  first\t\tperson\x00\u202e ", "first person"),
    "tense": ("  present\n\x00\u202e ", "present"),
    "language": ("  Brazilian\t\tPortuguese\x00\u202e ", "Brazilian Portuguese"),
}


@pytest.mark.parametrize("name", SHORT_FIELDS)
def test_short_fields(name: str) -> None:
    messy, clean = MESSY[name]
    prefs = parse_preferences({name: messy})
    assert getattr(prefs, name) == clean
    if name in ("genre", "tone"):
        assert getattr(parse_preferences({name: "x" * 100}), name) == "x" * 100
    assert getattr(parse_preferences({name: " \n "}), name) == SHORT_FIELD_DEFAULTS[name]
    with pytest.raises(InvalidPreferencesError) as info:
        parse_preferences({name: "x" * 101})
    assert (
        str(info.value) == f"user_preferences.{name} must be at most 100 characters long (got 101)"
    )
    with pytest.raises(InvalidPreferencesError) as info:
        parse_preferences({name: 5})
    assert str(info.value) == f"user_preferences.{name} must be a string of at most 100 characters"


def test_length_is_measured_after_cleaning() -> None:
    prefs = parse_preferences({"genre": " " * 50 + "x" * 100 + "\x00" * 20})
    assert prefs.genre == "x" * 100


@pytest.mark.parametrize(("name", "limit"), [("setting", 1000), ("instructions", 4000)])
def test_long_text_fields(name: str, limit: int) -> None:
    prefs = parse_preferences({name: " A\r\nB\tC\x1b[31m\u2028D\rE \n"})
    assert getattr(prefs, name) == "A\nB\tC[31m\nD\nE"
    assert getattr(parse_preferences({name: "y" * limit}), name) == "y" * limit
    assert getattr(parse_preferences({name: "  "}), name) is None
    with pytest.raises(
        InvalidPreferencesError, match=rf"^user_preferences\.{name} must be at most"
    ):
        parse_preferences({name: "y" * (limit + 1)})
    with pytest.raises(InvalidPreferencesError, match=rf"^user_preferences\.{name} must be a"):
        parse_preferences({name: ["a"]})


def test_characters() -> None:
    prefs = parse_preferences(
        {"characters": [{"name": " Mara\n", "description": "A keeper.\nQuiet."}, {"name": "Ilya"}]}
    )
    assert prefs.characters == (
        Character("Mara", "A keeper.\nQuiet."),
        Character("Ilya", ""),
    )
    assert len(parse_preferences({"characters": [{"name": "n"}] * 12}).characters) == 12


@pytest.mark.parametrize(
    ("characters", "message"),
    [
        ("Mara", "user_preferences.characters must be a list of at most 12 objects"),
        ([{"name": "n"}] * 13, "user_preferences.characters must have at most 12 items (got 13)"),
        (["Mara"], "user_preferences.characters[0] must be an object"),
        ([{"name": "a"}, {}], "user_preferences.characters[1].name must be a non-empty string"),
        ([{"name": " \x00 "}], "user_preferences.characters[0].name must be a non-empty string"),
        ([{"name": "x" * 101}], "user_preferences.characters[0].name must be at most 100"),
        ([{"name": "a", "description": 3}], "user_preferences.characters[0].description must"),
        (
            [{"name": "a", "description": "d" * 1001}],
            "user_preferences.characters[0].description must be at most 1000",
        ),
    ],
)
def test_character_rejections(characters: object, message: str) -> None:
    with pytest.raises(InvalidPreferencesError) as info:
        parse_preferences({"characters": characters})
    assert str(info.value).startswith(message)


def test_themes() -> None:
    prefs = parse_preferences({"themes": [" grief ", "", "  ", "home\tcoming"]})
    assert prefs.themes == ("grief", "home coming")
    for themes, message in [
        ("grief", "user_preferences.themes must be a list of at most 12 strings"),
        (["t"] * 13, "user_preferences.themes must have at most 12 items (got 13)"),
        (["a", None], "user_preferences.themes[1] must be a string"),
        (["a", 1], "user_preferences.themes[1] must be a string"),
        (["x" * 101], "user_preferences.themes[0] must be at most 100 characters"),
    ]:
        with pytest.raises(InvalidPreferencesError) as info:
            parse_preferences({"themes": themes})
        assert str(info.value).startswith(message)


def test_to_json_round_trips() -> None:
    raw = {
        "genre": "noir",
        "setting": "Rain.\nMore rain.",
        "characters": [{"name": "Sam", "description": "A detective."}],
        "themes": ["guilt"],
        "instructions": "Short sentences.",
        "bullet_count": 2,
        "words_per_bullet": 100,
    }
    prefs = parse_preferences(raw)
    assert parse_preferences(json.loads(json.dumps(prefs.to_json()))) == prefs
