"""Domain allow / deny lists: unit rules, then real Chromium against the local site.

``localhost`` is the same server as ``127.0.0.1``, so "the server never received a request for
localhost" proves the browser did not send it (not that it failed to connect).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from omni_agent.tools.browser import BrowserConfig
from omni_agent.tools.browser_guard import DomainGuard, normalize_domain_pattern

pytestmark = pytest.mark.timeout(120)


def test_patterns_match_domains_and_subdomains():
    g = DomainGuard(deny_domains=["evil.com", "*.ads.net", "10.0.0.1"])
    assert g.check("https://evil.com/x") and g.check("http://a.b.evil.com:8080/")
    assert g.check("https://notevil.com/") is None
    assert g.check("https://ads.net/") is None and g.check("https://x.ads.net/")
    assert g.check("http://10.0.0.1/") and g.check("http://10.0.0.2/") is None
    assert "deny list" in g.check("https://EVIL.com./")


def test_allow_list_and_deny_wins():
    g = DomainGuard(allow_domains=["example.org", "127.0.0.1"], deny_domains=["private.example.org"])
    assert g.check("https://www.example.org/") is None and g.check("http://127.0.0.1:9/") is None
    assert "not on the allow list" in g.check("https://example.com/")
    assert "deny list" in g.check("https://private.example.org/")
    assert g.check("about:blank") is None and g.check("data:text/html,hi") is None


def test_file_and_odd_schemes():
    assert "file://" in DomainGuard().check("file:///etc/passwd")
    assert DomainGuard(allow_file_urls=True).check("file:///tmp/x.html") is None
    assert "chrome:" in DomainGuard().check("chrome://settings")
    assert "javascript:" in DomainGuard().check("javascript:alert(1)")


def test_host_resolver_rules_cover_redirect_hops():
    assert DomainGuard().host_resolver_rules() is None
    assert DomainGuard(deny_domains=["evil.com"]).host_resolver_rules() == "MAP evil.com ~NOTFOUND, MAP *.evil.com ~NOTFOUND"
    rules = DomainGuard(allow_domains=["ok.org", "127.0.0.1"]).host_resolver_rules()
    assert rules == "MAP * ~NOTFOUND, EXCLUDE ok.org, EXCLUDE *.ok.org, EXCLUDE 127.0.0.1"
    assert DomainGuard(deny_domains=["10.1.2.3", "::1"]).host_resolver_rules() == "MAP 10.1.2.3 ~NOTFOUND"


@pytest.mark.parametrize("bad", ["http://evil.com", "evil.com/path", "bad domain", ""])
def test_bad_patterns_are_rejected_at_config_time(bad):
    with pytest.raises(ValueError):
        normalize_domain_pattern(bad)
    with pytest.raises(ValidationError):
        BrowserConfig(deny_domains=[bad])


def test_direct_navigation_to_denied_domain_never_leaves_the_tool(browser, browser_site):
    out = browser.call("browser_goto", url=browser_site.denied_url("/direct"))
    assert out.is_error and "'localhost' is on the deny list" in out.text
    assert not browser_site.hosts_seen("localhost")


def test_redirect_to_denied_domain_is_blocked(browser, browser_site):
    out = browser.call("browser_goto", url=browser_site.url("/redirect-denied"))
    assert out.is_error
    assert out.text == (
        f"Blocked navigation to {browser_site.denied_url('/secret')}: domain 'localhost' is on the deny list (localhost)."
    )
    assert [r.path for r in browser_site.requests if r.path == "/redirect-denied"]  # the first hop happened
    assert not browser_site.hosts_seen("localhost")  # the second never left the browser
    # The tab is usable right away (Chromium's late error-page commit does not break the next goto).
    out = browser.call("browser_goto", url=browser_site.url("/page2"))
    assert not out.is_error, out.text


def test_allowed_redirect_still_works(browser, browser_site):
    out = browser.call("browser_goto", url=browser_site.url("/redirect-ok"))
    assert not out.is_error and out.text.rstrip().endswith("/page2")


def test_link_click_into_denied_redirect_reports_the_block(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/links"))
    out = browser.call("browser_click", text="Redirect")
    assert "Blocked navigation to" in out.text and "'localhost'" in out.text
    assert not browser_site.hosts_seen("localhost")


def test_subresources_and_iframes_from_denied_domain_are_blocked(browser, browser_site):
    out = browser.call("browser_goto", url=browser_site.url("/subresources"))
    assert not out.is_error  # the page itself is allowed
    assert "Blocked" in out.text and "localhost" in out.text and "more blocked request" in out.text
    assert browser.call("browser_read").text.startswith("main")
    assert not browser_site.hosts_seen("localhost")


def test_new_tab_to_denied_domain_is_blocked(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/links"))
    out = browser.call("browser_click", selector="#denied-tab")
    assert "Blocked navigation to" in out.text and "secret-tab" in out.text
    assert not browser_site.hosts_seen("localhost")
    browser.reset_tabs()
    out = browser.call("browser_tabs", action="open", url=browser_site.denied_url("/x"))
    assert out.is_error and "deny list" in out.text


def test_allow_list_session_blocks_everything_else(browser_loop, browser_site, tmp_path):
    from tests.fixtures.browser import make_browser

    # No deny list: the allow list alone must keep localhost out.
    harness = make_browser(browser_loop, browser_site, tmp_path, allow_domains=["127.0.0.1"], deny_domains=[])
    try:
        out = harness.call("browser_goto", url=browser_site.url("/redirect-denied"))
        assert out.is_error and "not on the allow list" in out.text
        out = harness.call("browser_goto", url=browser_site.url("/subresources"))
        assert not out.is_error and "not on the allow list" in out.text
        assert not browser_site.hosts_seen("localhost")
    finally:
        harness.run(harness.session.close())
