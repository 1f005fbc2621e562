"""Keeping secrets out of logs, errors and health output: one place for the rules.

The patterns are the health server's (`health.checks.mask_secrets`, which the health
app applies to everything it shows); here the driver's own conninfo parser adds the one
thing a pattern cannot know, the password's actual value, so it is masked wherever a
message quotes it.
"""

from __future__ import annotations

from health.checks import mask_secrets


def dsn_password(dsn: str) -> str | None:
    """The password a DSN carries in any libpq form (URL, query parameter, key=value
    with spaces or quotes); None when it has none or cannot be parsed."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(dsn).get("password")
    except ProgrammingError:
        return None
    return str(password) if password else None


def redact(text: str, dsn: str | None = None) -> str:
    """`text` with every credential masked, including `dsn`'s password wherever it is
    quoted verbatim."""
    password = dsn_password(dsn) if dsn else None
    if password:
        text = text.replace(password, "***")
    return mask_secrets(text)


def redact_dsn(dsn: str | None) -> str:
    """The DSN with its password replaced by `***`, safe for logs and errors."""
    return redact(dsn, dsn) if dsn else ""
