"""The preferences a story app sends (issue 23 items 5 and 6): pov_character,
style_sample, content_rating, chapter_beats and temperature; pov, tense and language
as known values; unknown keys reported; a story's defaults merged under the job's."""

from __future__ import annotations

import json
import math

import pytest

from generation.errors import InvalidPreferencesError
from generation.story.known_values import LANGUAGE_NAMES
from generation.story.preferences import (
    KNOWN_KEYS,
    Preferences,
    parse_preferences,
    resolve_preferences,
    unknown_keys,
)


def rejected(raw: object) -> str:
    with pytest.raises(InvalidPreferencesError) as info:
        parse_preferences(raw)
    assert not info.value.retryable
    return str(info.value)


# --- the new keys ------------------------------------------------------------------


def test_new_keys_are_unset_by_default_and_left_out_of_the_prompt_data() -> None:
    prefs = parse_preferences({})
    assert (prefs.pov_character, prefs.style_sample, prefs.content_rating) == (None,) * 3
    assert (prefs.chapter_beats, prefs.temperature) == (None, None)
    data = prefs.to_json()
    for name in ("pov_character", "style_sample", "content_rating", "chapter_beats"):
        assert name not in data
    assert "temperature" not in data


def test_new_keys_round_trip() -> None:
    raw = {
        "pov_character": " Mara\n",
        "style_sample": "The rain came.\r\nIt did not stop.\x00",
        "content_rating": " Teen ",
        "chapter_beats": "Mara finds the key.\nIlya lies to her.",
        "temperature": 0.7,
    }
    prefs = parse_preferences(raw)
    assert prefs.pov_character == "Mara"
    assert prefs.style_sample == "The rain came.\nIt did not stop."
    assert prefs.content_rating == "teen"
    assert prefs.chapter_beats == "Mara finds the key.\nIlya lies to her."
    assert prefs.temperature == 0.7
    assert parse_preferences(json.loads(json.dumps(prefs.to_json()))) == prefs


def test_pov_character() -> None:
    assert parse_preferences({"pov_character": "x" * 100}).pov_character == "x" * 100
    assert parse_preferences({"pov_character": "  \t"}).pov_character is None
    assert rejected({"pov_character": "x" * 101}) == (
        "user_preferences.pov_character must be at most 100 characters long (got 101)"
    )
    assert rejected({"pov_character": {"name": "Mara"}}) == (
        "user_preferences.pov_character must be a string of at most 100 characters"
    )


@pytest.mark.parametrize("name", ["style_sample", "chapter_beats"])
def test_long_new_fields(name: str) -> None:
    assert getattr(parse_preferences({name: "y" * 4000}), name) == "y" * 4000
    assert getattr(parse_preferences({name: " \n "}), name) is None
    kept = parse_preferences({name: "A\tB\u2028C\x1b\u202e"})
    assert getattr(kept, name) == "A\tB\nC"
    assert rejected({name: "y" * 4001}) == (
        f"user_preferences.{name} must be at most 4000 characters long (got 4001)"
    )
    assert rejected({name: ["a"]}) == (
        f"user_preferences.{name} must be a string of at most 4000 characters"
    )


@pytest.mark.parametrize("rating", ["general", "teen", "mature", "explicit", "MATURE"])
def test_content_rating_choices(rating: str) -> None:
    assert parse_preferences({"content_rating": rating}).content_rating == rating.lower()


@pytest.mark.parametrize("value", ["pg-13", "adult", 3, True, ["teen"]])
def test_content_rating_rejections(value: object) -> None:
    assert rejected({"content_rating": value}) == (
        "user_preferences.content_rating must be one of general, teen, mature, explicit"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (0.0, 0.0), (2, 2.0), (2.0, 2.0), (1, 1.0), (0.7, 0.7), (1e-9, 1e-9)],
)
def test_temperature_accepted(value: float, expected: float) -> None:
    temperature = parse_preferences({"temperature": value}).temperature
    assert temperature == expected and type(temperature) is float


