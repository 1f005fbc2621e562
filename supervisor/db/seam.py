"""The worker's statements, declared once: the seam between a worker and the queue.

`JobQueue` lists every statement a worker runs on behalf of its claims, with its
signature. Each has a query of the same name in queries.sql and a function of the same
name in `supervisor.db.queue` (taking the connection first); `WorkerQueue` binds those
to one connection, and the in-memory queue of the unit tests (tests/fakes.py) implements
the same list, sharing the queue's rules (`Claim.holds` for the fence,
`retries.failed_attempt` for a failed attempt). tests/unit/test_seam.py holds them all
to this list, so adding a statement is: its SQL, its queue function, its method here
(and its query's name in QUERY_NAMES when that differs), and the fake's; the test
names what is missing.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from generation.types import Passage
from supervisor.db.jobs import Claim, Outcome
from supervisor.db.memory import StoryMemory


class JobQueue(Protocol):
    """The statements a worker runs on behalf of its claims (`supervisor.db.queue`
    over one connection; an in-memory fake in the unit tests)."""

    #: `max_per_user`: MAX_JOBS_PER_USER (None: no cap); WorkerQueue binds its own.
    def claim(self, owner: str, max_per_user: int | None = None) -> Claim | None: ...
    def start_chapter(
        self,
        claim: Claim,
        *,
        outline: Mapping[str, Any],
        title: str | None,
        checkpoint: Mapping[str, Any],
        progress: int,
        usage: Any = None,
    ) -> None: ...
    def note_unknown_preferences(self, claim: Claim, keys: Sequence[str]) -> bool: ...
    def cut_back(self, claim: Claim, length: int) -> None: ...
    def append_text(self, claim: Claim, text: str) -> None: ...
    def send_live(self, claim: Claim, event: str, payload: Mapping[str, Any]) -> list[str]: ...
    def checkpoint(
        self,
        claim: Claim,
        *,
        text: str,
        progress: int,
        step: str,
        checkpoint: Mapping[str, Any],
        usage: Any = None,
    ) -> None: ...
    def finish(
        self,
        claim: Claim,
        *,
        summary: str,
        embedding: Sequence[float],
        embedding_model: str,
        word_count: int,
        checkpoint: Mapping[str, Any],
        next_owner: str | None = None,
        usage: Any = None,
        context: Mapping[str, Any] | None = None,
        memory: StoryMemory | None = None,
        max_per_user: int | None = None,
    ) -> Claim | None: ...
    def fail(
        self,
        claim: Claim,
        message: str,
        *,
        retryable: bool,
        max_retries: int,
        backoff_base: float,
        retry_after: float | None = None,
        rng: random.Random | None = None,
        usage: Any = None,
        cut_to: int | None = None,
    ) -> Outcome: ...
    def release(self, claim: Claim, usage: Any = None) -> bool: ...
    def recall(
        self, claim: Claim, queries: Sequence[str], *, config: str, limit: int
    ) -> list[list[Passage]]: ...
    def recall_with_vectors(
        self,
        claim: Claim,
        queries: Sequence[str],
        vectors: Sequence[Sequence[float]],
        *,
        config: str,
        model: str,
        limit: int,
    ) -> tuple[list[list[Passage]], list[list[Passage]]]: ...


def _statements() -> tuple[str, ...]:
    return tuple(
        name
        for name, member in vars(JobQueue).items()
        if inspect.isfunction(member) and not name.startswith("_")
    )


#: The worker's statements by name, in the order declared above.
STATEMENTS = _statements()
#: The query a statement runs, where it is not named after the statement.
QUERY_NAMES = {
    "send_live": "live_send",
    "recall": "recall_passages",
    # With recall_passages, in one transaction (passage_vectors without pgvector).
    "recall_with_vectors": "recall_similar",
}
#: Statements on behalf of a claim that only read, and so need no fence.
READS = frozenset({"recall", "recall_with_vectors"})
#: Those run on behalf of a claim (their first argument) that write: each is fenced by
#: it (`jobs.FENCE`).
FENCED = tuple(
    name
    for name in STATEMENTS
    if list(inspect.signature(getattr(JobQueue, name)).parameters)[1:2] == ["claim"]
    and name not in READS
)


def query(name: str) -> str:
    """The name in queries.sql of the query statement `name` runs."""
    return QUERY_NAMES.get(name, name)


def signature(name: str) -> inspect.Signature:
    """Statement `name` as a bound method takes it (without `self`)."""
    full = inspect.signature(getattr(JobQueue, name))
    return full.replace(parameters=list(full.parameters.values())[1:])
