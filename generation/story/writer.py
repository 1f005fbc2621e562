"""Writes one chapter: outline, sections streamed through callbacks, then its memory
(summary, arc and bible entries: generation/story/extraction.py) and embeddings.

The writer owns the one rule the caller's persistence relies on: the chapter text is
the sections joined by `SECTION_SEPARATOR`, and the separator travels through `on_chunk`
as the start of every section after the first. So the concatenation of all chunks
handed out for sections 0..k is exactly the committed text after section k, and a
resumed run, given that text, carries on as if never interrupted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from generation.errors import MalformedOutputError
from generation.story.callbacks import ChapterCallbacks
from generation.story.extraction import ModelMemory, remember
from generation.story.guards import count_words
from generation.story.memory import passages as cut_passages
from generation.story.prompts import step_context
from generation.story.section import SECTION_SEPARATOR, SectionStats, write_section
from generation.types import (
    ChapterRequest,
    Checkpoint,
    Outline,
    Passage,
    Provider,
)


@dataclass(frozen=True)
class ChapterResult:
    """A finished chapter."""

    outline: Outline
    text: str
    summary: str
    embedding: list[float]
    embedding_model: str
    word_count: int
    #: Its memory as the model wrote it; None when the extractive one stands in.
    memory: ModelMemory | None = None
    #: The chapter cut into (offset, passage) for retrieval, and their embeddings
    #: (by `embedding_model`; empty without one).
    passages: tuple[tuple[int, str], ...] = ()
    passage_vectors: tuple[list[float], ...] = ()


__all__ = [
    "SECTION_SEPARATOR",
    "ChapterCallbacks",
    "ChapterResult",
    "Recall",
    "SectionStats",
    "write_chapter",
]

#: For each query (the outline's, or each section's bullet), the passages of earlier
#: chapters relevant to it, best first: one call for all of a chapter's sections.
Recall = Callable[[Sequence[str]], Sequence[Sequence[Passage]]]


def _no_recall(queries: Sequence[str]) -> Sequence[Sequence[Passage]]:
    return [() for _ in queries]


def write_chapter(
    request: ChapterRequest,
    provider: Provider,
    checkpoint: Checkpoint,
    callbacks: ChapterCallbacks,
    *,
    written_text: str = "",
    recall: Recall = _no_recall,
) -> ChapterResult:
    """Write the rest of a chapter from `checkpoint` and return the finished chapter.

    `written_text` must be the committed text of the `checkpoint.sections_done` finished
    sections. The outline is asked for only when the checkpoint has none, and only the
    unfinished sections are streamed. The embedding is of the summary: it describes the
    whole chapter and stays well within embedding models' input limits, where the full
    text would be cut to its opening pages; a provider without an embedding model gives
    an empty embedding and embedding model. Exceptions from the provider and from the
    callbacks propagate unchanged; an empty section or summary raises
    `MalformedOutputError`. `recall` is asked for the earlier passages relevant to the
    chapter's beats and title (for the outline, when the app gave either), then, once
    the outline is known, for those relevant to each section's bullet (once, for all
    the sections); before each step
    `callbacks.on_context` is told what its prompt holds of the story so far.
    """
    outline = checkpoint.outline
    if outline is None:
        planning = _recalled(request, _outline_passages(request, recall))
        callbacks.on_context("outline", step_context(planning).manifest)
        outline = _new_outline(planning, provider)
        callbacks.on_outline(outline)
    if not 0 <= checkpoint.sections_done <= len(outline.bullets):
        raise ValueError(
            f"checkpoint says {checkpoint.sections_done} sections are done "
            f"but the outline has {len(outline.bullets)}"
        )
    text = written_text
    todo = range(checkpoint.sections_done, len(outline.bullets))
    found = recall([outline.bullets[index] for index in todo]) if todo else []
    for index, passages in zip(todo, found, strict=True):
        step = _recalled(request, passages)
        manifest = step_context(step, outline, index, text).manifest
        callbacks.on_context(f"section {index + 1}", manifest)
        text = write_section(step, provider, outline, index, text_so_far=text, callbacks=callbacks)
    return _finish(request, provider, outline, text, callbacks)


def _outline_passages(request: ChapterRequest, recall: Recall) -> Sequence[Passage]:
    """The earlier passages relevant to what the app says of the chapter (its beats,
    its title), for the outline; none when it says nothing (there is no bullet yet)."""
    said = " ".join(filter(None, (request.preferences.chapter_beats, request.story.chapter_title)))
    return recall([said])[0] if said.strip() else ()


def _recalled(request: ChapterRequest, passages: Sequence[Passage]) -> ChapterRequest:
    """`request` with `passages` for the step at hand."""
    found = tuple(passages)
    if not found and not request.story.passages:
        return request
    return dataclasses.replace(request, story=dataclasses.replace(request.story, passages=found))


def _finish(
    request: ChapterRequest,
    provider: Provider,
    outline: Outline,
    text: str,
    callbacks: ChapterCallbacks,
) -> ChapterResult:
    remembered = remember(request, provider, outline, text)
    callbacks.on_context("memory", remembered.note)
    pieces = tuple(cut_passages(text))
    # One embedding request for the summary and every passage (in batches where the
    # API limits them).
    vectors = _embed(provider, [remembered.summary, *(body for _, body in pieces)])
    return ChapterResult(
        outline=outline,
        text=text,
        summary=remembered.summary,
        embedding=vectors[0] if vectors else [],
        # Asked after the embedding: a fallback names the model that actually embedded;
        # a provider without an embedding model returns none and nothing is stored.
        embedding_model=provider.embedding_model if vectors else "",
        word_count=count_words(text),
        memory=remembered.memory,
        passages=pieces,
        passage_vectors=tuple(vectors[1:]),
    )


def _embed(provider: Provider, texts: list[str]) -> list[list[float]]:
    """`texts` embedded in one operation; a provider without embed_many embeds the
    first (the summary) alone. [] when the provider has no embedding model."""
    many = getattr(provider, "embed_many", None)
    if many is not None:
        vectors = list(many(texts))
        if vectors and len(vectors) != len(texts):
            raise MalformedOutputError(f"{len(vectors)} embeddings came back for {len(texts)}")
        return vectors if vectors and vectors[0] else []
    vector = provider.embed(texts[0])
    return [vector] if vector else []


def _new_outline(request: ChapterRequest, provider: Provider) -> Outline:
    """The provider's outline; the app's own chapter title, when it has one, wins over
    the model's (which was asked to fit it)."""
    outline = provider.outline(request)
    expected = request.preferences.bullet_count
    # Providers promise this; a wrong count would silently change the chapter's shape.
    if len(outline.bullets) != expected:
        raise MalformedOutputError(
            f"the outline has {len(outline.bullets)} bullets instead of {expected}"
        )
    if request.story.chapter_title:
        return Outline(title=request.story.chapter_title, bullets=outline.bullets)
    return outline
