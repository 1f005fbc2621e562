"""storyworker's own error hierarchy. Each class's docstring is its default message."""

from __future__ import annotations


class StoryworkerError(Exception):
    """storyworker failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(StoryworkerError):
    """The configuration is invalid."""


class DatabaseError(StoryworkerError):
    """The database could not be reached or refused the operation."""


class ConnectionLostError(DatabaseError):
    """Lost the database connection."""


class StatementError(DatabaseError):
    """The database refused a statement; the connection is still usable."""

    def __init__(
        self, message: str | None = None, *, sqlstate: str = "", retryable: bool = False
    ) -> None:
        super().__init__(message)
        #: The server's SQLSTATE ("23514"), "" when it sent none.
        self.sqlstate = sqlstate
        #: True when the same statement may succeed later (a deadlock, a timeout,
        #: the server short of resources); False for data it will always refuse.
        self.retryable = retryable


class ConstraintViolation(StatementError):
    """The database refused a write that breaks one of its constraints."""

    def __init__(
        self, message: str | None = None, *, constraint: str = "", sqlstate: str = ""
    ) -> None:
        super().__init__(message, sqlstate=sqlstate, retryable=False)
        #: The violated constraint's (or unique index's) name, "" when unknown.
        self.constraint = constraint


class NotMigratedError(DatabaseError):
    """The database schema is not migrated; run `storyworker migrate`."""


class JobNotFoundError(StoryworkerError):
    """No such job."""


class ChapterNotFoundError(StoryworkerError):
    """No such chapter."""


class InvalidStateError(StoryworkerError):
    """The job is not in a state that allows this."""


class LeaseLostError(StoryworkerError):
    """This worker no longer holds the job (rescued, cancelled or re-claimed)."""
