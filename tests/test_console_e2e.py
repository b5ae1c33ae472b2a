"""The live console end to end: real Chromium (Playwright) on a real console server, with the
scripted model and real tools on Xvfb. Each test drives the page the way a person would."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from omni_agent.loop import Agent
from omni_agent.messages import AudioPart, TextPart, UserMessage
from omni_agent.models.scripted import ScriptedModel
from omni_agent.models.base import ModelRequest
from omni_agent.tool import ToolContext, tool
from tests.fixtures.console import paint_screen
from tests.fixtures.core import tool_call

pytestmark = pytest.mark.slow

# The README's console screenshots: written to docs/img/ only when asked
# (OMNI_CONSOLE_SCREENSHOTS=1), so a test run never dirties the checkout; else to a temp folder.
SHOTS = (
    Path(__file__).resolve().parent.parent / "docs" / "img"
    if os.environ.get("OMNI_CONSOLE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "omni-console-shots"
)
LONG_ANSWER = (
    "Opening the calculator. It will take a moment to start, and then I will tell you what is on "
    "the screen, step by step, so that you can follow along and stop me at any time."
)


def _wait(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _open(page: Any, console: Any) -> None:
    page.goto(console.url)
    page.wait_for_function("document.querySelector('#conn').textContent === 'connected'")


def _run(page: Any, instruction: str) -> None:
    page.fill("#instruction", instruction)
    page.click("#run-btn")


@tool(risk="dangerous")
def write_marker(ctx: ToolContext, text: str) -> str:
    """Write text to marker.txt in the workspace.

    Args:
        text: What to write.
    """
    (ctx.workspace / "marker.txt").write_text(text)
    return f"wrote {text!r}"


@tool
async def slow_step(seconds: float) -> str:
    """Wait a while, like a slow tool.

    Args:
        seconds: How long.
    """
    await asyncio.sleep(seconds)
    return f"waited {seconds} s"


def _desktop_tools(display: str) -> list[Any]:
    from omni_agent.tools.desktop import DesktopConfig, desktop_tools

    return desktop_tools(DesktopConfig(display=display, settle_s=0.05))


def test_typed_instruction_runs_and_the_timeline_shows_each_step(start_console, console_page, virtual_display, event_logger):
    outputs = [
        "I will click in the drawing area." + tool_call("computer_use", action="left_click", coordinate=[500, 600]),
        "Clicked the canvas; all done.",
    ]
    from omni_agent.screen import ScreenCapture
    from omni_agent.tools.desktop_observer import DesktopScreenshotObserver

    observer = DesktopScreenshotObserver(ScreenCapture(virtual_display.display), settle_s=0.05)
    console = start_console(
        outputs, tools=_desktop_tools(virtual_display.display), display=virtual_display.display, observers=[observer]
    )
    page = console_page
    _open(page, console)
    _run(page, "click the canvas")
    page.wait_for_selector("#overlay[data-target]", timeout=20_000)  # the model's click, drawn live
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "console-run.png"))
    page.wait_for_selector(".answer", timeout=20_000)

    step1 = page.locator('.step[data-step="1"]')
    assert "I will click in the drawing area." in step1.locator(".text").inner_text()
    call = step1.locator(".call")
    assert call.locator(".call-name").inner_text() == "computer_use"
    assert '"left_click"' in call.locator(".call-args").inner_text()
    assert call.locator(".validation").inner_text() == "valid"
    assert call.locator(".decision").inner_text().startswith("policy: allow")
    assert "left_click" in call.locator(".result").inner_text()
    assert call.locator(".result img").count() == 1  # the screenshot the model was shown
    assert call.locator(".call-timing").inner_text().endswith(" s")
    assert "answer: Clicked the canvas; all done." in page.locator(".answer").inner_text()
    # The observer's screenshots (before the first step, after step 1) are what the model saw next.
    assert page.locator("#timeline > .observation img").count() == 1
    assert step1.locator(".observation img").count() == 1
    # The model's click target was drawn on the live screen, where the click landed.
    fx, fy = map(float, page.locator("#overlay").get_attribute("data-target").split(","))
    assert abs(fx - 0.5) < 0.01 and abs(fy - 0.6) < 0.01
    press = event_logger.wait_for(lambda evs: [e for e in evs if e["type"] == "press"], what="the click")[0]
    assert abs(press["x"] - 640) <= 2 and abs(press["y"] - 480) <= 2


def test_an_ask_call_waits_for_approve_and_runs_with_the_edited_arguments(start_console, console_page, virtual_display, event_logger):
    console = start_console([tool_call("write_marker", text="from the model"), "done"], tools=[write_marker], display=virtual_display.display)
    marker = console.workspace / "marker.txt"
    page = console_page
    _open(page, console)
    _run(page, "write the marker")
    approval = page.locator(".approval")
    approval.wait_for(timeout=10_000)
    assert "write_marker is marked dangerous" in approval.inner_text()
    time.sleep(0.5)
    assert not marker.exists()  # waiting for the user, nothing ran
    assert page.locator("#state").inner_text() == "running"

    # An edit that breaks the schema is refused with the validator's words; the call still waits.
    approval.locator("textarea").fill('{"text": 5}')
    approval.locator(".approve").click()
    page.wait_for_function("document.querySelector('.approval .approval-error').textContent.includes('invalid')")
    assert not marker.exists()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "console-approval.png"))

    approval.locator("textarea").fill('{"text": "edited by the user"}')
    approval.locator(".approve").click()
    page.wait_for_selector(".answer", timeout=10_000)
    assert marker.read_text() == "edited by the user"
    decision = page.locator('.call .decision').inner_text()
    assert "approved" in decision and "the user edited the arguments" in decision
    assert page.locator(".approval").count() == 0


def test_a_denied_call_does_not_run(start_console, console_page):
    console = start_console([tool_call("write_marker", text="nope"), "ok, I will not"], tools=[write_marker])
    page = console_page
    _open(page, console)
    _run(page, "write the marker")
    page.locator(".approval .deny").click(timeout=10_000)
    page.wait_for_selector(".answer", timeout=10_000)
    assert not (console.workspace / "marker.txt").exists()
    call = page.locator(".call")
    assert call.locator(".decision").inner_text() == "policy: ask (write_marker is marked dangerous) · denied"
    assert call.locator(".result").inner_text() == "did not run (denied)"
    assert "bad" in (call.locator(".result").get_attribute("class") or "")


def test_stop_ends_a_run_and_keeps_its_trajectory(start_console, console_page):
    console = start_console([tool_call("slow_step", seconds=30), "never reached"], tools=[slow_step])
    page = console_page
    _open(page, console)
    _run(page, "wait a long time")
    page.wait_for_function("document.querySelector('.call .result') && document.querySelector('.call .result').textContent === 'running…'")
    started = time.monotonic()
    page.click("#stop-btn")
    page.wait_for_selector(".answer", timeout=5_000)
    assert time.monotonic() - started < 5
    assert page.locator(".answer").inner_text().startswith("cancelled")
    page.wait_for_function("document.querySelector('#state').textContent === 'idle'")
    (run_dir,) = [p for p in console.runs_dir.iterdir() if p.is_dir()]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["stop_reason"] == "cancelled"


def _center_pixel(page: Any) -> list[int]:
    return page.evaluate(
        """() => { const img = document.querySelector('#screen'); if (!img.naturalWidth) return [-1, -1, -1];
        const c = document.createElement('canvas'); c.width = 8; c.height = 8; const g = c.getContext('2d');
        g.drawImage(img, img.naturalWidth / 2 - 4, img.naturalHeight / 2 - 4, 8, 8, 0, 0, 8, 8);
        return Array.from(g.getImageData(4, 4, 1, 1).data.slice(0, 3)); }"""
    )


def _close_to(color: list[int], want: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(color, want))


def test_the_live_screen_follows_the_desktop(start_console, console_page, virtual_display):
    console = start_console(["nothing to do"], display=virtual_display.display)
    page = console_page
    _open(page, console)
    for rgb in ((220, 30, 30), (30, 60, 220)):
        close = paint_screen(virtual_display.display, rgb)
        try:
            _wait(lambda: _close_to(_center_pixel(page), rgb), 5.0, f"the page to show {rgb}")
        finally:
            close()
    assert page.evaluate("window.__console.frames.length") >= 2


def test_pause_then_take_over_is_done_by_the_desktop_tool_and_recorded(start_console, console_page, virtual_display, event_logger):
    seen: dict[str, Any] = {}

    def second_step(request: ModelRequest) -> str:
        texts = [p.text for m in request.messages if isinstance(m, UserMessage) for p in m.content if isinstance(p, TextPart)]
        seen["user_actions"] = [t for t in texts if t.startswith("[The user took over")]
        return "I see what you did." if seen["user_actions"] else "I saw nothing."

    outputs = [tool_call("slow_step", seconds=2), second_step]
    tools = [slow_step, *_desktop_tools(virtual_display.display)]
    console = start_console(outputs, tools=tools, display=virtual_display.display)
    page = console_page
    _open(page, console)
    _run(page, "do something slowly")
    page.wait_for_selector(".call", timeout=10_000)
    page.click("#pause-btn")
    page.wait_for_function("document.querySelector('#state').textContent === 'paused (between steps)'", timeout=10_000)

    # Click the event logger's canvas at screen (900, 500) through the live screen view.
    box = page.evaluate(
        """() => { const r = document.querySelector('#screen').getBoundingClientRect();
        const w = document.querySelector('#screen').naturalWidth, h = document.querySelector('#screen').naturalHeight;
        const s = Math.min(r.width / w, r.height / h); return [r.left + (r.width - w * s) / 2, r.top + (r.height - h * s) / 2, s]; }"""
    )
    left, top, scale = box
    page.mouse.click(left + 900 * scale, top + 500 * scale)
    press = event_logger.wait_for(lambda evs: [e for e in evs if e["type"] == "press"], what="the user's click")[0]
    assert abs(press["x"] - 900) <= 3 and abs(press["y"] - 500) <= 3
    page.wait_for_selector(".user-action", timeout=5_000)
    assert "computer_use" in page.locator(".user-action").inner_text()
    # Click into the text entry, then type through the take-over box: the desktop tool types it.
    ex, ey = event_logger.entry_center
    page.mouse.click(left + ex * scale, top + ey * scale)
    page.wait_for_function("document.querySelectorAll('.user-action').length === 2")
    page.fill("#takeover-text", "hi there")
    page.click("#takeover-send")
    event_logger.wait_for(lambda evs: event_logger.text() == "hi there", what="the typed text")
    page.wait_for_function("document.querySelectorAll('.user-action').length === 3")
    # A double click on the live screen is one double click on the desktop, not two clicks and one.
    page.mouse.dblclick(left + 300 * scale, top + 600 * scale)
    double = event_logger.wait_for(lambda evs: [e for e in evs if e["type"] == "double"], what="the double click")[0]
    assert abs(double["x"] - 300) <= 3 and abs(double["y"] - 600) <= 3
    page.wait_for_function("document.querySelectorAll('.user-action').length === 4")
    time.sleep(0.3)  # the next frame shows the typed text
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "console-takeover.png"))

    page.click("#resume-btn")
    page.wait_for_selector(".answer", timeout=10_000)
    assert "I see what you did." in page.locator(".answer").inner_text()
    assert "left_click" in seen["user_actions"][0] and '"type"' in seen["user_actions"][2]
    assert len(seen["user_actions"]) == 4 and '"double_click"' in seen["user_actions"][3]
    (run_dir,) = [p for p in console.runs_dir.iterdir() if p.is_dir()]
    assert "[The user took over" in (run_dir / "steps.jsonl").read_text()


def test_a_spoken_command_reaches_the_model_as_audio_and_the_answer_is_spoken(start_console, console_page):
    heard: dict[str, Any] = {}

    def answer(request: ModelRequest) -> str:
        audio = [p for m in request.messages for p in m.content if isinstance(p, AudioPart)]
        samples, rate = audio[0].load()
        heard.update(seconds=len(samples) / rate, peak=float(abs(samples).max()))
        return LONG_ANSWER

    console = start_console([answer], speak=True)
    page = console_page
    _open(page, console)
    talk = page.locator("#talk-btn")
    talk.hover()
    page.mouse.down()
    time.sleep(3.0)  # the fake microphone loops command.wav (about 2 s)
    page.mouse.up()
    page.wait_for_selector(".answer", timeout=20_000)
    assert LONG_ANSWER in page.locator(".answer").inner_text()
    assert 0.8 < heard["seconds"] < 3.5 and heard["peak"] > 0.05

    # The answer is spoken in the page; pressing the talk button again cuts it off (barge-in).
    page.wait_for_function("document.querySelector('#voice-status').textContent.startsWith('saying: Opening')", timeout=20_000)
    page.wait_for_function("window.__console.speechPlayed >= 1 && !document.querySelector('#speech').paused", timeout=10_000)
    talk.hover()
    page.mouse.down()
    page.wait_for_function("window.__console.speechStopped >= 1 && document.querySelector('#speech').paused", timeout=5_000)
    speaker = console.server.voice_output.speaker
    _wait(lambda: speaker.history[-1].status == "cancelled", 5.0, "the speaker to drop the answer")
    assert speaker.history[-1].text.startswith("Opening the calculator")
    page.mouse.up()


@tool
def show_picture() -> Any:
    """Return a small picture."""
    from PIL import Image

    from omni_agent.messages import ImagePart
    from omni_agent.tool import ToolOutput

    return ToolOutput(text="a red square", images=[ImagePart.from_pil(Image.new("RGB", (64, 48), (200, 0, 0)))])


def test_history_lists_past_runs_shows_their_screenshots_and_links_eval_reports(start_console, console_page):
    console = start_console(["unused"])
    earlier = Agent(ScriptedModel([tool_call("show_picture"), "that was red"]), [show_picture], trajectory_dir=console.runs_dir)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        pool.submit(earlier.run, "show me a picture").result()
    suite = console.runs_dir / "smoke-20261203-100000"
    suite.mkdir()
    (suite / "summary.json").write_text(json.dumps({"suite": "smoke"}))
    (suite / "index.html").write_text("<html><body><h1>smoke report</h1></body></html>")
    page = console_page
    _open(page, console)
    page.click("#tab-history")
    entries = page.locator("#history-list .run-entry")
    entries.first.wait_for()
    assert entries.count() == 2
    run_entry = page.locator(".run-entry", has_text="show me a picture")
    assert "answer" in run_entry.inner_text()
    run_entry.click()
    page.wait_for_selector("#history-view .step")
    assert "that was red" in page.locator("#history-view").inner_text()
    page.wait_for_function("[...document.querySelectorAll('#history-view .result img')].some((i) => i.naturalWidth === 64)")
    report = page.locator(".run-entry", has_text="smoke").locator("a.report")
    with page.context.expect_page() as opened:
        report.click()
    assert "smoke report" in opened.value.locator("h1").inner_text()


class _GreenPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"<!doctype html><title>green</title><body style='margin:0;background:#10c040;height:100vh'>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_browser_toolset_runs_headful_on_the_live_screen(console_page, virtual_display, tmp_path):
    from omni_agent.console.cli import build_console

    site = ThreadingHTTPServer(("127.0.0.1", 0), _GreenPage)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{site.server_address[1]}/"
    script = tmp_path / "script.json"
    script.write_text(json.dumps([tool_call("browser_goto", url=url), "it is green"]))
    server = build_console(
        model=f"scripted:{script}", tools="browser", workspace=tmp_path, runs_dir=tmp_path / "runs",
        display=virtual_display.display, max_steps=5, speak=False, speech_engine="silent", stack=[],
    ).start_in_thread()  # fmt: skip
    try:
        page = console_page
        _open(page, server)
        _run(page, "open the page")
        page.wait_for_selector(".call", timeout=10_000)
        page.click("#pause-btn")
        page.wait_for_function("document.querySelector('#state').textContent === 'paused (between steps)'", timeout=30_000)
        assert "Tab 0" in page.locator(".call .result").inner_text()
        _wait(lambda: _close_to(_center_pixel(page), (16, 192, 64)), 10.0, "the browser tab on the live screen")
        page.click("#resume-btn")
        page.wait_for_selector(".answer", timeout=20_000)
    finally:
        server.stop_thread()
        site.shutdown()
