"""Browser tool actions on real Chromium against pages served from 127.0.0.1.

Every check reads the result back from the page's own state (its DOM / JS variables) or from
what the local server received, never from the tool's own summary alone.
"""

from __future__ import annotations

import io
import time

import pytest

from omni_agent.messages import ImagePart, TextPart
from omni_agent.tool import ToolContext
from omni_agent.tools.browser import BrowserConfig, BrowserSession, browser_tools, normalize_key, normalize_url, viewport_point
from omni_agent.tools.browser_observer import BrowserScreenshotObserver

pytestmark = pytest.mark.timeout(120)


def test_form_fill_select_submit_reads_back_from_page_and_server(browser, browser_site):
    assert not browser.call("browser_goto", url=browser_site.url("/form")).is_error
    assert not browser.call("browser_fill", value="Ada Lovelace", role="textbox", name="Full name").is_error
    assert not browser.call("browser_fill", value="ada@example.org", selector="#email").is_error
    out = browser.call("browser_select", option="Blue", selector="#color")  # by label
    assert not out.is_error and "'b'" in out.text
    assert not browser.call("browser_click", role="checkbox", name="Newsletter").is_error
    assert not browser.call("browser_type", text="Ünïcode ✓ note", role="textbox", name="Note").is_error

    # The page's own state, as its input listener recorded it.
    state = browser.eval("window.formState")
    assert state == {"name": "Ada Lovelace", "email": "ada@example.org", "color": "b", "news": "yes", "note": "Ünïcode ✓ note"}

    before = len(browser_site.submissions)
    out = browser.call("browser_click", role="button", name="Send")
    assert not out.is_error, out.text
    assert "'Thanks'" in out.text and "/submit" in out.text  # the tab line after the navigation
    assert len(browser_site.submissions) == before + 1
    got = browser_site.submissions[-1]
    assert got == {
        "name": ["Ada Lovelace"], "email": ["ada@example.org"], "color": ["b"], "news": ["yes"], "note": ["Ünïcode ✓ note"]
    }


