"""The values `pov`, `tense` and `language` may take, and how a spelling of one is
brought to its canonical form.

- `pov`: first person, second person, third person limited, third person omniscient.
  Spellings are read without case, punctuation or filler words ("person", "pov",
  "point of view", "narration", "perspective"), "1st/2nd/3rd" as words, in any order:
  "First-person", "1st person", "third limited", "close third", "omniscient" all work.
  "third" or "third person" alone is third person limited (the usual meaning).
- `tense`: past or present ("past tense", "Simple Present" work).
- `language`: a language name from LANGUAGE_NAMES (English names of about a hundred
  languages, regional forms such as "Brazilian Portuguese", and native names of the
  common ones, without case), optionally with a region in parentheses ("Portuguese
  (Brazil)"); or a BCP 47 tag (`en`, `pt-BR`, `zh-Hant-TW`, `yue`): a two-letter
  primary subtag must be an ISO 639-1 code, a three-letter one is checked by form only.
  Names come back as listed, tags with the standard case (`pt-br` gives `pt-BR`).

Each normaliser returns None for a value it does not know; the caller names the field.
"""

from __future__ import annotations

import re

POV_VALUES = (
    "first person",
    "second person",
    "third person limited",
    "third person omniscient",
)
TENSE_VALUES = ("past", "present")

_ORDINALS = {"1st": "first", "2nd": "second", "3rd": "third"}
_FILLER = frozenset(
    re.findall(
        r"\w+",
        "person persons pov point of view narration narrator narrative perspective tense simple",
    )
)
_POV_SPELLINGS = {
    frozenset({"first"}): "first person",
    frozenset({"second"}): "second person",
    frozenset({"third"}): "third person limited",
    frozenset({"third", "limited"}): "third person limited",
    frozenset({"third", "close"}): "third person limited",
    frozenset({"third", "close", "limited"}): "third person limited",
    frozenset({"third", "omniscient"}): "third person omniscient",
    frozenset({"omniscient"}): "third person omniscient",
}
_TENSE_SPELLINGS = {frozenset({"past"}): "past", frozenset({"present"}): "present"}

_ENGLISH_NAMES = """
Afrikaans|Albanian|Amharic|Arabic|Armenian|Assamese|Azerbaijani|Basque|Belarusian|Bengali|
Bosnian|Breton|Bulgarian|Burmese|Cantonese|Catalan|Cebuano|Chinese|Corsican|Croatian|Czech|
Danish|Dutch|English|Esperanto|Estonian|Faroese|Farsi|Filipino|Finnish|Flemish|French|Frisian|
Galician|Georgian|German|Greek|Gujarati|Haitian Creole|Hausa|Hawaiian|Hebrew|Hindi|Hmong|
Hungarian|Icelandic|Igbo|Indonesian|Irish|Italian|Japanese|Javanese|Kannada|Kazakh|Khmer|
Kinyarwanda|Korean|Kurdish|Kyrgyz|Lao|Latin|Latvian|Lithuanian|Luxembourgish|Macedonian|
Malagasy|Malay|Malayalam|Maltese|Mandarin|Maori|Marathi|Mongolian|Nepali|Norwegian|
Norwegian Bokmål|Norwegian Nynorsk|Occitan|Odia|Oriya|Pashto|Persian|Polish|Portuguese|
Punjabi|Quechua|Romanian|Russian|Samoan|Scottish Gaelic|Serbian|Sesotho|Shona|Sindhi|
Sinhala|Slovak|Slovenian|Somali|Spanish|Sundanese|Swahili|Swedish|Tagalog|Tajik|Tamil|
Tatar|Telugu|Thai|Tibetan|Tigrinya|Turkish|Turkmen|Ukrainian|Urdu|Uyghur|Uzbek|Vietnamese|
Welsh|Xhosa|Yiddish|Yoruba|Zulu|
American English|British English|Australian English|Brazilian Portuguese|
European Portuguese|Simplified Chinese|Traditional Chinese|Mandarin Chinese|
Latin American Spanish|Mexican Spanish|Castilian Spanish|Castilian|Canadian French|
Swiss German|Austrian German|Modern Greek|Ancient Greek|Old English|Middle English|
Classical Chinese|Modern Standard Arabic
"""
_NATIVE_NAMES = """
Français|Español|Deutsch|Italiano|Português|Português do Brasil|Nederlands|Polski|Русский|
Українська|Türkçe|Svenska|Norsk|Dansk|Suomi|Čeština|Magyar|Română|Ελληνικά|עברית|العربية|
فارسی|हिन्दी|हिंदी|বাংলা|اردو|中文|简体中文|繁體中文|普通话|粵語|日本語|한국어|ภาษาไทย|ไทย|
Tiếng Việt|Bahasa Indonesia|Bahasa Melayu|Kiswahili|Català|Euskara|Galego|Hrvatski|Srpski|
Српски|Български|Slovenčina|Slovenščina|Lietuvių|Latviešu|Eesti|Íslenska|Gaeilge|Cymraeg|
தமிழ்|తెలుగు|मराठी|ગુજરાતી|ਪੰਜਾਬੀ|ಕನ್ನಡ|മലയാളം|Беларуская|Қазақша|Ўзбекча
"""
#: Every language name `language` accepts, as it is given back.
LANGUAGE_NAMES = tuple(
    name.strip() for name in (_ENGLISH_NAMES + "|" + _NATIVE_NAMES).split("|") if name.strip()
)
_BY_FOLDED = {name.casefold(): name for name in LANGUAGE_NAMES}

