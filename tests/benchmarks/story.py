"""Section 10: the story so far (issue 22).

- Recall of planted facts: a 30-chapter story (20 paragraphs a chapter) whose first ten
  chapters plant 50 facts (a named object with a distinctive detail); the rest of the
  story mentions the same names and objects without the details. For each fact, a later
  section's bullet names its subject in other words; is the planting passage among the
  k=4 the worker retrieves? By PostgreSQL full-text search (idf-weighted) alone, and as
  the worker retrieves with an embedding model: full-text and embedding similarity
  fused (supervisor/worker/recall.py), the similarity ranked in Python and, where the
  server has pgvector, in the database. The embedding is the offline provider's:
  a deterministic 768-value bag-of-words hash (generation/providers/offline.py), local
  and lexical, not a semantic model: it measures the machinery (storage, both
  rankings, fusion, their cost), not what a real embedding model adds.
- Context assembly at chapter 100: the whole section prompt built (context builder
  included), and the recall query over 2,000 passages.
- Prompt size over chapters 1..100: what the story-so-far parts take of the budget, and
  the whole section prompt, in estimated tokens.
- What the chapter-memory call (summary, arc and bible in one answer) costs over the
  plain summary call it replaces: its prompt at chapter 100, and its answer at its
  bounds, in estimated tokens.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import time
import uuid

from generation.providers.calls import max_output_tokens
from generation.providers.offline import OFFLINE_EMBEDDING_MODEL, OfflineProvider, bag_of_words
from generation.story import prompts
from generation.story.context import estimate_tokens
from generation.story.extraction import memory_ask
from generation.story.memory import ArcEntry, passages, update_arc, update_bible
from generation.story.preferences import parse_preferences
from generation.types import (
    ChapterRequest,
    ChapterSummary,
    Outline,
    Passage,
    StoryContext,
)
from supervisor.db import memory, sql
from supervisor.db.jobs import ChapterContext, Claim
from supervisor.db.memory import recall, vector_literal
from supervisor.db.queue import WorkerQueue
from supervisor.worker.recall import Recaller
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
DIMENSIONS = 768


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
            vectors = [vector_literal(bag_of_words(b, DIMENSIONS)) for _, b in stored]
            sql.run(conn, "store_passages", {
                "chapter_id": chapter, "sequence_id": seq, "chapter_number": number,
                "offsets": [o for o, _ in stored], "bodies": [b for _, b in stored],
                "config": "english", "vectors": vectors,
                "embedding_model": OFFLINE_EMBEDDING_MODEL,
            })  # fmt: skip
    return seq, planted


def claim_for(seq: uuid.UUID, before: int) -> Claim:
    context = ChapterContext(seq, uuid.uuid4(), before, "", "Bench", None)
    return Claim(uuid.uuid4(), "bench", 1, uuid.uuid4(), seq, uuid.uuid4(), {}, None, context)


def query_of(i: int) -> str:
    return f"{NAMES[(i + 1) % len(NAMES)]} asks about the {OBJECTS[i]} with {DETAILS[i]}"


def measure_recall(dsn: str) -> None:
    seq, planted = seed_story(dsn)
    claim = claim_for(seq, CHAPTERS + 1)
    with connect(dsn) as conn:
        stored = conn.execute("select count(*) as n from storyworker.passages").fetchone()["n"]
        hits, timings = 0, []
        for i, where in planted.items():
            started = time.perf_counter()
            (found,) = recall(conn, claim, [query_of(i)], config="english", limit=K)
            timings.append((time.perf_counter() - started) * 1000)
            hits += where in [(p.chapter, p.offset) for p in found]
        print(f"{'recall of 50 planted facts, full-text search, k=4':<58} {hits / FACTS:>12.2f}")
        label = f"recall query over the story's {stored} passages, p50 (ms)"
        print(f"{label:<58} {statistics.median(timings):>12.2f}")
        alone(conn, claim, planted)
        fused(conn, claim, planted, "in Python")
        if conn.execute("select 1 from pg_available_extensions where name = 'vector'").fetchone():
            conn.execute("create extension if not exists vector")
            memory._VECTOR_SCHEMA.pop(conn, None)
            fused(conn, claim, planted, "pgvector")
        else:
            print(f"{'  with embeddings, pgvector':<58} {'n/a':>12}  (no pgvector on this server)")


def alone(conn, claim: Claim, planted: dict[int, tuple[int, int]]) -> None:
    """Recall of the embedding similarity alone: what the stand-in embedding is worth."""
    provider = OfflineProvider(dimensions=DIMENSIONS)
    queries = [query_of(i) for i in planted]
    found = memory.recall_similar(
        conn, claim, provider.embed_many(queries), model=provider.embedding_model, limit=K
    )
    hits = sum(place in [(p.chapter, p.offset) for p in passages]
               for place, passages in zip(planted.values(), found, strict=True))  # fmt: skip
    label = "  similarity alone (bag-of-words embedding), k=4"
    print(f"{label:<58} {hits / FACTS:>12.2f}")


def fused(conn, claim: Claim, planted: dict[int, tuple[int, int]], where: str) -> None:
    """Recall as the worker retrieves with an embedding model (both rankings fused)."""
    provider = OfflineProvider(dimensions=DIMENSIONS)
    recaller = Recaller(WorkerQueue(conn), provider, claim, "english", True, lambda note: None)
    hits, timings = 0, []
    for i, place in planted.items():
        started = time.perf_counter()
        (found,) = recaller([query_of(i)])
        timings.append((time.perf_counter() - started) * 1000)
        hits += place in [(p.chapter, p.offset) for p in found]
    label = f"  with embeddings (bag-of-words, similarity {where}), k=4"
    print(f"{label:<58} {hits / FACTS:>12.2f}")
    label = f"  recall with embeddings, similarity {where}, p50 (ms)"
    print(f"{label:<58} {statistics.median(timings):>12.2f}")


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


def measure_memory_cost() -> None:
    """What the chapter-memory call costs over the plain summary call it replaces, at
    chapter 100 of a story with a full arc, its characters and 80 facts, for a chapter
    of 1,200 words; the answer at its bounds (150-word summary, 600-word arc, 12
    characters, 8 facts)."""
    rng = random.Random(5)
    base = story_at(100, 6000)
    facts = tuple(f"{fact(i % FACTS)} (chapter {i % 99 + 1})" for i in range(80))
    request = dataclasses.replace(base, story=dataclasses.replace(base.story, facts=facts))
    outline = Outline("T", ("a", "b", "c", "d"))
    text = "\n\n".join(filler(rng) for _ in range(30))
    ask = memory_ask(request, outline, text)
    summary = prompts.summary_prompt(request, outline, text)
    schema = estimate_tokens(json.dumps(ask.schema))
    asked = estimate_tokens(ask.prompt.system) + estimate_tokens(ask.prompt.user) + schema
    plain = estimate_tokens(summary.system) + estimate_tokens(summary.user)
    words = " ".join(["word"] * 20)
    bounded = {
        "summary": " ".join(["word"] * 150),
        "arc": [{"chapter": n, "gist": " ".join(["word"] * 6)} for n in range(1, 101)],
        "characters": [{"name": n, "about": words, "state": words} for n in NAMES * 2],
        "facts": [words] * 8,
    }
    answer = estimate_tokens(json.dumps(bounded))
    print(f"{'memory call at chapter 100: prompt / summary prompt (est.)':<58}"
          f" {asked:>12,} / {plain:,} tokens (schema {schema:,})")  # fmt: skip
    print(f"{'memory answer at its bounds / a 150-word summary (est.)':<58}"
          f" {answer:>12,} / {estimate_tokens(bounded['summary']):,} tokens"
          f" (output limit {max_output_tokens(ask.words):,})")  # fmt: skip


def run(bench: Bench) -> None:
    print("\n## 10. the story so far: retrieval recall, assembly time, prompt size")
    with bench.database() as dsn:
        measure_recall(dsn)
    measure_assembly()
    measure_memory_cost()
