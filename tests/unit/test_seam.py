"""The queue seam, declared once (`supervisor.db.seam.JobQueue`): the SQL, the queue
functions, `WorkerQueue` and the in-memory fake all implement exactly its statements,
with its signatures, and share its rules. A statement added to the seam and missing
anywhere fails here, naming what is missing."""

from __future__ import annotations

import inspect
import random
import uuid

import pytest

from supervisor.db import queue, seam, sql
from supervisor.db.jobs import FENCE, Claim, Status
from supervisor.db.retries import failed_attempt
from tests.fakes import MemoryQueue

#: What the fake offers the tests beyond the seam: setting up jobs.
FAKE_HELPERS = {"add"}


def public_methods(cls: type) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_the_seam_lists_the_workers_statements():
    assert seam.STATEMENTS == (
        "claim",
        "start_chapter",
        "note_unknown_preferences",
        "cut_back",
        "append_text",
        "send_live",
        "checkpoint",
        "finish",
        "fail",
        "release",
        "recall",
        "recall_with_vectors",
    )
    assert set(seam.FENCED) == set(seam.STATEMENTS) - {"claim", "recall", "recall_with_vectors"}


@pytest.mark.parametrize("name", seam.STATEMENTS)
def test_each_statement_has_its_query_and_its_queue_function(name):
    assert seam.query(name) in sql.queries(), f"queries.sql has no {seam.query(name)!r}"
    function = getattr(queue, name, None)
    assert function is not None, f"supervisor.db.queue has no function {name!r}"
    params = list(inspect.signature(function).parameters.values())
    assert params[0].name == "conn", f"queue.{name} does not take the connection first"
    bound = inspect.signature(function).replace(parameters=params[1:])
    assert bound == seam.signature(name), f"queue.{name}{bound} is not {seam.signature(name)}"


@pytest.mark.parametrize("name", seam.STATEMENTS)
def test_the_worker_queue_runs_each_statement_over_its_connection(name):
    conn = object()
    method = getattr(queue.WorkerQueue(conn), name)  # type: ignore[arg-type]
    assert method.func is getattr(queue, name) and method.args == (conn,)
    assert inspect.signature(method) == seam.signature(name)


def test_the_worker_queue_has_nothing_beyond_the_seam():
    with pytest.raises(AttributeError, match="not one of the worker's statements"):
        queue.WorkerQueue(object()).rescue  # type: ignore[arg-type]  # noqa: B018


def test_the_memory_queue_implements_exactly_the_seam():
    offered = public_methods(MemoryQueue)
    missing = set(seam.STATEMENTS) - offered
    assert not missing, f"MemoryQueue lacks the statements {sorted(missing)}"
    extra = offered - set(seam.STATEMENTS) - FAKE_HELPERS
    assert not extra, f"MemoryQueue has methods the seam does not list: {sorted(extra)}"
    for name in seam.STATEMENTS:
        fake = inspect.signature(getattr(MemoryQueue(), name))
        assert fake == seam.signature(name), (
            f"MemoryQueue.{name}{fake} is not {seam.signature(name)}"
        )


@pytest.mark.parametrize("name", seam.FENCED)
def test_each_statement_on_behalf_of_a_claim_is_fenced_in_sql(name):
    text = " ".join(sql.text(seam.query(name)).split())
    assert FENCE in text, f"{name} does not match on {FENCE!r}"


def a_claim(attempt: int = 1) -> Claim:
    job_id = uuid.uuid4()
    return Claim(job_id, "host:1", attempt, job_id, uuid.uuid4(), uuid.uuid4(), {}, None)


def test_the_fence_in_python_is_the_sqls():
    claim = a_claim(attempt=2)
    assert claim.holds(claim.job_id, Status.PROCESSING, "host:1", 2)
    assert not claim.holds(claim.job_id, Status.CANCELLED, "host:1", 2)
    assert not claim.holds(claim.job_id, Status.PROCESSING, "host:2", 2)
    assert not claim.holds(claim.job_id, Status.PROCESSING, "host:1", 3)
    assert not claim.holds(uuid.uuid4(), Status.PROCESSING, "host:1", 2)


@pytest.mark.parametrize(
    ("attempt", "retryable", "status"),
    [(1, True, Status.PENDING), (3, True, Status.PENDING), (4, True, Status.FAILED),
     (1, False, Status.FAILED)],
)  # fmt: skip
def test_the_memory_queue_settles_a_failure_by_the_queues_rule(attempt, retryable, status):
    memory = MemoryQueue()
    job = memory.add(attempts=attempt - 1)
    claim = memory.claim("host:1")
    assert claim is not None and claim.attempt == attempt
    policy = {"retryable": retryable, "max_retries": 3, "backoff_base": 10.0}
    outcome = memory.fail(claim, "boom", rng=random.Random(7), **policy)
    rule = failed_attempt(claim, "boom", rng=random.Random(7), **policy)
    assert (job.status, outcome) == (status, rule.outcome(job.id))
