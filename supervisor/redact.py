"""Keeping secrets out of everything storyworker prints: one place for the rules.

`redact(text)` is what every printing path calls (the log formatters, the commands'
one-line errors, the health server's details, the process registry): it masks each
connection string it knows (DATABASE_URL, DATABASE_LISTEN_URL, `demo --database-url`)
wherever it is quoted, every API key it knows, the quoted pieces of a known DSN that a
driver message repeats (libpq's "failed to resolve host 'x'"), and, by pattern, any
other URL password, `password=` pair or key parameter. DSNs are masked by their
structure (supervisor.dsn), never by searching for the password's text, so a password
that is also part of the host name leaves the host alone.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from supervisor import dsn as structure

MASK = "***"
#: An API key shorter than this is a placeholder (`x` for a local server), not a
#: secret: masking it would mangle every word that contains it.
MIN_KEY_LENGTH = 8

_known_dsns: set[str] = set()
_known_keys: set[str] = set()

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*@\S*")
_QUOTED = re.compile(r"\"([^\"]+)\"|'([^']+)'")
_PATTERNS = (
    (re.compile(r"([?&](?:password|sslpassword|key|api_key|token)=)[^&\s#]*", re.I), rf"\1{MASK}"),
    (
        re.compile(r"(?<![?&\w])((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", re.I),
        rf"\1{MASK}",
    ),
    (re.compile(r"(\"(?:password|api_key|apiKey)\"\s*:\s*)\"[^\"]*\"", re.I), rf'\1"{MASK}"'),
    (re.compile(r"(Bearer\s+)\S+", re.I), rf"\1{MASK}"),
    (re.compile(r"AIza[0-9A-Za-z_\-]{8,}"), MASK),
    (re.compile(r"\bsk-[0-9A-Za-z_\-]{16,}"), MASK),
)


def remember(dsns: Iterable[str | None] = (), keys: Iterable[str | None] = ()) -> None:
    """Make `dsns` and `keys` secrets `redact` masks wherever they appear in this
    process (and the processes it forks)."""
    _known_dsns.update(d.strip() for d in dsns if d and d.strip())
    _known_keys.update(k.strip() for k in keys if k and len(k.strip()) >= MIN_KEY_LENGTH)


@functools.lru_cache(maxsize=64)
def redact_dsn(dsn: str | None) -> str:
    """`dsn` with its secrets masked by structure: a URL's password (everything from
    the scheme to the last `@` when libpq would not read it as written), the value of
    every key libpq calls secret or does not know, and whatever follows the point
    where a key=value string stops making sense."""
    if not dsn:
        return ""
    return structure.masked(dsn, list(_spans(dsn)), MASK)


def redact(text: str, dsn: str | None = None) -> str:
    """`text` with every secret masked: `dsn` and every remembered DSN and key, and
    any credential the patterns recognise."""
    for known in sorted({dsn, *_known_dsns} - {None, ""}, key=len, reverse=True):
        assert known is not None
        text = _mask_dsn(text, known)
    for key in sorted(_known_keys, key=len, reverse=True):
        text = text.replace(key, MASK)
    text = _URL.sub(lambda m: _mask_url(m.group(0)), text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _mask_dsn(text: str, dsn: str) -> str:
    """`text` with `dsn` (also as one line) shown masked, and every quoted piece of it
    that touches one of its secrets masked."""
    for form in dict.fromkeys((dsn, " ".join(dsn.split()))):
        if redact_dsn(form) != form:
            text = text.replace(form, redact_dsn(form))
    spans = _spans(dsn)
    if not spans:
        return text

    def quoted(match: re.Match[str]) -> str:
        piece = match.group(1) or match.group(2)
        if _touches_secret(dsn, piece, spans):
            return match.group(0).replace(piece, MASK)
        return match.group(0)

    return _QUOTED.sub(quoted, text)


@functools.lru_cache(maxsize=64)
def _spans(dsn: str) -> tuple[tuple[int, int], ...]:
    return tuple(structure.secret_spans(dsn))


def _touches_secret(dsn: str, piece: str, spans: tuple[tuple[int, int], ...]) -> bool:
    """`piece` is in `dsn` only where it overlaps a secret (a piece that is also a
    part of the DSN that is shown, such as a host, tells nothing new)."""
    found = False
    start = dsn.find(piece)
    while start >= 0:
        end = start + len(piece)
        if not any(s < end and start < e for s, e in spans):
            return False
        found = True
        start = dsn.find(piece, start + 1)
    return found


def _mask_url(url: str) -> str:
    """A URL found in free text: the part from the scheme to its last `@` masked,
    keeping the user name of a plain `user:password@`."""
    start = url.index("://") + 3
    at = url.rfind("@")
    userinfo = url[start:at]
    user, colon, password = userinfo.partition(":")
    if "@" in userinfo or not re.fullmatch(r"[\w.%-]*", user):
        shown = MASK
    else:  # a plain `user:password@` keeps its user (and an empty password, its nothing)
        shown = f"{user}:{MASK if password else ''}" if colon else user
    return url[:start] + shown + url[at:]
