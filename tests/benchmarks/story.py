"""Section 10: the story so far (issue 22).

- Recall of planted facts: a 30-chapter story (20 paragraphs a chapter) whose first ten
  chapters plant 50 facts (a named object with a distinctive detail); the rest of the
  story mentions the same names and objects without the details. For each fact, a later
  section's bullet names its subject in other words; is the planting passage among the
  k=4 the worker retrieves (PostgreSQL full-text search, idf-weighted)?
- Context assembly at chapter 100: the whole section prompt built (context builder
  included), and the recall query over 2,000 passages.
- Prompt size over chapters 1..100: what the story-so-far parts take of the budget, and
  the whole section prompt, in estimated tokens.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid

from generation.story import prompts
from generation.story.context import estimate_tokens
from generation.story.memory import ArcEntry, passages, update_arc, update_bible
from generation.story.preferences import parse_preferences
from generation.types import (
    ChapterRequest,
    ChapterSummary,
    Outline,
    Passage,
    StoryContext,
)
from supervisor.db import sql
from supervisor.db.jobs import ChapterContext, Claim
from supervisor.db.memory import recall
from tests.benchmarks.harness import Bench, connect

NAMES = ("Mara", "Ilya", "Wren", "Tomas", "Odile", "Kasimir")
PLACES = ("the harbour", "the lighthouse", "the market", "the chapel", "the quay", "the moor")
OBJECTS = (
    "compass", "locket", "ledger", "lantern", "dagger", "violin", "map", "ring", "key",
    "bell", "mirror", "coin", "flask", "glove", "scarf", "pipe", "watch", "chess set",
    "music box", "telescope", "rosary", "seal", "quill", "spyglass", "crown", "brooch",
    "hairpin", "dice", "candlestick", "bible", "oar", "harpoon", "kite", "drum",
    "teapot", "shawl", "umbrella", "cane", "hatbox", "satchel", "lockbox", "kettle",
    "thimble", "fan", "medal", "badge", "anchor", "tiller", "net", "whistle",
)  # fmt: skip
DETAILS = (
    "herons", "thistles", "a cracked sapphire", "initials burnt into it", "a tide chart",
    "salt stains", "a hidden hinge", "seven notches", "a widow's name", "green enamel",
    "a broken clasp", "a wolf's head", "silver wire", "a dead king's face", "tar",
    "a lock of red hair", "a crescent moon", "blood on its edge", "a ship in a bottle",
    "two missing teeth", "a riddle in Latin", "a mended strap", "whale bone",
    "a false bottom", "an owl", "the harbourmaster's crest", "gold leaf", "a bullet hole",
    "a sailor's knot", "pressed violets", "a coded list", "amber beads", "a cross of ash",
    "burnt edges", "an inscription to Anna", "a scorpion", "river pearls", "a ferry ticket",
    "a thumbprint in wax", "copper rivets", "a chipped spout", "a lion rampant",
    "a painted eye", "lapis inlay", "a drowned man's name", "a torn lining", "seaweed",
    "three stars", "a child's drawing", "a bent nail",
)  # fmt: skip
CHAPTERS, PARAGRAPHS, FACTS, K = 30, 20, 50, 4


def filler(rng: random.Random) -> str:
    name, other = rng.sample(NAMES, 2)
    return (
        f"{name} walked to {rng.choice(PLACES)} with the {rng.choice(OBJECTS)} in hand, and "
        f"{other} said nothing about the weather or the boats. The light changed over "
        f"{rng.choice(PLACES)}; somewhere a door closed, and {name} kept walking."
    )


def fact(i: int) -> str:
    return (
        f"{NAMES[i % len(NAMES)]} found the {OBJECTS[i]} marked with {DETAILS[i]}, and "
        f"hid it where nobody at {PLACES[i % len(PLACES)]} would look."
    )


def seed_story(dsn: str) -> tuple[uuid.UUID, dict[int, tuple[int, int]]]:
    """The story's passages stored as the worker stores them; where each fact stands."""
    rng = random.Random(7)
    planted: dict[int, tuple[int, int]] = {}
    with connect(dsn) as conn:
        user = conn.execute("insert into auth.users (id) values (gen_random_uuid()) returning id")
        user_id = user.fetchone()["id"]
        seq = conn.execute(
            "insert into sequences (user_id, title) values (%s, 'Bench') returning id",
            (user_id,),
        ).fetchone()["id"]
        for number in range(1, CHAPTERS + 1):
            paragraphs = [filler(rng) for _ in range(PARAGRAPHS)]
            facts = [i for i in range(FACTS) if i % 10 == number - 1] if number <= 10 else []
            for i in facts:
                paragraphs.insert(rng.randrange(len(paragraphs)), fact(i))
            text = "\n\n".join(paragraphs)
            chapter = conn.execute(
                "insert into chapters (sequence_id, chapter_number, content) values (%s, %s, %s)"
                " returning id",
                (seq, number, text),
            ).fetchone()["id"]
            stored = passages(text)
            for i in facts:
                planted[i] = next((number, o) for o, body in stored if fact(i) in body)
            sql.run(conn, "store_passages", {
                "chapter_id": chapter, "sequence_id": seq, "chapter_number": number,
                "offsets": [o for o, _ in stored], "bodies": [b for _, b in stored],
                "config": "english",
            })  # fmt: skip
    return seq, planted


