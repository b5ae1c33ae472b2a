"""Domain allow / deny lists for the browser tool, enforced inside Chromium.

Two layers, because Playwright's request interception does not see redirects (by design:
microsoft/playwright#3993, "interception is at the browser -> network stack boundary"):

1. ``context.route`` on the whole browser context checks every request the pages make:
   navigations, new tabs (``target=_blank``, ``window.open``), iframes and sub-resources. A
   blocked request is aborted and recorded, so the tool can name the domain in its error.
2. ``--host-resolver-rules`` (a Chromium launch flag) makes denied host names (or, with an allow
   list, every host name not allowed) fail to resolve inside the network stack, which covers
   the hops of a redirect chain that ``route`` never sees. The ``requestfailed`` listener
   recognises those failures and records them as blocks too.

Patterns: ``example.com`` matches the domain and all its subdomains, ``*.example.com`` only the
subdomains, an IP address only itself. Deny wins over allow. Chromium applies the resolver rules
to IPv4 literals too, so with an allow list a redirect to a raw IP is stopped as well. Known gaps
of layer 2 (layer 1 still covers direct requests): IPv6 literals in the lists, and a denied
subdomain of an allowed domain (Chromium checks EXCLUDE rules before MAP rules).

Needs nothing beyond Playwright (the ``browser`` extra); importing this module imports nothing
heavy.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import urlsplit

if TYPE_CHECKING:  # pragma: no cover
    from playwright.async_api import BrowserContext, Request, Route

__all__ = ["BlockedRequest", "DomainGuard", "normalize_domain_pattern"]

_PATTERN_RE = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?)*$")
_NETWORK_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_LOCAL_SCHEMES = frozenset({"about", "data", "blob"})


def normalize_domain_pattern(pattern: str) -> str:
    """Lower-case a domain pattern and check its shape; raises ValueError with the reason."""
    p = pattern.strip().lower().rstrip(".")
    if "://" in p or "/" in p:
        raise ValueError(f"domain pattern {pattern!r} must be a host name (example.com), not a URL")
    if _is_ip(p.strip("[]")):
        return p.strip("[]")
    if not _PATTERN_RE.match(p):
        raise ValueError(f"invalid domain pattern {pattern!r}: use example.com or *.example.com")
    return p


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_ipv6(host: str) -> bool:
    return _is_ip(host) and ":" in host


def _matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern or host.endswith("." + pattern)


@dataclass(frozen=True)
class BlockedRequest:
    """One request the guard stopped."""

    url: str
    host: str
    reason: str
    navigation: bool
    """True for a document request (a page or frame navigation), False for a sub-resource."""


class DomainGuard:
    """Checks URLs against allow / deny lists and enforces them on a Playwright context."""

    def __init__(
        self,
        *,
        allow_domains: Iterable[str] = (),
        deny_domains: Iterable[str] = (),
        allow_file_urls: bool = False,
    ) -> None:
        self.allow = tuple(normalize_domain_pattern(p) for p in allow_domains)
        self.deny = tuple(normalize_domain_pattern(p) for p in deny_domains)
        self.allow_file_urls = allow_file_urls
        self._blocked: list[BlockedRequest] = []

    @property
    def active(self) -> bool:
        """True when there is anything to enforce on network requests."""
        return bool(self.allow or self.deny)

    # -- decisions ----------------------------------------------------------------------------
    def check(self, url: str) -> str | None:
        """Why ``url`` may not be loaded, or None when it may."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in _LOCAL_SCHEMES:
            return None
        if scheme == "file":
            return None if self.allow_file_urls else "file:// URLs are not allowed (BrowserConfig.allow_file_urls)"
        if scheme not in _NETWORK_SCHEMES:
            return f"the {scheme or 'empty'}: scheme is not allowed"
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            return "the URL has no host"
        for pattern in self.deny:
            if _matches(host, pattern):
                return f"domain {host!r} is on the deny list ({pattern})"
        if self.allow and not any(_matches(host, p) for p in self.allow):
            return f"domain {host!r} is not on the allow list ({', '.join(self.allow)})"
        return None

    def host_resolver_rules(self) -> str | None:
        """The ``--host-resolver-rules`` value enforcing the lists for host names, or None.

        Chromium checks EXCLUDE rules before MAP rules, so with an allow list a denied subdomain
        of an allowed domain is enforced by ``route`` only.
        """
        if self.allow:
            names = [p for p in self.allow if not _is_ipv6(p)]
            rules = ["MAP * ~NOTFOUND"]
            for p in names:
                rules += [f"EXCLUDE {p}"] if p.startswith("*.") or _is_ip(p) else [f"EXCLUDE {p}", f"EXCLUDE *.{p}"]
            return ", ".join(rules)
        names = [p for p in self.deny if not _is_ipv6(p)]
        if not names:
            return None
        rules = []
        for p in names:
            single = p.startswith("*.") or _is_ip(p)
            rules += [f"MAP {p} ~NOTFOUND"] if single else [f"MAP {p} ~NOTFOUND", f"MAP *.{p} ~NOTFOUND"]
        return ", ".join(rules)

    def launch_args(self) -> list[str]:
        rules = self.host_resolver_rules()
        return [f"--host-resolver-rules={rules}"] if rules else []

    # -- enforcement --------------------------------------------------------------------------
    async def install(self, context: "BrowserContext") -> None:
        """Route every request of ``context`` through :meth:`check` (no-op without lists)."""
        if not self.active:
            return
        await context.route("**/*", self._handle_route)
        context.on("requestfailed", self._on_request_failed)

    async def _handle_route(self, route: "Route") -> None:
        request = route.request
        reason = self.check(request.url)
        try:
            if reason is None:
                await route.continue_()
                return
            self._record(request, reason)
            await route.abort("blockedbyclient")
        except Exception:  # noqa: BLE001 - the page or browser went away mid-request: nothing to do
            pass

    def _on_request_failed(self, request: "Request") -> None:
        # A redirect hop stopped by --host-resolver-rules fails with ERR_NAME_NOT_RESOLVED.
        failure = request.failure or ""
        if "ERR_NAME_NOT_RESOLVED" not in failure:
            return
        reason = self.check(request.url)
        if reason is not None:
            self._record(request, reason)

    def _record(self, request: Any, reason: str) -> None:
        try:
            navigation = bool(request.is_navigation_request())
        except Exception:  # noqa: BLE001 - detached frame
            navigation = False
        host = (urlsplit(request.url).hostname or "").lower()
        self._blocked.append(BlockedRequest(url=request.url, host=host, reason=reason, navigation=navigation))
        del self._blocked[:-200]  # bounded: only the recent ones are ever reported

    def take_blocked(self) -> list[BlockedRequest]:
        """The requests blocked since the last call (and forget them)."""
        out, self._blocked = self._blocked, []
        return out

    def describe(self, blocked: list[BlockedRequest]) -> str:
        """One short line about blocked requests, navigations first."""
        if not blocked:
            return ""
        nav = [b for b in blocked if b.navigation]
        first = (nav or blocked)[0]
        others = len(blocked) - 1
        what = "navigation" if first.navigation else "request"
        more = f" (+{others} more blocked request{'s' if others != 1 else ''})" if others else ""
        return f"Blocked {what} to {first.url}: {first.reason}.{more}"
