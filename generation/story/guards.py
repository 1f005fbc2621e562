"""Only prose reaches the chapter: what a model says around its prose is taken off a
section as it streams, and the section is measured.

`ProseCleaner` drops, at the start of a section, blank lines, markdown headings and
fences, and meta lines ("Here is section 2:", "Sure!", "Chapter 3: The Storm",
"Section 2"); at its end, sign-offs ("Let me know if…", "I hope you enjoyed…",
"(Word count: 312)"), fences and separators. A line inside the prose is never touched,
and a line that could still turn out to be a sign-off is the most it holds back: any
other text is handed on as it arrives.

A line is meta only when it is short, holds no dialogue (no quotation marks) and reads
as a whole like one of the patterns below, so "Sure," she said. or "Chapter and verse,
he could quote them all." stay.

`count_words` counts words in any script: characters of scripts written without spaces
(Chinese, Japanese, Thai) count one each, which is an upper bound on their words;
everything else counts by whitespace.
"""

from __future__ import annotations

import re

#: A meta line is at most this long; longer lines are prose, whatever they start with.
META_MAX_CHARS = 160

_NUMBER = r"(?:\d+|[ivxlc]+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_HEADING = re.compile(
    rf"[#>*_\[(\s]*(?:chapter|section|part|scene|bullet)\s+{_NUMBER}"
    r"\s*(?:[:.\-\u2013\u2014]\s*[^\"\u201c\u201d.!?]{0,80})?[*_\])\s]*",
    re.I,
)
# "Here is section 2:", "Sure! Here's the next part of the story:", "As requested, ..."
_PREAMBLE_COLON = re.compile(
    r"(?:(?:sure|certainly|of course|absolutely|okay|ok|great|alright)[!,.]?\s*)?"
    r"(?:here(?:'s| is| are| comes)|below is|what follows is|as requested|continuing"
    r"|i(?:'ve| have) written|i(?:'ll| will) (?:write|continue)|now,? (?:for|on to))\b"
    r"[^\"\u201c\u201d]*\b(?:section|chapter|continuation|story|scene|draft|installment"
    r"|prose|passage|part|paragraphs?|text)\b[^\"\u201c\u201d]*:",
    re.I,
)
_PREAMBLE_MARKED = re.compile(
    r"[^\"\u201c\u201d]*\b(?:here(?:'s| is| are)|as requested|as you asked|you asked for"
    r"|continuing)\b[^\"\u201c\u201d]*\b(?:section\s+\d+|chapter\s+\d+|continuation"
    r"|(?:the )?next section|requested|you asked)\b[^\"\u201c\u201d]*",
    re.I,
)
_INTERJECTION = re.compile(
    r"(?:sure|certainly|of course|absolutely|okay|ok|great|alright|understood)[!.]", re.I
)
_FENCE = re.compile(r"(?:`{3,}|~{3,})\s*[\w-]*")
_RULE = re.compile(r"(?:-{3,}|\*{3,}|_{3,}|(?:\*\s){2,}\*)")
_TITLE = re.compile(r"(?:\*\*|__)?title\s*:[^\"\u201c\u201d]*", re.I)
_SIGN_OFF = re.compile(
    r"[\s(\[*_]*(?:let me know\b"
    r"|i hope (?:you|this|that)\b[^\"\u201c\u201d]*\b(?:enjoy|help|meet|fit|work|like"
    r"|section|chapter|story|request)"
    r"|(?:would you like|do you want|want me to)\b[^\"\u201c\u201d]*\b(?:me to|continue"
    r"|more|another|next|changes|adjust|revise)"
    r"|(?:shall|should) i\b[^\"\u201c\u201d]*\b(?:continue|write|go on|proceed)"
    r"|if you(?:'d| would) like\b[^\"\u201c\u201d]*\b(?:me to|changes|more|adjust)"
    r"|feel free to (?:ask|let|request|suggest)"
    r"|(?:approximate |total )?word count\b|words?\s*:\s*\d|end of (?:section|chapter|part)\b"
    r"|\d+\s+words\b)[^\"\u201c\u201d]*",
    re.I,
)
#: How a sign-off can start: an unfinished line starting so is held to its end.
_SIGN_OFF_KEYS = (
    "let me know", "i hope", "would you like", "do you want", "shall i", "should i",
    "if you'd like", "if you would like", "feel free", "want me to", "word count",
    "approximate word count", "total word count", "words:", "end of",
)  # fmt: skip
_DIALOGUE = re.compile(r"[\"\u201c\u201d\u00ab\u00bb\u300c\u300d]")
_DENSE = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def count_words(text: str) -> int:
    """Words in `text`, in any script (see the module docstring)."""
    dense = len(_DENSE.findall(text))
    spaced = [word for word in _DENSE.sub(" ", text).split() if any(c.isalnum() for c in word)]
    return dense + len(spaced)


def _plain_verdict(text: str) -> bool | None:
    """What every meta check decides alike: a blank line, a fence or a rule is meta;
    a long line is prose; None: look closer."""
    if not text or _FENCE.fullmatch(text) or _RULE.fullmatch(text):
        return True
    return False if len(text) > META_MAX_CHARS else None


def is_opening_meta(line: str) -> bool:
    """Whether a line at the start of a section is the model talking, not prose."""
    text = line.strip()
    verdict = _plain_verdict(text)
    if verdict is not None:
        return verdict
    if re.fullmatch(r"#{1,6}(?:\s.*)?", text):  # a markdown heading, whatever it says
        return True
    if _DIALOGUE.search(text):
        return False
    bold = re.fullmatch(r"(?:\*\*|__)[^*_]+(?:\*\*|__):?", text) is not None
    patterns = (_HEADING, _PREAMBLE_COLON, _PREAMBLE_MARKED, _INTERJECTION, _TITLE)
    return bold or any(pattern.fullmatch(text) for pattern in patterns)


