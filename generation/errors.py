"""The generation error hierarchy.

Every failure that leaves this package is a `GenerationError`, split by what the caller
should do about it: try the job again later (`RetryableError`) or give up on it
(`PermanentError`). Each class's docstring is its default message.

Across that split, `provider_wide` marks the faults of the provider rather than of the
job (a rejected key, a withdrawn model, a spent daily quota or disabled billing): every
other job would fail the same way, so the caller may pause all work on that provider
instead of failing job after job.
"""

from __future__ import annotations


class GenerationError(Exception):
    """Chapter generation failed."""

    retryable: bool = False
    #: Every job would fail the same way until the provider or its configuration changes.
    provider_wide: bool = False
    #: Requests the operation made before it gave up (set by the call machinery).
    attempts: int = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class RetryableError(GenerationError):
    """The provider failed in a way that may pass; try again later."""

    retryable = True

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: Seconds the provider asked us to wait, when it said (Retry-After, RetryInfo).
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    """The provider is rate limiting us (HTTP 429)."""


class QuotaExhaustedError(RetryableError):
    """The provider will not serve us until its quota resets or billing is enabled."""

    # Retryable: the job itself is fine. Provider-wide: not retried inside the call, and
    # the caller may pause every worker on this provider until it resets.
    provider_wide = True


class ProviderUnavailableError(RetryableError):
    """The provider could not be reached or answered with a server error."""


class MalformedOutputError(RetryableError):
    """The provider's answer did not have the expected shape."""


class PermanentError(GenerationError):
    """The job cannot succeed as it stands; retrying will not help."""


class InvalidPreferencesError(PermanentError):
    """user_preferences is invalid."""

    def __init__(self, field: str, rule: str, *, source: str = "user_preferences") -> None:
        where = f"{source}.{field}" if field else source
        super().__init__(f"{where} {rule}")
        self.field = field
        self.rule = rule
        #: Where the bad value came from: the job's `user_preferences`, or the story's
        #: defaults (`sequences.preferences`).
        self.source = source


class RefusedError(PermanentError):
    """The model refused to write this content."""


class AuthenticationError(PermanentError):
    """The provider rejected the API key."""

    provider_wide = True


class ModelUnavailableError(PermanentError):
    """The configured model does not exist (any more) or cannot do what we ask of it."""

    provider_wide = True


class InvalidRequestError(PermanentError):
    """The provider rejected the request as invalid."""


class OutputLimitError(RetryableError):
    """The model stopped at its output limit: what it wrote so far is unfinished (the
    writer continues it from the exact point, or writes the section again)."""


class SectionRestart(RetryableError):
    """The text streamed for this section so far is void: write the section again from
    the last checkpoint (a fallback takes over from a provider that refused partway)."""