#: ISO 639-1: the two-letter primary language subtags of BCP 47.
ISO_639_1 = frozenset(
    re.findall(
        r"[a-z]{2}",
        """aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu
    cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho
    hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv
    kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr
    nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq
    sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh
    yi yo za zh zu""",
    )
)
#: Three-letter codes that name no language (undetermined, multiple, none, missing).
_NOT_LANGUAGES = frozenset({"und", "mul", "zxx", "mis"})
# RFC 5646's langtag, without the grandfathered and private-use-only forms.
_TAG = re.compile(
    r"""(?P<language>[a-z]{2,3})(?:-[a-z]{3}){0,3}
        (?:-[a-z]{4})?
        (?:-(?:[a-z]{2}|[0-9]{3}))?
        (?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*
        (?:-[0-9a-wy-z](?:-[a-z0-9]{2,8})+)*
        (?:-x(?:-[a-z0-9]{1,8})+)?""",
    re.IGNORECASE | re.VERBOSE,
)
_REGION_NOTE = re.compile(r"(?P<name>[^()]+?)\s*\((?P<note>[^()]{1,40})\)")


def pov(value: str) -> str | None:
    """The canonical point of view `value` spells, or None."""
    return _POV_SPELLINGS.get(_words(value))


def tense(value: str) -> str | None:
    """The canonical tense `value` spells, or None."""
    return _TENSE_SPELLINGS.get(_words(value))


def language(value: str) -> str | None:
    """`value` as a known language name or a well-formed BCP 47 tag, or None."""
    text = " ".join(value.split())
    if (name := _BY_FOLDED.get(text.casefold())) is not None:
        return name
    noted = _REGION_NOTE.fullmatch(text)
    if noted and (name := _BY_FOLDED.get(noted["name"].casefold())) is not None:
        note = noted["note"].strip()
        return f"{name} ({note})" if note.replace(" ", "").isalpha() else None
    return _tag(text.replace("_", "-"))


def _words(value: str) -> frozenset[str]:
    spaced = re.sub(r"[\s\-_/().,;:]+", " ", value.casefold())
    words = (_ORDINALS.get(word, word) for word in spaced.split())
    return frozenset(word for word in words if word not in _FILLER)


def _tag(text: str) -> str | None:
    """`text` with BCP 47's conventional case when it is a well-formed tag of a language."""
    match = _TAG.fullmatch(text)
    if match is None:
        return None
    primary = match["language"].lower()
    if primary in _NOT_LANGUAGES or (len(primary) == 2 and primary not in ISO_639_1):
        return None
    subtags = text.split("-")
    out = [primary]
    private = False
    for subtag in subtags[1:]:
        private = private or subtag.lower() == "x"
        if not private and len(subtag) == 4 and subtag.isalpha():
            out.append(subtag.title())
        elif not private and len(subtag) == 2 and subtag.isalpha():
            out.append(subtag.upper())
        else:
            out.append(subtag.lower())
    return "-".join(out)