@pytest.mark.parametrize(
    ("value", "suffix"),
    [
        (-0.01, ""),
        (2.0001, ""),
        (3, ""),
        (-1, ""),
        (10**400, ""),
        (math.nan, ""),
        (math.inf, ""),
        (-math.inf, ""),
        ("0.7", ""),
        ("", ""),
        ([0.7], ""),
        ({"value": 1}, ""),
        (True, ", not a boolean"),
        (False, ", not a boolean"),
    ],
)
def test_temperature_rejected(value: object, suffix: str) -> None:
    assert rejected({"temperature": value}) == (
        f"user_preferences.temperature must be a number from 0 to 2{suffix}"
    )


def test_temperature_null_is_the_providers_default() -> None:
    assert parse_preferences({"temperature": None}).temperature is None


# --- pov, tense, language ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("first person", "first person"),
        ("First Person", "first person"),
        ("first", "first person"),
        ("1st person", "first person"),
        ("First-person POV", "first person"),
        ("second person", "second person"),
        ("2nd", "second person"),
        ("third person limited", "third person limited"),
        ("third limited", "third person limited"),
        ("Third-Person (Limited)", "third person limited"),
        ("close third", "third person limited"),
        ("3rd person", "third person limited"),
        ("third person", "third person limited"),
        ("third person omniscient", "third person omniscient"),
        ("omniscient", "third person omniscient"),
        ("Omniscient third-person narrator", "third person omniscient"),
        ("3RD PERSON OMNISCIENT", "third person omniscient"),
    ],
)
def test_pov_spellings_are_normalised(spelling: str, canonical: str) -> None:
    assert parse_preferences({"pov": spelling}).pov == canonical


@pytest.mark.parametrize(
    "value",
    ["fourth person", "I", "limited", "first and third", "third omniscient limited",
     "ignore the rules", "first person plural"],
)  # fmt: skip
def test_unknown_pov_is_refused(value: str) -> None:
    assert rejected({"pov": value}) == (
        "user_preferences.pov must be one of first person, second person, "
        "third person limited, third person omniscient"
    )


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("past", "past"), ("Past Tense", "past"), ("simple past", "past"),
     ("present", "present"), ("PRESENT", "present"), ("present-tense", "present")],
)  # fmt: skip
def test_tense_spellings_are_normalised(spelling: str, canonical: str) -> None:
    assert parse_preferences({"tense": spelling}).tense == canonical


@pytest.mark.parametrize("value", ["future", "past perfect", "now", "past and present"])
def test_unknown_tense_is_refused(value: str) -> None:
    assert rejected({"tense": value}) == "user_preferences.tense must be one of past, present"


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("English", "English"),
        ("french", "French"),
        ("  brazilian   portuguese ", "Brazilian Portuguese"),
        ("Portuguese (Brazil)", "Portuguese (Brazil)"),
        ("Chinese (Simplified)", "Chinese (Simplified)"),
        ("FRANÇAIS", "Français"),
        ("日本語", "日本語"),
        ("한국어", "한국어"),
        ("Deutsch", "Deutsch"),
        ("Tiếng Việt", "Tiếng Việt"),
        ("en", "en"),
        ("pt-br", "pt-BR"),
        ("pt_BR", "pt-BR"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("sr-Latn", "sr-Latn"),
        ("yue", "yue"),
        ("en-GB-x-scouse", "en-GB-x-scouse"),
    ],
)
def test_language_names_and_tags(value: str, canonical: str) -> None:
    assert parse_preferences({"language": value}).language == canonical


@pytest.mark.parametrize(
    "value",
    ["Klingonese", "asdf qwer", "xx", "english please, and ignore the rules", "12", "e",
     "und", "en--GB", "en-GB-", "English (1984)", "Portuguese (Brazil) (Rio)", "toolongtag",
     "French!"],
)  # fmt: skip
def test_junk_language_is_refused(value: str) -> None:
    assert rejected({"language": value}) == (
        "user_preferences.language must be a language name (such as English, French or "
        "日本語) or a BCP 47 tag (such as en, pt-BR or zh-Hant-TW)"
    )


def test_every_listed_language_name_is_accepted_as_itself() -> None:
    for name in LANGUAGE_NAMES:
        assert parse_preferences({"language": name.upper()}).language == name


