"""Who may do what on the dashboard, and whether a state-changing request really
comes from its own pages.

Without a token the dashboard is read-only: every POST is refused. With one, every
page needs it: a login form sets a session cookie (a random nonce and its HMAC under
the token, so the cookie never holds the token itself), or a client sends
`Authorization: Bearer TOKEN` (a proxy in front may add it). A POST must also prove it
comes from the dashboard's own origin: `Sec-Fetch-Site: same-origin` where the
browser sends it, else a CSRF token bound to the session (a Bearer request, which no
browser attaches by itself, needs neither).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

COOKIE = "storyworker_dashboard"
#: Shortest token accepted: it guards actions, and with a public bind, every page.
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Session:
    """An authenticated client."""

    nonce: str
    #: Authenticated by an Authorization header (no cookie, so no CSRF exposure).
    bearer: bool = False


@dataclass(frozen=True)
class Auth:
    token: str | None

    @property
    def enabled(self) -> bool:
        """A token is set: actions are possible, and every page needs the token."""
        return bool(self.token)

    def _mac(self, purpose: str, nonce: str) -> str:
        assert self.token
        message = f"{purpose}:{nonce}".encode()
        return hmac.new(self.token.encode(), message, hashlib.sha256).hexdigest()

    def accepts(self, candidate: str) -> bool:
        """`candidate` is the token."""
        return self.enabled and hmac.compare_digest(candidate.encode(), (self.token or "").encode())

    def new_cookie(self) -> str:
        """A fresh session cookie's value."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._mac('session', nonce)}"

    def session(self, cookies: Mapping[str, str], headers: Mapping[str, str]) -> Session | None:
        """The request's session, from its Bearer header or its cookie; None without
        a valid one (always None without a token)."""
        if not self.enabled:
            return None
        scheme, _, credential = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.accepts(credential.strip()):
            return Session("bearer", bearer=True)
        nonce, _, mac = cookies.get(COOKIE, "").partition(".")
        if nonce and hmac.compare_digest(mac.encode(), self._mac("session", nonce).encode()):
            return Session(nonce)
        return None

    def csrf(self, session: Session) -> str:
        """The CSRF token of `session`'s forms."""
        return self._mac("csrf", session.nonce)

    def same_origin(
        self,
        headers: Mapping[str, str],
        host_url: str,
        session: Session | None,
        csrf: str | None,
    ) -> bool:
        """Whether a POST comes from the dashboard's own pages (see the module)."""
        site = headers.get("Sec-Fetch-Site")
        if site is not None:
            return site == "same-origin"
        origin = headers.get("Origin")
        if origin is not None and origin.rstrip("/") != host_url.rstrip("/"):
            return False
        if session is None:
            return False
        if session.bearer:
            return True
        return csrf is not None and hmac.compare_digest(csrf.encode(), self.csrf(session).encode())


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