def test_fill_with_submit_presses_enter(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/form"))
    before = len(browser_site.submissions)
    out = browser.call("browser_fill", value="Grace", selector="#name", submit=True)
    assert not out.is_error, out.text
    assert browser_site.submissions[before:] and browser_site.submissions[-1]["name"] == ["Grace"]


def test_links_back_forward_reload(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/links"))
    out = browser.call("browser_click", text="Second page")
    assert not out.is_error and out.text.rstrip().endswith("/page2")
    assert browser.eval("location.pathname") == "/page2"
    assert not browser.call("browser_navigate", action="back").is_error
    assert browser.eval("location.pathname") == "/links"
    assert not browser.call("browser_navigate", action="forward").is_error
    assert browser.eval("location.pathname") == "/page2"
    browser.eval("window.marker = 1")
    assert not browser.call("browser_navigate", action="reload").is_error
    assert browser.eval("typeof window.marker") == "undefined"  # a real reload


def test_goto_adds_scheme_and_reports_http_status(browser, browser_site):
    out = browser.call("browser_goto", url=f"127.0.0.1:{browser_site.port}/missing")
    assert not out.is_error
    assert "HTTP 404" in out.text and f"http://127.0.0.1:{browser_site.port}/missing" in out.text


def test_target_blank_opens_a_listed_tab_that_can_be_switched_to(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/links"))
    out = browser.call("browser_click", text="Open in new tab")
    assert not out.is_error and "new tab" in out.text and "tab 1" in out.text
    tabs = browser.call("browser_tabs")
    assert [t["url"].rsplit("/", 1)[-1] for t in tabs.data] == ["links", "newtab"]
    assert tabs.data[0]["active"] and not tabs.data[1]["active"]
    out = browser.call("browser_tabs", action="switch", index=1)
    assert not out.is_error and out.data[1]["active"]
    text = browser.call("browser_read")
    assert "Opened in a new tab." in text.text and "Tab 1:" in text.text
    assert browser.eval("location.pathname") == "/newtab"
    out = browser.call("browser_tabs", action="close")
    assert len(out.data) == 1 and out.data[0]["active"] and out.data[0]["url"].endswith("/links")
    bad = browser.call("browser_tabs", action="switch", index=7)
    assert bad.is_error and "no tab 7" in bad.text
    browser.reset_tabs()


def test_tabs_open_with_url(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/"))
    out = browser.call("browser_tabs", action="open", url=browser_site.url("/page2"))
    assert not out.is_error, out.text
    assert len(out.data) == 2 and out.data[1]["active"] and out.data[1]["title"] == "Page two"
    browser.reset_tabs()


def test_selector_that_never_appears_times_out_cleanly_and_fast(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/"))
    start = time.monotonic()
    out = browser.call("browser_wait", selector="#never-there", timeout_s=0.5)
    elapsed = time.monotonic() - start
    assert out.is_error
    assert out.text.startswith("Timed out after 0.5 s waiting for selector '#never-there' to be visible")
    assert "Call log" not in out.text and "Traceback" not in out.text
    assert elapsed < 4.0  # honours timeout_s instead of the 5 s action timeout
    # Waiting for something that is there returns at once.
    assert not browser.call("browser_wait", text="home", timeout_s=2).is_error


def test_page_that_never_loads_times_out_and_leaves_the_tab_usable(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/page2"))
    launches = browser.session.launches
    cfg = browser.session.config
    saved, cfg.navigation_timeout_s = cfg.navigation_timeout_s, 1.0
    try:
        out = browser.call("browser_goto", url=browser_site.url("/hang"))
    finally:
        cfg.navigation_timeout_s = saved
    assert out.is_error and out.text.startswith("Timed out after 1 s opening"), out.text
    # The pending load was stopped: the tab answers at once, still on the page it showed, and the
    # browser was not declared stuck and relaunched (which would lose every tab).
    start = time.monotonic()
    out = browser.call("browser_read")
    assert not out.is_error and "You reached page two" in out.text, out.text
    assert time.monotonic() - start < 3.0
    assert browser.session.launches == launches


def test_ambiguous_and_invalid_targets_give_clear_errors(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/grid"))
    out = browser.call("browser_click", selector="button")
    assert out.is_error and "matches 3 elements" in out.text
    out = browser.call("browser_click", selector="#c", text="C")
    assert out.is_error and "not selector and text" in out.text
    out = browser.call("browser_click", name="Send")
    assert out.is_error and "name needs role" in out.text
    out = browser.call("browser_click", x=10)
    assert out.is_error and "both x and y" in out.text
    out = browser.call("browser_click", x=1500, y=500)  # pixels on the 0..1000 grid: refused
    assert out.is_error and "outside the page" in out.text and "0..1000 grid" in out.text
    assert browser.eval("window.clicks.length") == 0  # nothing was clicked by mistake


@pytest.mark.parametrize(
    ("element", "x", "y"),
    [("c", 500, 500), ("tl", 46.875, 37.5), ("br", 906.25, 912.5)],
)
def test_coordinate_clicks_land_on_the_element(browser, browser_site, element, x, y):
    browser.call("browser_goto", url=browser_site.url("/grid"))
    out = browser.call("browser_click", x=x, y=y)
    assert not out.is_error, out.text
    clicks = browser.eval("window.clicks")
    assert len(clicks) == 1 and clicks[0][0] == element
    # The 0..1000 grid maps onto the 1280x800 viewport.
    assert clicks[0][1] == pytest.approx(x * 1280 / 1000, abs=1)
    assert clicks[0][2] == pytest.approx(y * 800 / 1000, abs=1)


def test_viewport_point_in_both_coordinate_spaces():
    rel = BrowserConfig(viewport=(1280, 800))
    assert viewport_point(rel, 500, 500) == (640, 400)
    assert viewport_point(rel, 1000, 1000) == (1279, 799)  # clamped inside the viewport
    assert viewport_point(rel, -5, 2000) == (0, 799)
    # Qwen2.5: pixels of the smart-resized screenshot (1280x800 -> 1288x812 at factor 28).
    absolute = BrowserConfig(viewport=(1280, 800), coordinate_space="absolute_resized")
    px, py = viewport_point(absolute, 644, 406)
    assert px == pytest.approx(640, abs=0.5) and py == pytest.approx(400, abs=0.5)


def test_hover_scroll_and_keys(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/long"))
    out = browser.call("browser_scroll", direction="down", pixels=700)
    assert not out.is_error and "y=700" in out.text
    assert browser.eval("scrollY") == 700
    assert not browser.call("browser_press", key="ctrl+home").is_error
    assert browser.eval("scrollY") == 0
    browser.call("browser_goto", url=browser_site.url("/form"))
    assert not browser.call("browser_hover", role="button", name="Send").is_error
    assert browser.eval("document.querySelector('button:hover') !== null")
    browser.call("browser_click", selector="#name")
    assert not browser.call("browser_type", text="abc").is_error
    assert not browser.call("browser_press", key="Backspace", repeat=2).is_error
    assert browser.eval("document.querySelector('#name').value") == "a"


def test_page_text_is_capped_and_parts_can_be_read(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/long"))
    out = browser.call("browser_read")
    assert out.untrusted and not out.is_error
    body, _, rest = out.text.partition("\n[... cut ")
    assert len(body) == browser.session.config.text_cap
    assert "END-MARKER" not in body and rest.startswith(str(108010 - 8000))
    small = browser.call("browser_read", max_chars=500)
    assert small.text.index("\n[... cut") == 500
    browser.call("browser_goto", url=browser_site.url("/form"))
    part = browser.call("browser_read", selector="h1")
    assert part.text.startswith("Sign up\n")


def test_accessibility_snapshot_names_roles_usable_as_targets(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/form"))
    snap = browser.call("browser_read", mode="snapshot")
    assert 'textbox "Full name"' in snap.text and 'button "Send"' in snap.text
    assert 'combobox "Favourite colour"' in snap.text
    assert not browser.call("browser_select", option="g", role="combobox", name="Favourite colour").is_error
    assert browser.eval("document.querySelector('#color').value") == "g"


def test_screenshot_is_a_viewport_jpeg_and_untrusted(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/grid"))
    out = browser.call("browser_screenshot")
    assert out.untrusted and len(out.images) == 1
    image = out.images[0]
    assert image.media_type == "image/jpeg" and (image.width, image.height) == (1280, 800)
    pil = image.load()
    # The centre button is drawn where the DOM says it is: its pixels differ from the white page.
    assert pil.getpixel((640, 400)) != pil.getpixel((900, 100))
    # Any action can ask for a screenshot too.
    assert len(browser.call("browser_hover", selector="#c", screenshot=True).images) == 1
    assert browser.call("browser_hover", selector="#c").images == []


def test_upload_from_workspace_and_refuses_paths_outside(browser, browser_site):
    (browser.workspace / "hello.txt").write_text("hello upload")
    browser.call("browser_goto", url=browser_site.url("/upload"))
    out = browser.call("browser_upload", paths=["hello.txt"], selector="#file")
    assert not out.is_error, out.text
    browser.call("browser_wait", text="hello.txt:hello upload", timeout_s=3)
    assert browser.eval("document.querySelector('#out').textContent") == "hello.txt:hello upload"
    out = browser.call("browser_upload", paths=["../../etc/passwd"], selector="#file")
    assert out.is_error and "outside the workspace" in out.text
    out = browser.call("browser_upload", paths=["missing.txt"], selector="#file")
    assert out.is_error and "no file 'missing.txt'" in out.text


def test_download_lands_in_the_workspace(browser, browser_site):
    browser.call("browser_goto", url=browser_site.url("/download"))
    out = browser.call("browser_download", text="Get the file", timeout_s=10)
    assert not out.is_error, out.text
    saved = browser.workspace / "downloads" / "report.txt"
    assert saved.read_text() == "downloaded content 42\n"
    assert "downloads/report.txt" in out.text and out.untrusted


def test_tool_set_shapes_and_javascript_off_by_default():
    tools = browser_tools(BrowserConfig())
    names = [t.name for t in tools]
    assert "browser_eval" not in names and all(t.kind == "browser" for t in tools)
    assert {"browser_goto", "browser_click", "browser_fill", "browser_tabs", "browser_read"} <= set(names)
    for t in tools:
        assert not t.parallel_safe and t.reads_untrusted
        assert t.parameters["type"] == "object" and "ctx" not in t.parameters["properties"]
    click = next(t for t in tools if t.name == "browser_click")
    assert "0..1000 grid" in click.description
    js = browser_tools(BrowserConfig(allow_javascript=True))
    (ev,) = [t for t in js if t.name == "browser_eval"]
    assert ev.kind == "javascript"


def test_javascript_eval_runs_only_when_enabled(browser_loop, browser_site, tmp_path):
    from tests.fixtures.browser import make_browser

    harness = make_browser(browser_loop, browser_site, tmp_path, allow_javascript=True)
    try:
        harness.call("browser_goto", url=browser_site.url("/grid"))
        out = harness.call("browser_eval", expression="document.querySelectorAll('button').length")
        assert not out.is_error and out.text.splitlines()[0] == "3" and out.untrusted
        bad = harness.call("browser_eval", expression="throw new Error('boom')")
        assert bad.is_error and "boom" in bad.text and "Traceback" not in bad.text
    finally:
        harness.run(harness.session.close())


def test_observer_returns_a_screenshot_of_the_active_tab(browser, browser_site, browser_loop):
    idle = BrowserScreenshotObserver(BrowserSession(BrowserConfig()), settle_s=0.1)
    assert browser.run(idle.observe(ToolContext())) == []  # never launches a browser by itself
    assert idle.settle_s == 0.1
    browser.call("browser_goto", url=browser_site.url("/grid"))
    parts = browser.run(BrowserScreenshotObserver(browser.session).observe(ToolContext()))
    assert isinstance(parts[0], TextPart) and parts[0].text.endswith("/grid")
    assert isinstance(parts[1], ImagePart) and (parts[1].width, parts[1].height) == (1280, 800)


def test_key_and_url_normalisation():
    assert normalize_key("ctrl+a") == "Control+a"
    assert normalize_key("Enter") == "Enter" and normalize_key("esc") == "Escape"
    assert normalize_key("cmd + shift + pgdn") == "Meta+Shift+PageDown"
    assert normalize_key("f5") == "F5"
    assert normalize_url("example.com/x") == "https://example.com/x"
    assert normalize_url("localhost:8000") == "http://localhost:8000"
    assert normalize_url("about:blank") == "about:blank"
