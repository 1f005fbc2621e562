"""The generation error hierarchy.

Every failure that leaves this package is a `GenerationError`, split by what the caller
should do about it: try the job again later (`RetryableError`) or give up on it
(`PermanentError`). Each class's docstring is its default message.
"""

from __future__ import annotations


class GenerationError(Exception):
    """Chapter generation failed."""

    retryable: bool = False

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


class ProviderUnavailableError(RetryableError):
    """The provider could not be reached or answered with a server error."""


class MalformedOutputError(RetryableError):
    """The provider's answer did not have the expected shape."""


class PermanentError(GenerationError):
    """The job cannot succeed as it stands; retrying will not help."""


class InvalidPreferencesError(PermanentError):
    """user_preferences is invalid."""

    def __init__(self, field: str, rule: str) -> None:
        where = f"user_preferences.{field}" if field else "user_preferences"
        super().__init__(f"{where} {rule}")
        self.field = field
        self.rule = rule


class RefusedError(PermanentError):
    """The model refused to write this content."""


class AuthenticationError(PermanentError):
    """The provider rejected the API key."""


class InvalidRequestError(PermanentError):
    """The provider rejected the request as invalid."""
