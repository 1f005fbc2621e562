"""A PostgreSQL connection string's structure, read the way libpq reads it: which
parts of the text are secret, and whether libpq would read it the way its author meant.

Both forms are covered: a URL (`postgresql://user:password@host:port/db?k=v`) and
key=value pairs (`host=h password='it\\'s'`). `secret_spans` says where the secrets are
as positions in the text, so masking never searches for a password's text (which
could also be part of a host name). A string that cannot be read unambiguously has
everything between the scheme (or the start) and its last `@` treated as secret.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote

Span = tuple[int, int]

_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")


class Unreadable(ValueError):
    """The key=value text stops making sense at `position`."""

    def __init__(self, position: int) -> None:
        super().__init__(f"unreadable from position {position}")
        self.position = position


@functools.cache
def _libpq_keys() -> tuple[frozenset[str], frozenset[str]]:
    """(every option libpq knows, the ones it marks as secret: password, sslpassword…)."""
    from psycopg import pq

    options = pq.Conninfo.get_defaults()
    known = frozenset(o.keyword.decode() for o in options)
    secret = frozenset(o.keyword.decode() for o in options if o.dispchar == b"*")
    return known, secret | {"password"}


def shown_key(key: str) -> bool:
    """A key whose value may be printed: one libpq knows and does not call secret."""
    known, secret = _libpq_keys()
    return key in known and key not in secret


def is_url(dsn: str) -> bool:
    return _SCHEME.match(dsn) is not None


def pairs(dsn: str) -> list[tuple[str, Span]]:
    """(key, span of its raw value) of each key=value pair, as libpq reads them.
    Raises Unreadable at the first place libpq would refuse."""
    found: list[tuple[str, Span]] = []
    i, n = 0, len(dsn)
    while True:
        while i < n and dsn[i].isspace():
            i += 1
        if i == n:
            return found
        start = i
        while i < n and not dsn[i].isspace() and dsn[i] != "=":
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if not key or i == n or dsn[i] != "=":
            raise Unreadable(start)
        i += 1
        while i < n and dsn[i].isspace():  # libpq skips blanks after "=" too
            i += 1
        end = _value_end(dsn, i, start)
        found.append((key, (i, end)))
        i = end


def _value_end(dsn: str, i: int, pair_start: int) -> int:
    """Where the value starting at `i` ends (quoted, or up to a blank; `\\` escapes)."""
    n = len(dsn)
    quoted = i < n and dsn[i] == "'"
    j = i + 1 if quoted else i
    while j < n:
        if dsn[j] == "\\":
            j += 2
            continue
        if quoted and dsn[j] == "'":
            return j + 1
        if not quoted and dsn[j].isspace():
            return j
        j += 1
    if quoted:
        raise Unreadable(pair_start)  # an unterminated quote: the rest may be its value
    return n


def _query_spans(dsn: str, start: int) -> list[Span]:
    """Values of a URL's query (from `start`, just after `?`) that may not be shown."""
    spans = []
    position = start
    for part in dsn[start:].split("&"):
        key, sep, _ = part.partition("=")
        if sep and not shown_key(unquote(key)):
            spans.append((position + len(key) + 1, position + len(part)))
        elif not sep and part:
            spans.append((position, position + len(part)))
        position += len(part) + 1
    return spans


def url_is_clear(dsn: str) -> bool:
    """libpq reads this URL as written: at most one `@` before the path and none in the
    path (an unencoded `@` or `/` in a password moves the host into it)."""
    match = _SCHEME.match(dsn)
    if match is None:
        return False
    rest = dsn[match.end() :]
    slash = rest.find("/")
    head = rest if slash < 0 else rest[:slash]
    path = "" if slash < 0 else rest[slash:].split("?", 1)[0]
    return head.count("@") <= 1 and "@" not in path


def _url_spans(dsn: str, clear: bool) -> list[Span]:
    start = _SCHEME.match(dsn).end()  # type: ignore[union-attr]
    rest = dsn[start:]
    if clear:
        slash = rest.find("/")
        at = (rest if slash < 0 else rest[:slash]).find("@")
        userinfo_end = start + at if at >= 0 else start
        colon = dsn.find(":", start, userinfo_end)
        spans = [(colon + 1, userinfo_end)] if at >= 0 and colon >= 0 else []
    else:
        at = dsn.rfind("@", start)
        # No user part: what libpq read as host and port may be anything.
        authority = start + len(re.split(r"[/?]", rest, maxsplit=1)[0])
        userinfo_end = at if at >= 0 else authority
        spans = [(start, userinfo_end)] if userinfo_end > start else []
    question = dsn.find("?", userinfo_end)
    if question >= 0:
        spans += _query_spans(dsn, question + 1)
    return spans


def _pair_spans(dsn: str) -> list[Span]:
    try:
        found = pairs(dsn)
        failed_at = None
    except Unreadable as exc:
        failed_at = exc.position
        found = _pairs_before(dsn, failed_at)
    spans = [span for key, span in found if not shown_key(key)]
    if failed_at is not None:
        at = dsn.rfind("@", failed_at)
        spans.append((failed_at, at if at >= 0 else len(dsn)))
    return spans


def _pairs_before(dsn: str, position: int) -> list[tuple[str, Span]]:
    """The pairs that were read before libpq would stop at `position`."""
    try:
        return pairs(dsn[:position])
    except Unreadable:  # cannot happen for a prefix that was read; be safe anyway
        return []


def secret_spans(dsn: str, *, clear: bool | None = None) -> list[Span]:
    """Where the secrets are in `dsn`, as (start, end) positions, in order.

    `clear`: whether the DSN is read as written (see `problem`); None works it out.
    """
    if is_url(dsn):
        if clear is None:
            clear = problem(dsn) is None
        return sorted(_url_spans(dsn, clear))
    return sorted(_pair_spans(dsn))


def masked(dsn: str, spans: list[Span], mask: str = "***") -> str:
    """`dsn` with each span replaced by `mask`."""
    out, last = [], 0
    for start, end in spans:
        begin = max(start, last)
        if end <= begin:
            continue
        out += [dsn[last:begin], mask]
        last = end
    return "".join([*out, dsn[last:]])


def problem(dsn: str) -> str | None:
    """Why libpq would not read `dsn` as its author meant (never quoting it), or None."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    if is_url(dsn) and not url_is_clear(dsn):
        return (
            "has an @ or / in its user or password part: percent-encode them "
            "(@ as %40, / as %2F, : as %3A)"
        )
    try:
        parsed = conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        return f"is not a valid connection string ({_unquoted(str(exc))})"
    for port in str(parsed.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            return "has a port that is not a number from 1 to 65535"
    return None


def _unquoted(message: str) -> str:
    """libpq's parse error with every quoted piece of the input masked (not `"="`)."""
    keep = lambda m: m.group(0) if m.group(1) == "=" else '"***"'  # noqa: E731
    return re.sub(r'"([^"]*)"', keep, " ".join(message.split()))