def is_closing_meta(line: str) -> bool:
    """Whether a line at the end of a section is the model signing off."""
    text = line.strip()
    verdict = _plain_verdict(text)
    if verdict is not None:
        return verdict
    return not _DIALOGUE.search(text) and _SIGN_OFF.fullmatch(text) is not None


def may_close(partial_line: str) -> bool:
    """Whether an unfinished line could still turn out to be a sign-off (held back)."""
    text = partial_line.strip().lstrip("([*_ ").lower()
    if not text:
        return bool(partial_line.strip())  # "(" or "**": may open anything
    if len(text) > META_MAX_CHARS or _DIALOGUE.search(text):
        return False
    if text[0].isdigit() or text[0] in "-`~":
        return True
    return any(key.startswith(text) or text.startswith(key) for key in _SIGN_OFF_KEYS)


class ProseCleaner:
    """Cleans one section's streamed text on the fly (see the module docstring).

    `feed` returns what may be handed on now; `finish` what is left when the stream
    ended (sign-offs dropped). The first piece handed on starts with `prefix`; trailing
    whitespace is held until more prose follows, so none is handed on at the end.
    `resume()` opens the start again for a continuation of the same section: its
    opening meta lines are dropped, but nothing else of it.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        #: The section's text handed on so far, without the prefix.
        self.text = ""
        self._opening = True
        self._line = ""  # the current line, not yet handed on (start, or may close)
        self._held: list[str] = []  # complete lines that may be a sign-off, with "\n"
        self._flowing = False  # part of the current line was handed on: it is prose
        self._space = ""

    def resume(self) -> None:
        self._opening, self._flowing = True, False

    def feed(self, chunk: str) -> str:
        out: list[str] = []
        for piece in re.split(r"(\n)", chunk):
            if piece == "\n":
                out.append(self._end_line())
            elif piece:
                out.append(self._add(piece))
        return "".join(out)

    def finish(self) -> str:
        line, self._line = self._line, ""
        if self._flowing:
            self._flowing = False
            return self._emit(line)
        if self._opening and is_opening_meta(line):
            line = ""
        held = [*self._held, line]
        self._held = []
        while held and is_closing_meta(held[-1]):
            held.pop()
        return self._emit("".join(held).rstrip())

    def _add(self, piece: str) -> str:
        self._line += piece
        if self._flowing:  # this line is prose already: the rest of it flows on
            line, self._line = self._line, ""
            return self._emit(line)
        if self._opening:
            stripped = self._line.lstrip()
            if not stripped or (
                len(stripped) <= META_MAX_CHARS and _could_open_meta(stripped)
            ):
                return ""
            self._opening = False
        if self._held or may_close(self._line):
            return ""
        line, self._line = self._line, ""
        self._flowing = True
        return self._emit(line)

    def _end_line(self) -> str:
        line, self._line = self._line, ""
        if self._flowing:
            self._flowing = False
            return self._emit(line + "\n")
        if self._opening:
            if is_opening_meta(line):
                return ""
            self._opening = False
        if not line.strip() and not self._held:  # a paragraph break: whitespace
            return self._emit(line + "\n")
        if is_closing_meta(line):
            self._held.append(line + "\n")
            return ""
        held, self._held = "".join(self._held), []
        return self._emit(held + line + "\n")

    def _emit(self, text: str) -> str:
        if not self.text:
            text = text.lstrip()
        content = text.rstrip()
        if not content:
            if self.text:
                self._space += text
            return ""
        piece = self._space + content
        self._space = text[len(content) :]
        if not self.text:
            self.text = piece
            return self.prefix + piece
        self.text += piece
        return piece


def _could_open_meta(start: str) -> bool:
    """Whether the start of a first line may still become an opening meta line."""
    if _DIALOGUE.search(start):
        return False
    if start[0] in "#*_`~-[(>":
        return True
    words = start.lower()
    openers = (
        "here", "sure", "certainly", "of course", "absolutely", "okay", "ok", "great",
        "alright", "understood", "below", "what follows", "as requested", "continuing",
        "i've", "i have", "i'll", "i will", "chapter", "section", "part", "scene", "bullet",
        "title",
    )  # fmt: skip
    return any(o.startswith(words) or words.startswith(o) for o in openers)


def repeats_opening(section: str, earlier: str) -> bool:
    """Whether `section` opens with a paragraph the chapter already has (a model that
    restarted the chapter instead of going on)."""
    first = _normal(section.split("\n\n", 1)[0])
    if len(first) < 40:
        return False
    return any(_normal(p) == first for p in earlier.split("\n\n"))


def _normal(paragraph: str) -> str:
    return " ".join(paragraph.split()).lower()


def whole_sentences(text: str) -> str:
    """`text` up to its last complete sentence ("" when it has none): what stands of
    an answer cut at its output limit."""
    ends = [m.end() for m in re.finditer(r"[.!?\u3002\uff01\uff1f][\"'\u201d\u2019)]*", text)]
    return text[: ends[-1]].strip() if ends else ""


def clean(text: str) -> str:
    """A whole answer (a summary) with the model's own words around it taken off."""
    cleaner = ProseCleaner()
    return (cleaner.feed(text) + cleaner.finish()).strip()
