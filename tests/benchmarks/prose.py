"""The prose streamed in the live-text benchmark (section 8), as a model would stream it:
sections in chunks of CHUNK_WORDS words, each with its trailing whitespace.

- `placeholder`: the offline provider's own sections. A dozen template sentences over
  and over, which PostgreSQL's TOAST compression (pglz) stores at a fraction of their
  size: this flatters whatever rewrites the chapter often (LIVE_TEXT=row).
- `realistic`: words drawn with a fixed seed by their frequency in English (wordfreq's
  large English list), from its VOCABULARY most common words, plus a cast of CAST
  recurring rarer words (the names and places a story comes back to), in sentences of
  about 17 words and paragraphs of three to seven sentences. These settings were
  chosen so that it compresses as real prose does: measured with pglz on 2026-12-03
  (the four sections of `sections("realistic", 4, 750)`), at 4, 6 and 8 KB it keeps
  0.69, 0.65 and 0.62 of its size, against 0.68, 0.65 and 0.64 for 8 KB of
  public-domain fiction (Doyle, Shelley, Wilde, Melville, Dickens); zlib 0.47 against
  0.47. Drawn from the list's 30,000 most common words, it compresses worse than
  fiction (0.72, 0.68, 0.65; zlib 0.48): unfair to row mode.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from functools import cache

CHUNK_WORDS = 12
VOCABULARY, CAST, CAST_SHARE = 2000, 40, 0.1
SEED = 26
KINDS = ("placeholder", "realistic")


def sections(kind: str, count: int, words: int) -> list[list[str]]:
    """`count` sections of about `words` words of `kind` prose, each as its chunks."""
    if kind == "placeholder":
        return _placeholder(count, words)
    if kind == "realistic":
        return [list(chunks(realistic(words, seed=(SEED, i)))) for i in range(count)]
    raise ValueError(f"no such prose: {kind}")


def chunks(text: str, words: int = CHUNK_WORDS) -> Iterator[str]:
    """`text` in pieces of `words` words, each with its trailing whitespace."""
    tokens = re.findall(r"\S+\s*", text)
    for start in range(0, len(tokens), words):
        yield "".join(tokens[start : start + words])


def realistic(words: int, seed: object) -> str:
    """About `words` words of frequency-sampled English (see the module docstring)."""
    vocabulary, weights, rarer = _vocabulary()
    rng = random.Random(repr(seed))
    cast = rng.sample(rarer, CAST)
    paragraphs, sentences, total = [], [], 0
    while total < words:
        size = max(4, round(rng.gauss(17, 7)))
        drawn = rng.choices(vocabulary, cum_weights=weights, k=size)
        drawn = [rng.choice(cast) if rng.random() < CAST_SHARE else w for w in drawn]
        drawn = ["I" if w == "i" else w for w in drawn]
        for i in range(1, size - 1):
            if rng.random() < 0.08:
                drawn[i] += ","
        sentence = " ".join(drawn)
        sentences.append(sentence[0].upper() + sentence[1:] + rng.choice(".....?!"))
        total += size
        if len(sentences) >= rng.randint(3, 7):
            paragraphs.append(" ".join(sentences))
            sentences = []
    if sentences:
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


@cache
def _vocabulary() -> tuple[list[str], list[float], list[str]]:
    """The VOCABULARY most common words with their cumulative frequencies, and the
    rarer words a cast is drawn from."""
    import wordfreq  # the bench extra

    listed = wordfreq.top_n_list("en", 4 * 5000, wordlist="large")
    words = [w for w in listed if w.replace("'", "").isalpha()][:5000]
    common = words[:VOCABULARY]
    frequencies = [wordfreq.word_frequency(w, "en", wordlist="large") for w in common]
    return common, list(itertools.accumulate(frequencies)), words[300:]


def _placeholder(count: int, words: int) -> list[list[str]]:
    from generation.providers.offline import OfflineProvider
    from generation.story.preferences import parse_preferences
    from generation.types import ChapterRequest

    provider = OfflineProvider(chunk_words=CHUNK_WORDS)
    prefs = parse_preferences({"bullet_count": count, "words_per_bullet": words})
    request = ChapterRequest(1, prefs)
    outline = provider.outline(request)
    return [list(provider.stream_section(request, outline, i, "")) for i in range(count)]
