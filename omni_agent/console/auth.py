"""Who may use the console: a random token (printed at start, as Jupyter does) and same-origin sockets.

The token travels once in the page URL (``/?token=...``); the page then lives on an HttpOnly,
SameSite=Strict cookie, so neither the token nor the session leaks to other sites. Every route
but the static assets wants the token; the WebSocket also wants an ``Origin`` equal to the
console's own (a page on another site cannot drive the agent through the user's browser).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["COOKIE_NAME", "make_token", "origin_allowed", "token_matches", "token_from"]

COOKIE_NAME = "omni_console_token"


def make_token() -> str:
    """A fresh random access token (192 bits)."""
    return secrets.token_urlsafe(24)


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison; an empty or missing token never matches."""
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def token_from(query: Mapping[str, str], cookies: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The token a request carries: ``?token=``, the console cookie, or ``Authorization: Bearer``."""
    if query.get("token"):
        return query["token"]
    if cookies.get(COOKIE_NAME):
        return cookies[COOKIE_NAME]
    auth = headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else None


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """A WebSocket's ``Origin`` must name the host it connected to (scheme http or https).

    A missing Origin is refused too: browsers always send one, and non-browser clients can
    send their own; the token is checked separately."""
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()