def claim_for(seq: uuid.UUID, before: int) -> Claim:
    context = ChapterContext(seq, uuid.uuid4(), before, "", "Bench", None)
    return Claim(uuid.uuid4(), "bench", 1, uuid.uuid4(), seq, uuid.uuid4(), {}, None, context)


def measure_recall(dsn: str) -> None:
    seq, planted = seed_story(dsn)
    claim = claim_for(seq, CHAPTERS + 1)
    hits, timings = 0, []
    with connect(dsn) as conn:
        stored = conn.execute("select count(*) as n from storyworker.passages").fetchone()["n"]
        for i, where in planted.items():
            query = f"{NAMES[(i + 1) % len(NAMES)]} asks about the {OBJECTS[i]} with {DETAILS[i]}"
            started = time.perf_counter()
            (found,) = recall(conn, claim, [query], config="english", limit=K)
            timings.append((time.perf_counter() - started) * 1000)
            hits += where in [(p.chapter, p.offset) for p in found]
    print(f"{'recall of 50 planted facts, full-text search, k=4':<58} {hits / FACTS:>12.2f}")
    label = f"recall query over the story's {stored} passages, p50 (ms)"
    print(f"{label:<58} {statistics.median(timings):>12.2f}")
    print(f"{'recall with embeddings':<58} {'n/a':>12}  (passages are not embedded yet)")


def story_at(chapter: int, budget: int) -> ChapterRequest:
    """Chapter `chapter` of a 100-chapter story, with everything its claim would read."""
    rng = random.Random(chapter)
    summaries = [
        ChapterSummary(n, " ".join(filler(rng) for _ in range(3))) for n in range(1, chapter)
    ]
    arc: list[ArcEntry] = []
    for item in summaries:
        arc = update_arc(arc, item.chapter, item.text)
    bible = update_bible([], [(n, f"{n}, of the harbour town") for n in NAMES], chapter - 1,
                         summaries[-1].text if summaries else "")  # fmt: skip
    earlier = [Passage(n, 0, filler(rng) * 3) for n in range(1, min(chapter, 5))]
    story = StoryContext(
        chapter_count=100,
        arc=tuple(ChapterSummary(e.chapter, e.gist) for e in arc),
        summaries=tuple(summaries[-8:]),
        written=tuple(s.chapter for s in summaries),
        previous_ending=(filler(rng) * 12) if summaries else "",
        passages=tuple(earlier),
        characters=tuple(bible),
        budget_tokens=budget,
    )
    prefs = parse_preferences({"bullet_count": 4, "words_per_bullet": 300})
    return ChapterRequest(chapter, prefs, "Bench", "A harbour town.", story=story)


def measure_assembly() -> None:
    outline = Outline("T", ("Mara finds the compass", "b", "c", "d"))
    request = story_at(100, 6000)
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        prompts.section_prompt(request, outline, 0, "")
        timings.append((time.perf_counter() - started) * 1000)
    print(
        f"{'section prompt built at chapter 100, p50 (ms)':<58} {statistics.median(timings):>12.2f}"
    )
    for chapter in (1, 2, 10, 25, 50, 100):
        request = story_at(chapter, 6000)
        built = prompts.step_context(request, outline, 0, "").manifest
        whole = prompts.section_prompt(request, outline, 0, "")
        tokens = estimate_tokens(whole.system) + estimate_tokens(whole.user)
        print(
            f"{f'chapter {chapter}: story so far / whole prompt (est. tokens)':<58}"
            f" {built['used_tokens']:>12,} / {tokens:,}  (budget 6,000)"
        )


def run(bench: Bench) -> None:
    print("\n## 10. the story so far: retrieval recall, assembly time, prompt size")
    with bench.database() as dsn:
        measure_recall(dsn)
    measure_assembly()
