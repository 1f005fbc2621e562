"""What every command shares: one line on stderr and a distinct exit code for
storyworker's errors, and a connection for a command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
import psycopg

from supervisor import exitcodes
from supervisor.config import load_settings
from supervisor.errors import (
    ChapterNotFoundError,
    ConfigError,
    DatabaseError,
    JobNotFoundError,
    StoryworkerError,
)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    """Print one line to stderr, every secret masked, and exit with `code`."""
    from supervisor.redact import redact

    click.echo(f"storyworker: error: {redact(message)}", err=True)
    sys.exit(code)


def friendly_errors(func: F) -> F:
    """Turn storyworker's errors into one line on stderr and a distinct exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc), exitcodes.CONFIG)
        except DatabaseError as exc:
            fail(str(exc), exitcodes.UNAVAILABLE)
        except (JobNotFoundError, ChapterNotFoundError) as exc:
            fail(str(exc), exitcodes.NO_SUCH_JOB)
        except StoryworkerError as exc:
            fail(str(exc), exitcodes.FAILURE)

    return wrapper  # type: ignore[return-value]


class SettingFlag(click.ParamType):
    """A flag that overrides a variable (`--concurrency` for WORKER_CONCURRENCY): read
    by that variable's own parser, so a bad value is a configuration error (78, one
    line), as the variable's would be, never click's usage error (2)."""

    def __init__(self, variable: str, metavar: str = "N") -> None:
        self.variable = variable
        self.name = metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        from supervisor.config import parse_variable

        flag = param.opts[0] if param is not None and param.opts else self.variable
        try:
            return parse_variable(self.variable, str(value), label=flag)
        except ConfigError as exc:
            fail(str(exc), exitcodes.CONFIG)


def connect(command: str) -> psycopg.Connection:
    """A connection for `storyworker COMMAND`, from the environment's settings, to a
    migrated database (else the same one-line error as `run`), loading timestamps
    Python cannot hold (`infinity`) instead of failing on them."""
    from supervisor.db import timestamps
    from supervisor.db.connection import connect_for
    from supervisor.db.migrate import require_migrated

    conn = connect_for(load_settings(), command)
    try:
        require_migrated(conn)
    except BaseException:
        conn.close()
        raise
    timestamps.register(conn)
    return conn
