"""Embeddings on an OpenAI-compatible server: many texts to a request, asked for as
base64 (a quarter of the bytes of JSON floats) and decoded here (a server that answers
floats anyway is read as well); and the boot check that the model makes one flat
vector of the configured size."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from generation.errors import MalformedOutputError, ModelUnavailableError
from generation.providers.calls import Operation, RequestRunner, Usage
from generation.providers.openai_wire import ModelSlot, embedding_shape_error, embedding_values

log = logging.getLogger(__name__)

#: Texts per embeddings request (OpenAI takes up to 2,048; smaller servers fewer).
EMBEDDING_BATCH = 64
#: What the check embeds to see the embedding model's answer.
CHECK_EMBEDDING_TEXT = "storyworker checks its embedding model"
#: Holds True once this process has said that nothing is embedded (every chapter would
#: say the same).
_SAID_NO_EMBEDDING: set[bool] = set()


class Embeddings:
    """The provider's embedding model (`slot`, None when none is configured) over its
    SDK client and request runner."""

    def __init__(
        self, client: Any, runner: RequestRunner, slot: ModelSlot | None, label: str,
        size: int | None,
    ) -> None:  # fmt: skip
        self._client, self._runner, self.slot, self._label = client, runner, slot, label
        #: The size every embedding must have: configured, else the one seen at boot.
        self.size = size

    def many(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length embeddings of `texts`, in order, in one operation of
        EMBEDDING_BATCH texts a request; [] without a request when no embedding model
        is configured (or there is nothing to embed)."""
        if self.slot is None:
            _say_no_embedding()
            return []
        if not texts:
            return []
        model = self.slot.name
        with self._runner.operation("embedding", model) as op:
            vectors: list[list[float]] = []
            for start in range(0, len(texts), EMBEDDING_BATCH):
                vectors += self._batch(op, model, texts[start : start + EMBEDDING_BATCH])
            return vectors

    def _batch(self, op: Operation, model: str, texts: Sequence[str]) -> list[list[float]]:
        response = self._runner.send(
            op,
            lambda: self._client.embeddings.create(
                model=model, input=list(texts), encoding_format="base64"
            ),
        )
        usage = getattr(response, "usage", None)
        op.add_usage(Usage(input_tokens=getattr(usage, "prompt_tokens", 0) or 0))
        data = sorted(response.data or [], key=lambda item: getattr(item, "index", 0) or 0)
        if len(data) != len(texts):
            raise MalformedOutputError(
                f"{self._label} returned {len(data)} embeddings for {len(texts)} texts"
            )
        vectors = [embedding_values(item.embedding, self._label) for item in data]
        for values in vectors:
            if self.size is not None and len(values) != self.size:
                raise MalformedOutputError(
                    f"{self._label} returned an embedding of {len(values)} values, "
                    f"expected {self.size}"
                )
        return vectors

    def check(self, op: Operation, timeout: float) -> None:
        """One embedding, which must be one flat vector of the configured size (or of
        any size, then remembered): else ModelUnavailableError naming the variable."""
        slot = self.slot
        if slot is None:
            return
        response = self._runner.send(
            op,
            lambda: self._client.embeddings.create(
                model=slot.name,
                input=CHECK_EMBEDDING_TEXT,
                encoding_format="base64",
                timeout=timeout,
            ),
            tries=1,
            model=slot.name,
        )
        raw = response.data[0].embedding if response.data else None
        why = embedding_shape_error(raw, slot, self._label, self.size)
        if why is not None:
            raise ModelUnavailableError(why)
        self.size = len(embedding_values(raw, self._label))


def _say_no_embedding() -> None:
    if not _SAID_NO_EMBEDDING:
        _SAID_NO_EMBEDDING.add(True)
        log.warning(
            "chapter summaries and passages are stored without an embedding: "
            "OPENAI_EMBEDDING_MODEL is not set"
        )
