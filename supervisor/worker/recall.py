"""The passages of earlier chapters a chapter's steps are offered: by full-text search
always, and by embedding similarity as well when the provider has an embedding model,
the top k of the two rankings fused (generation/story/retrieval.py). The writer asks
twice a chapter at most: for the outline (the chapter's beats and title), then for all
its bullets; each time one embedding request embeds every query, and its failure costs
that retrieval its embeddings, never the chapter. What was used is recorded in the
job's manifest (`retrieval`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from generation.errors import GenerationError
from generation.story.context import PASSAGES_PER_STEP
from generation.story.retrieval import fuse
from generation.types import Passage, Provider
from supervisor.db.jobs import Claim
from supervisor.db.seam import JobQueue
from supervisor.logs import fields

log = logging.getLogger(__name__)


@dataclass
class Recaller:
    """The writer's `Recall` for one claim (see the module docstring)."""

    queue: JobQueue
    provider: Provider
    claim: Claim
    #: The story language's text search configuration.
    config: str
    #: Whether any earlier chapter is written (no query at all when none is).
    written: bool
    #: Told what the retrieval used (the manifest's `retrieval`).
    record: Callable[[Mapping[str, Any]], None]

    def __call__(self, queries: Sequence[str]) -> list[list[Passage]]:
        if not self.written or not queries:
            return [[] for _ in queries]
        vectors, note = self._embedded(queries)
        k = PASSAGES_PER_STEP
        if vectors:
            # Asked after the call: a fallback provider names the model that embedded.
            model = self.provider.embedding_model
            text, similar = self.queue.recall_with_vectors(
                self.claim, queries, vectors, config=self.config, model=model, limit=k
            )
            found = sum(len(passages) for passages in similar)
            note = {"by": "full-text+embeddings", "embedding_model": model, "similar_found": found}
        else:
            text = self.queue.recall(self.claim, queries, config=self.config, limit=k)
            similar = [[] for _ in queries]
        self.record(note)
        return [fuse([t, s], k) for t, s in zip(text, similar, strict=True)]

    def _embedded(self, queries: Sequence[str]) -> tuple[list[list[float]], dict[str, Any]]:
        """The queries' embeddings in one request, or none and why (the manifest's
        note for full-text search alone)."""
        embed_many = getattr(self.provider, "embed_many", None)
        if not self.provider.embedding_model or embed_many is None:
            return [], {"by": "full-text"}
        try:
            vectors = embed_many(queries)
        except GenerationError as exc:
            log.warning(
                "the bullets could not be embedded: passages by full-text search alone",
                extra=fields(job_id=self.claim.job_id, error=str(exc)),
            )
            return [], {"by": "full-text", "embedding_error": str(exc)[:300]}
        return (vectors, {}) if len(vectors) == len(queries) else ([], {"by": "full-text"})
