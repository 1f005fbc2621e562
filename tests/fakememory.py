"""The chapter memory the fake Gemini and OpenAI servers answer with: derived by rule
from the story data of the request (generation/story/prompts.memory_prompt), so that a
test can tell what "the model" extracted and where it went.

- characters: every capitalised word that stands inside a sentence (not at its start)
  of the chapter text, and every known character the text names; a known one keeps its
  description, a new one is `about` NEW_ABOUT; the state is the last sentence of the
  chapter naming them;
- facts: the chapter text's first sentence;
- arc: the previous arc as sent, and this chapter's gist GIST;
- summary: the fake's own summary.
"""

from __future__ import annotations

import re
from typing import Any

from generation.story.prompts import data_of

NEW_ABOUT = "first met in chapter {chapter} (fake extraction)"
GIST = "Chapter {chapter} as the fake model saw it."
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]{2,}\b")


def is_memory(user_text: str) -> bool:
    """Whether a prompt asks for a chapter memory."""
    return "Update the story's memory" in user_text


def memory_answer(user_text: str, summary: str) -> dict[str, Any]:
    """The fake model's chapter memory for the prompt `user_text`."""
    data = data_of(user_text)
    text, chapter = data["chapter_text"], data["chapter_number"]
    sentences = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
    known = {c["name"]: c.get("about", "") for c in data.get("known_characters", [])}
    names = list(dict.fromkeys([*_NAME.findall(text), *(n for n in known if n in text)]))
    characters = []
    for name in names:
        naming = [s for s in sentences if re.search(rf"\b{re.escape(name)}\b", s)]
        about = known.get(name) or NEW_ABOUT.format(chapter=chapter)
        characters.append({"name": name, "about": about, "state": naming[-1] if naming else ""})
    return {
        "summary": summary,
        "arc": [
            *data.get("previous_arc", []),
            {"chapter": chapter, "gist": GIST.format(chapter=chapter)},
        ],
        "characters": characters,
        "facts": sentences[:1],
    }
