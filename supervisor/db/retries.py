"""What a failed attempt does to its job: the one rule, used by `queue.fail` to compute
the `fail` statement's parameters and by the in-memory queue of the unit tests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from uuid import UUID

from supervisor.db.jobs import Claim, Outcome, Status

#: Longest delay between two attempts, however many retries are configured.
MAX_RETRY_DELAY_SECONDS = 3600.0


def retry_delay(attempt: int, base: float, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after `attempt` failed: exponential with
    "equal jitter", so each delay is random yet always longer than the one before."""
    ceiling = min(base * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS)
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


@dataclass(frozen=True)
class FailedAttempt:
    """The decision for one failed attempt: back to pending after `delay` seconds
    (`requeue`), or failed; `message` is the job's error_message."""

    requeue: bool
    delay: float
    message: str

    @property
    def status(self) -> Status:
        return Status.PENDING if self.requeue else Status.FAILED

    @property
    def retry_in_seconds(self) -> float | None:
        return self.delay if self.requeue else None

    def outcome(self, job_id: UUID) -> Outcome:
        return Outcome(job_id, self.status, self.retry_in_seconds)


def failed_attempt(
    claim: Claim,
    message: str,
    *,
    retryable: bool,
    max_retries: int,
    backoff_base: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> FailedAttempt:
    """Back to pending while retries remain (retryable errors only; `attempts` already
    counts this attempt), otherwise failed, with a message that says which."""
    requeue = retryable and claim.attempt <= max_retries
    delay = max(retry_delay(claim.attempt, backoff_base, rng), retry_after or 0.0)
    total = max_retries + 1
    if requeue:
        text = f"attempt {claim.attempt} of {total} failed: {message} (retrying in {delay:.0f}s)"
    elif retryable:
        text = f"failed after {claim.attempt} attempts: {message}"
    else:
        text = message
    return FailedAttempt(requeue, delay, text)
