"""Ranking and fusing earlier passages (generation/story/retrieval.py), the worker's
recall over them (supervisor/worker/recall.py, on the in-memory queue), and what
`jobs show` says of retrieval and of the chapter memory."""

from __future__ import annotations

import math
from typing import Any

import pytest

from generation.errors import RateLimitedError
from generation.story.retrieval import RRF_K, fuse, nearest, similarity
from generation.types import Passage
from supervisor.cli.manifest import describe
from supervisor.worker.recall import Recaller
from tests.fakes import MemoryQueue

A, B, C, D = (Passage(n, 10 * n, f"passage {n}") for n in range(1, 5))


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def test_nearest_ranks_by_cosine_and_breaks_ties_by_the_newest_chapter():
    pool = [(A, unit(1, 0)), (B, unit(0, 1)), (C, unit(1, 1)), (D, unit(1, 1))]
    (first, second) = nearest([unit(1, 0), unit(1, 1)], pool, 3)
    assert first == [A, D, C]  # C and D tie: the later chapter first
    assert second == [D, C, B]  # A and B tie: B, the later chapter
    assert similarity(unit(1, 0), unit(0, 1)) == 0


def test_fusion_puts_first_what_both_rankings_place_high():
    # B: 1/62 + 1/61; C: 2/63; A: 1/61 alone; D: 1/62 alone.
    assert fuse([[A, B, C], [B, D, C]], 4) == [B, C, A, D]
    # Either list alone keeps its own order.
    assert fuse([[A, B, C], []], 2) == [A, B]
    assert fuse([[], [D, C]], 4) == [D, C]


def test_fusion_scores_are_reciprocal_ranks():
    # A first in one list only, against B second in both: 1/61 < 2/62.
    assert 1 / (RRF_K + 1) < 2 / (RRF_K + 2)
    assert fuse([[A, B], [C, B]], 1) == [B]


class Provider:
    name = "test"

    def __init__(self, model: str = "m", vectors: Any = None, fail: Exception | None = None):
        self.embedding_model = model
        self.vectors, self.fail = vectors, fail
        self.asked: list[list[str]] = []

    def embed_many(self, texts):
        self.asked.append(list(texts))
        if self.fail:
            raise self.fail
        return [self.vectors[t] for t in texts]


@pytest.fixture
def queue() -> MemoryQueue:
    made = MemoryQueue()
    made.add()
    made.passages = [A, B, C, D]
    made.vectors_of = {A: unit(1, 0), B: unit(0, 1), C: unit(1, 1), D: unit(-1, 0)}
    made.embedded_by = "m"
    return made


def recaller(queue: MemoryQueue, provider: Any, written: bool = True) -> tuple[Recaller, list]:
    notes: list[Any] = []
    claim = queue.claim("w1")
    assert claim is not None
    return Recaller(queue, provider, claim, "english", written, notes.append), notes


def test_recall_fuses_full_text_with_similarity_for_every_bullet_in_one_request(queue):
    provider = Provider(vectors={"passage 4 words": unit(0, 1), "nothing shared": unit(-1, 0)})
    recall, notes = recaller(queue, provider)
    by_both, by_vector = recall(["passage 4 words", "nothing shared"])
    assert provider.asked == [["passage 4 words", "nothing shared"]]
    # Full text finds all four (they share "passage") in order; B is nearest: B first.
    assert by_both[0] == B and set(by_both) == {A, B, C, D}
    assert by_vector == [D, B, C, A]  # no word shared: similarity alone
    assert notes == [{"by": "full-text+embeddings", "embedding_model": "m", "similar_found": 8}]


def test_without_an_embedding_model_recall_is_full_text_alone(queue):
    provider = Provider(model="")
    recall, notes = recaller(queue, provider)
    assert recall(["passage"]) == [[A, B, C, D]]
    assert provider.asked == [] and notes == [{"by": "full-text"}]


def test_a_failed_embedding_of_the_bullets_costs_the_embeddings_not_the_chapter(queue):
    provider = Provider(fail=RateLimitedError("HTTP 429"))
    recall, notes = recaller(queue, provider)
    assert recall(["passage"]) == [[A, B, C, D]]
    assert notes == [{"by": "full-text", "embedding_error": "HTTP 429"}]


def test_nothing_is_asked_for_a_story_with_nothing_written(queue):
    provider = Provider(vectors={})
    recall, notes = recaller(queue, provider, written=False)
    assert recall(["passage"]) == [[]]
    assert provider.asked == [] and notes == []


def test_jobs_show_says_how_passages_were_found_and_how_the_memory_was_made():
    lines = describe(
        {
            "section 1": {"used_tokens": 10, "budget_tokens": 100},
            "memory": {
                "by": "model",
                "elapsed_ms": 1200,
                "characters": ["Mara", "Ilya"],
                "facts": 2,
                "arc_chapters": [1, 2, 3],
                "arc_words": 40,
                "input_tokens": 900,
                "output_tokens": 300,
            },
            "retrieval": {"by": "full-text+embeddings", "embedding_model": "m", "similar_found": 8},
            "outline": {"used_tokens": 5, "budget_tokens": 100},
        }
    )
    assert lines == [
        "outline: 5 of 100 tokens",
        "retrieval: full-text search + embeddings (m, 8 found)",
        "section 1: 10 of 100 tokens",
        "memory: by the model: characters Mara, Ilya, 2 facts, arc of chapters 1,2,3 "
        "(40 words); 1200 ms, 900 in / 300 out tokens",
    ]
    failed = describe({"memory": {"by": "extractive", "error": "HTTP 500", "elapsed_ms": 5}})
    assert failed == ["memory: extractive (the model's extraction failed: HTTP 500); 5 ms"]
    plain = describe({"retrieval": {"by": "full-text", "embedding_error": "HTTP 429"}})
    assert plain == ["retrieval: full-text search (the bullets' embedding failed: HTTP 429)"]
