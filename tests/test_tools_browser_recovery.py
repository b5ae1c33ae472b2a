"""A killed, stuck or closed browser gives a clear error and recovers; bad setups fail clearly."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from omni_agent.tool import ToolContext
from omni_agent.tools.browser import BrowserConfig, BrowserSession, browser_tools

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def crashy(browser_loop, browser_site, tmp_path_factory):
    """A browser of its own (the tests here kill it), with short timeouts."""
    from tests.fixtures.browser import make_browser

    harness = make_browser(browser_loop, browser_site, tmp_path_factory.mktemp("crashy"), action_timeout_s=1.5)
    yield harness
    harness.run(harness.session.close())


def _wait_until(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_killed_browser_process_recovers_on_next_action(crashy, browser_site):
    assert not crashy.call("browser_goto", url=browser_site.url("/form")).is_error
    launches, pid = crashy.session.launches, crashy.session.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert _wait_until(lambda: not crashy.session.running)
    out = crashy.call("browser_goto", url=browser_site.url("/page2"))
    assert not out.is_error, out.text
    assert "relaunched" in out.text and "'Page two'" in out.text
    assert crashy.session.launches == launches + 1 and crashy.session.pid != pid
    assert crashy.eval("document.title") == "Page two"


def test_kill_racing_the_next_action_gives_a_clear_error_then_recovers(crashy, browser_site):
    crashy.call("browser_goto", url=browser_site.url("/form"))
    os.kill(crashy.session.pid, signal.SIGKILL)
    first = crashy.call("browser_goto", url=browser_site.url("/page2"))  # no waiting for the disconnect
    if first.is_error:
        assert "crashed or was closed" in first.text and "relaunched" in first.text
    out = crashy.call("browser_read")
    assert not out.is_error, out.text
    if first.is_error:
        assert "relaunched" in out.text


def test_stuck_browser_is_stopped_and_relaunched(crashy, browser_site):
    crashy.call("browser_goto", url=browser_site.url("/form"))
    pid = crashy.session.pid
    os.kill(pid, signal.SIGSTOP)  # alive but answering nothing
    try:
        start = time.monotonic()
        out = crashy.call("browser_fill", value="x", selector="#name")
        assert out.is_error and "relaunched on the next action" in out.text, out.text
        assert time.monotonic() - start < 15  # bounded by the deadlines, not a hang
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    out = crashy.call("browser_goto", url=browser_site.url("/page2"))
    assert not out.is_error and "relaunched" in out.text


def test_closed_active_tab_falls_back_to_another(crashy, browser_site):
    crashy.call("browser_goto", url=browser_site.url("/links"))
    crashy.call("browser_tabs", action="open", url=browser_site.url("/page2"))

    async def close_active():
        await (await crashy.session.page()).close()

    crashy.run(close_active())
    out = crashy.call("browser_read")
    assert not out.is_error and "active tab was closed" in out.text and "/links" in out.text
    crashy.run(close_active())  # the last tab: a fresh blank one takes its place
    out = crashy.call("browser_goto", url=browser_site.url("/page2"))
    assert not out.is_error and "opened a new blank tab" in out.text


def test_page_closing_itself_mid_action_is_a_clear_error(crashy, browser_site):
    crashy.call("browser_goto", url=browser_site.url("/"))

    async def close_soon():
        page = await crashy.session.page()
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, lambda: asyncio.ensure_future(page.close()))

    crashy.run(close_soon())
    out = crashy.call("browser_wait", selector="#never", timeout_s=5)
    assert out.is_error and "tab was closed" in out.text
    assert not crashy.call("browser_goto", url=browser_site.url("/page2")).is_error


_TWO_LOOPS_SCRIPT = """
import asyncio, json, os, sys, time
from omni_agent.tool import ToolContext
from omni_agent.tools.browser import BrowserConfig, BrowserSession, browser_tools

session = BrowserSession(BrowserConfig(action_timeout_s=5))
goto = next(t for t in browser_tools(session=session) if t.name == "browser_goto")
first = asyncio.run(goto.call({"url": sys.argv[1]}, ToolContext()))
old = [session.pid, session._driver_pid]
second = asyncio.run(goto.call({"url": sys.argv[2]}, ToolContext()))
new_pid = session.pid

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

deadline = time.monotonic() + 10
while any(p and alive(p) for p in old) and time.monotonic() < deadline:
    time.sleep(0.05)
old_alive = [bool(p and alive(p)) for p in old]  # checked while this process still runs
asyncio.run(session.close())
print(json.dumps({"first": first.text, "second": second.text, "errors": [first.is_error, second.is_error],
                  "launches": session.launches, "old": old, "old_alive": old_alive, "new_pid": new_pid}))
"""


@pytest.mark.slow
def test_new_event_loop_relaunches_instead_of_failing(browser_site, tmp_path):
    """Tools called from two asyncio.run() loops: the second relaunches and the first loop's
    browser and Playwright driver are stopped. Runs in a subprocess because the dead loop's pipe
    transports print "Event loop is closed" when garbage-collected."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_LOOPS_SCRIPT, browser_site.url("/"), browser_site.url("/page2")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == [False, False], report
    assert "'Page two'" in report["second"] and report["launches"] == 2
    old_browser, old_driver = report["old"]
    assert old_driver is not None and report["new_pid"] != old_browser
    assert report["old_alive"] == [False, False]  # the first loop's browser and driver are gone


def test_headful_without_display_is_a_clear_error(browser_loop, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    session = BrowserSession(BrowserConfig(headless=False))
    goto = next(t for t in browser_tools(session=session) if t.name == "browser_goto")
    out = asyncio.run_coroutine_threadsafe(goto.call({"url": "about:blank"}, ToolContext(workspace=tmp_path)), browser_loop).result(30)
    assert out.is_error and "needs an X display" in out.text and "Traceback" not in out.text
    assert session.launches == 0


def test_missing_executable_is_a_clear_error(browser_loop, tmp_path):
    session = BrowserSession(BrowserConfig(executable_path="/nonexistent/chromium"))
    goto = next(t for t in browser_tools(session=session) if t.name == "browser_goto")
    out = asyncio.run_coroutine_threadsafe(goto.call({"url": "about:blank"}, ToolContext(workspace=tmp_path)), browser_loop).result(30)
    assert out.is_error and "'/nonexistent/chromium' is not an executable file" in out.text
    asyncio.run_coroutine_threadsafe(session.close(), browser_loop).result(30)