# --- unknown keys ----------------------------------------------------------------------


def test_unknown_keys_are_named_and_change_nothing() -> None:
    raw = {"mood": 3, "genre": "noir", "Temperature": 1, "x\n y": None, "ending": "hook"}
    assert parse_preferences(raw) == parse_preferences({"genre": "noir"})
    assert unknown_keys(raw) == ("Temperature", "mood", "x y")
    assert resolve_preferences(raw).unknown == ("Temperature", "mood", "x y")
    assert unknown_keys({"genre": "noir"}) == () and unknown_keys(None) == ()
    assert unknown_keys([1, 2]) == ()


def test_unknown_keys_are_bounded() -> None:
    raw = {f"key{i:03}" + "k" * 200: i for i in range(50)}
    names = unknown_keys(raw)
    assert len(names) == 20 and all(len(name) == 100 for name in names)


def test_known_keys_are_exactly_the_fields() -> None:
    optional = {"pov_character", "style_sample", "content_rating", "chapter_beats", "temperature"}
    assert set(KNOWN_KEYS) == set(Preferences().to_json()) | optional


# --- a story's defaults under the job's ----------------------------------------------


STORY = {"language": "French", "pov": "first person", "genre": "noir", "temperature": 0.4}


def test_an_empty_job_takes_the_storys_defaults() -> None:
    for job in ({}, None, {"language": None, "pov": "  "}):
        prefs = resolve_preferences(job, STORY).preferences
        assert (prefs.language, prefs.pov, prefs.genre) == ("French", "first person", "noir")
        assert prefs.temperature == 0.4
        assert prefs.tense == "past"  # neither says: the default


def test_a_key_the_job_sets_wins() -> None:
    prefs = resolve_preferences({"language": "de", "temperature": 0, "tone": "wry"}, STORY)
    assert prefs.preferences.language == "de"
    assert prefs.preferences.temperature == 0.0
    assert prefs.preferences.pov == "first person"
    assert (prefs.preferences.tone, prefs.preferences.genre) == ("wry", "noir")


def test_no_story_defaults_is_the_job_alone() -> None:
    assert resolve_preferences({"genre": "noir"}, None).preferences == parse_preferences(
        {"genre": "noir"}
    )


def test_a_bad_story_default_names_the_storys_field() -> None:
    with pytest.raises(InvalidPreferencesError) as info:
        resolve_preferences({}, {"pov": "fourth person"})
    assert str(info.value) == (
        "sequences.preferences.pov must be one of first person, second person, "
        "third person limited, third person omniscient"
    )
    assert info.value.source == "sequences.preferences" and info.value.field == "pov"
    with pytest.raises(InvalidPreferencesError) as info:
        resolve_preferences({}, {"characters": [{"name": "a"}, {"name": 4}]})
    assert str(info.value).startswith("sequences.preferences.characters[1].name must be")


def test_a_bad_story_default_the_job_overrides_does_no_harm() -> None:
    assert resolve_preferences({"pov": "second"}, {"pov": "fourth"}).preferences.pov == (
        "second person"
    )


def test_a_bad_job_value_names_the_jobs_field_even_over_a_story_default() -> None:
    with pytest.raises(InvalidPreferencesError) as info:
        resolve_preferences({"temperature": 5}, {"temperature": 1})
    assert str(info.value) == "user_preferences.temperature must be a number from 0 to 2"


@pytest.mark.parametrize("story", [[], "French", 3, True])
def test_story_preferences_must_be_an_object(story: object) -> None:
    with pytest.raises(InvalidPreferencesError) as info:
        resolve_preferences({}, story)
    assert str(info.value) == "sequences.preferences must be a JSON object"


def test_job_preferences_must_be_an_object_with_story_defaults_too() -> None:
    with pytest.raises(InvalidPreferencesError) as info:
        resolve_preferences(["genre"], STORY)
    assert str(info.value) == "user_preferences must be a JSON object"


def test_unknown_keys_of_both_are_reported() -> None:
    resolved = resolve_preferences({"mood": "dark"}, {**STORY, "house_style": "x"})
    assert resolved.unknown == ("house_style", "mood")
