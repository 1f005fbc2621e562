"""The Jobs page's filter as the query string carries it: parsed and checked here, so
the database only ever sees typed values. A value that does not parse is left out
and said on the page, never passed on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode
from uuid import UUID

from supervisor.db.dashboard import STATUSES, Cursor, JobFilter

#: Query-string names of the filter's fields.
FIELDS = ("status", "user", "story", "provider", "q", "from", "to")
MAX_TEXT = 200


@dataclass(frozen=True)
class Parsed:
    where: JobFilter
    #: The filter's fields as given (for the form and for links), valid ones only.
    args: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    after: Cursor | None = None

    def query(self, **extra: str) -> str:
        """The filter (plus `extra`) as a query string."""
        return urlencode({**self.args, **extra})


def _uuid(raw: str) -> UUID:
    return UUID(raw.strip())


def _time(raw: str) -> datetime:
    """An ISO date and time; without an offset it is UTC (the page shows UTC)."""
    value = datetime.fromisoformat(raw.strip())
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _status(raw: str) -> str:
    if raw not in STATUSES:
        raise ValueError(raw)
    return raw


def _text(raw: str) -> str:
    text = raw.strip()
    if not text or len(text) > MAX_TEXT:
        raise ValueError(raw)
    return text


#: query name -> (JobFilter field, parser, what a valid value looks like)
PARSERS = {
    "status": ("status", _status, f"one of {', '.join(STATUSES)}"),
    "user": ("user_id", _uuid, "a user id (uuid)"),
    "story": ("sequence_id", _uuid, "a story id (uuid)"),
    "provider": ("provider", _text, f"a provider name of at most {MAX_TEXT} characters"),
    "q": ("text", _text, f"text of at most {MAX_TEXT} characters"),
    "from": ("created_from", _time, "a date and time, e.g. 2026-12-01T09:00"),
    "to": ("created_to", _time, "a date and time, e.g. 2026-12-01T18:00"),
}


def parse(args: Mapping[str, str]) -> Parsed:
    """The filter in `args` (a request's query string), and what was wrong with it."""
    values: dict = {}
    kept: dict[str, str] = {}
    problems: list[str] = []
    for name, (attribute, parser, expected) in PARSERS.items():
        raw = (args.get(name) or "").strip()
        if not raw:
            continue
        try:
            values[attribute] = parser(raw)
        except ValueError:
            problems.append(f"{name} must be {expected}; ignored")
            continue
        kept[name] = raw
    after = None
    if args.get("after"):
        try:
            after = Cursor.parse(args["after"])
        except ValueError:
            problems.append("after is not a page cursor; showing the newest jobs")
    return Parsed(JobFilter(**values), kept, problems, after)
