"""The computer_use tool on a real Xvfb, checked against what a real Tk app received."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from omni_agent.coords import QWEN3_SPEC, QWEN25_SPEC, ModelImageSpec, Monitor, screen_to_model
from omni_agent.tool import Tool, ToolOutput
from omni_agent.tools.desktop import ACTIONS, DesktopConfig, DesktopController, desktop_tools, normalize_key
from omni_agent.xvfb import VirtualDisplay

from .fixtures.display import APPS, EventLoggerApp, _stop_process_group, _wait

SCREEN = Monitor(width=1280, height=800)


def make_tool(display: str, **options: Any) -> Tool:
    options.setdefault("screenshot_after_action", False)
    options.setdefault("settle_s", 0.0)
    [tool] = desktop_tools(DesktopConfig(display=display, **options))
    return tool


def call(tool: Tool, **arguments: Any) -> ToolOutput:
    return asyncio.run(tool.call(arguments))


def model_xy(x: int, y: int, spec: ModelImageSpec = QWEN3_SPEC) -> list[int]:
    """What a model should write to hit screen point (x, y) on the 1280x800 test display."""
    return list(screen_to_model(x, y, spec=spec, monitor=SCREEN))


def near(event: dict[str, Any], x: int, y: int, tol: int = 1) -> bool:
    # One unit of the 0..1000 grid is 1.28 screen pixels here: allow one pixel.
    return abs(event["x"] - x) <= tol and abs(event["y"] - y) <= tol


@pytest.fixture
def tool(virtual_display: VirtualDisplay) -> Tool:
    return make_tool(virtual_display.display)


# -- the tool's definition ------------------------------------------------------------------------


def test_tool_definition_follows_qwen3_vl_computer_use(virtual_display: VirtualDisplay) -> None:
    [tool] = desktop_tools(DesktopConfig(display=virtual_display.display))
    assert tool.name == "computer_use" and tool.kind == "desktop"
    assert tool.parallel_safe is False and tool.reads_untrusted is True
    props = tool.parameters["properties"]
    assert props["action"]["enum"] == list(ACTIONS)
    assert {"keys", "text", "coordinate", "pixels", "time", "status"} <= set(props)
    assert props["status"]["enum"] == ["success", "failure"]
    assert tool.parameters["required"] == ["action"]
    assert "1000x1000" in tool.description
    [absolute] = desktop_tools(DesktopConfig(display=virtual_display.display, spec=QWEN25_SPEC))
    assert "1288x812" in absolute.description  # the resized screenshot the Qwen2.5 model sees


# -- mouse ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "button"), [("left_click", 1), ("middle_click", 2), ("right_click", 3)])
def test_clicks_land_where_the_model_pointed(tool: Tool, event_logger: EventLoggerApp, action: str, button: int) -> None:
    out = call(tool, action=action, coordinate=model_xy(700, 450))
    assert not out.is_error, out.text
    press = event_logger.wait_for(lambda ev: [e for e in ev if e["type"] == "press"], what="a press")[0]
    release = event_logger.wait_for(lambda ev: [e for e in ev if e["type"] == "release"], what="a release")[0]
    assert press["button"] == release["button"] == button
    assert near(press, 700, 450) and near(release, 700, 450)
    assert out.data["screen"] == [press["x"], press["y"]]


def test_qwen25_absolute_coordinates_land_on_the_same_point(virtual_display: VirtualDisplay, event_logger: EventLoggerApp) -> None:
    tool = make_tool(virtual_display.display, spec=QWEN25_SPEC)
    # The Qwen2.5 model sees a 1288x812 image: (644, 406) there is the screen's (640, 400).
    assert not call(tool, action="left_click", coordinate=[644, 406]).is_error
    press = event_logger.wait_for(lambda ev: [e for e in ev if e["type"] == "press"])[0]
    assert (press["x"], press["y"]) == (640, 400)


def test_double_and_triple_click(tool: Tool, event_logger: EventLoggerApp) -> None:
    assert not call(tool, action="double_click", coordinate=model_xy(300, 300)).is_error
    double = event_logger.wait_for(lambda ev: [e for e in ev if e["type"] == "double"], what="a double click")[0]
    assert near(double, 300, 300)
    assert len(event_logger.events("press")) == 1  # Tk reports the second press as the double
    assert not call(tool, action="triple_click", coordinate=model_xy(900, 600)).is_error
    triple = event_logger.wait_for(lambda ev: [e for e in ev if e["type"] == "triple"], what="a triple click")[0]
    assert near(triple, 900, 600)


def test_drag_from_start_to_end_moves_with_the_button_held(tool: Tool, event_logger: EventLoggerApp) -> None:
    out = call(tool, action="left_click_drag", start_coordinate=model_xy(200, 300), coordinate=model_xy(600, 500))
    assert not out.is_error, out.text
    events = event_logger.wait_for(lambda ev: ev if any(e["type"] == "release" for e in ev) else None, what="a release")
    kinds = [e["type"] for e in events if e["type"] in ("press", "drag", "release")]
    assert kinds[0] == "press" and kinds[-1] == "release" and kinds.count("drag") >= 5
    press = next(e for e in events if e["type"] == "press")
    release = next(e for e in events if e["type"] == "release")
    assert near(press, 200, 300) and near(release, 600, 500)
    drags = [e for e in events if e["type"] == "drag"]
    assert any(250 < e["x"] < 550 for e in drags)  # it passed through the middle


def test_drag_from_the_current_position(tool: Tool, event_logger: EventLoggerApp) -> None:
    assert not call(tool, action="mouse_move", coordinate=model_xy(1000, 250)).is_error
    assert not call(tool, action="left_click_drag", coordinate=model_xy(800, 650)).is_error
    events = event_logger.wait_for(lambda ev: ev if any(e["type"] == "release" for e in ev) else None)
    press = next(e for e in events if e["type"] == "press")
    release = next(e for e in events if e["type"] == "release")
    assert near(press, 1000, 250) and near(release, 800, 650)


@pytest.mark.parametrize(
    ("action", "pixels", "direction"),
    [("scroll", -3, "down"), ("scroll", 2, "up"), ("hscroll", 2, "right"), ("hscroll", -1, "left")],
)
def test_scroll_sends_wheel_clicks_at_the_coordinate(
    tool: Tool, event_logger: EventLoggerApp, action: str, pixels: int, direction: str
) -> None:
    out = call(tool, action=action, pixels=pixels, coordinate=model_xy(640, 500))
    assert not out.is_error, out.text
    wheels = event_logger.wait_for(lambda ev: [e for e in ev if e["type"] == "wheel"] if sum(e["type"] == "wheel" for e in ev) >= abs(pixels) else None)
    assert [w["direction"] for w in wheels] == [direction] * abs(pixels)
    assert all(near(w, 640, 500) for w in wheels)


# -- keyboard -----------------------------------------------------------------------------------------


def _focus_entry(tool: Tool, app: EventLoggerApp) -> None:
    assert not call(tool, action="left_click", coordinate=model_xy(*app.entry_center)).is_error


@pytest.mark.parametrize("text", ["café <ü> 東京", "café <ü> 东京", "a<b>c & \"q\" 'x' ~|{}^`\\ ß€ñ"])
def test_type_reads_back_exactly(tool: Tool, event_logger: EventLoggerApp, text: str) -> None:
    _focus_entry(tool, event_logger)
    out = call(tool, action="type", text=text)
    assert not out.is_error, out.text
    assert event_logger.wait_for(lambda ev: event_logger.text() == text, what=f"the entry to read {text!r}")
    assert event_logger.text() == text


def test_type_through_the_clipboard(virtual_display: VirtualDisplay, event_logger: EventLoggerApp) -> None:
    tool = make_tool(virtual_display.display, typing="clipboard")
    _focus_entry(tool, event_logger)
    text = "café <ü> 東京 " + "long text " * 20
    assert not call(tool, action="type", text=text).is_error
    assert event_logger.wait_for(lambda ev: event_logger.text() == text, what="the pasted text")


@pytest.mark.parametrize(
    ("keys", "keysym", "modifiers"),
    [(["ctrl", "c"], "c", ["ctrl"]), (["CTRL", "Shift", "X"], "X", ["shift", "ctrl"]), (["Return"], "Return", []),
     ("alt+f", "f", ["alt"]), (["Page_Down"], "Next", [])],
)  # fmt: skip
def test_key_presses_hotkeys(
    tool: Tool, event_logger: EventLoggerApp, keys: Any, keysym: str, modifiers: list[str]
) -> None:
    out = call(tool, action="key", keys=keys)
    assert not out.is_error, out.text
    hit = event_logger.wait_for(lambda ev: [e for e in ev if e["type"] == "key" and e["keysym"] == keysym], what=keysym)[0]
    assert hit["modifiers"] == modifiers


def test_key_names_are_normalized() -> None:
    assert normalize_key("Return") == "enter"
    assert normalize_key("ArrowLeft") == "left"
    assert normalize_key("Page_Down") == "pagedown"
    assert normalize_key("cmd") == "win"
    assert normalize_key("A") == "A"


# -- results, screenshots and finishing -------------------------------------------------------------


def test_actions_return_a_model_ready_screenshot(virtual_display: VirtualDisplay, event_logger: EventLoggerApp) -> None:
    tool = make_tool(virtual_display.display, screenshot_after_action=True, settle_s=0.05, spec=QWEN25_SPEC)
    out = call(tool, action="mouse_move", coordinate=[100, 100])
    assert not out.is_error and out.untrusted
    [image] = out.images
    assert (image.width, image.height) == (1288, 812)  # what Qwen2.5's processor would make of 1280x800
    assert out.data["screenshot"]["tokens"] == 46 * 29
    # The Tk canvas (white from y=120 down) is in the picture.
    assert image.load().getpixel((644, 600)) == (255, 255, 255)


def test_wait_terminate_and_answer_do_not_need_the_screen(tool: Tool) -> None:
    waited = call(tool, action="wait", time=0.05)
    assert not waited.is_error and not waited.finish
    done = call(tool, action="terminate", status="success")
    assert done.finish and done.answer == "success"
    answer = call(tool, action="answer", text="42 apples")
    assert answer.finish and answer.answer == "42 apples"


# -- bad calls ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"action": "mouse_move"}, "needs 'coordinate'"),
        ({"action": "left_click_drag"}, "needs 'coordinate'"),
        ({"action": "left_click", "coordinate": [10]}, "must be [x, y]"),
        ({"action": "left_click", "coordinate": ["a", "b"]}, "must be [x, y]"),
        ({"action": "left_click", "coordinate": [1200, 5]}, "outside the screen; x and y run from 0"),
        ({"action": "left_click", "coordinate": [-1, 5]}, "outside the screen"),
        ({"action": "key"}, "needs 'keys'"),
        ({"action": "key", "keys": ["ctrl", "nosuchkey"]}, "unknown key 'nosuchkey'"),
        ({"action": "key", "keys": ["é"]}, "use action=type"),
        ({"action": "type"}, "needs 'text'"),
        ({"action": "type", "text": 5}, "needs 'text'"),
        ({"action": "scroll"}, "needs 'pixels'"),
        ({"action": "scroll", "pixels": 0}, "must not be 0"),
        ({"action": "scroll", "pixels": "lots"}, "must be a number"),
        ({"action": "wait"}, "needs 'time'"),
        ({"action": "wait", "time": 3600}, "'time' must be 0..30"),
        ({"action": "terminate"}, "'success' or 'failure'"),
        ({"action": "answer"}, "needs 'text'"),
        ({"action": "fly"}, "unknown action 'fly'"),
    ],
)
def test_bad_arguments_get_clear_errors(tool: Tool, arguments: dict[str, Any], message: str) -> None:
    out = call(tool, **arguments)
    assert out.is_error
    assert message in out.text
    assert "Traceback" not in out.text


def test_lenient_coordinate_forms_are_accepted(tool: Tool, event_logger: EventLoggerApp) -> None:
    assert not call(tool, action="left_click", coordinate="(500, 625)").is_error
    press = event_logger.wait_for(lambda ev: [e for e in ev if e["type"] == "press"])[0]
    assert near(press, 640, 500)


# -- displays -----------------------------------------------------------------------------------------


def test_missing_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    [tool] = desktop_tools(DesktopConfig())
    out = call(tool, action="left_click", coordinate=[500, 500])
    assert out.is_error and "no X display" in out.text and "VirtualDisplay" in out.text
    [tool] = desktop_tools(DesktopConfig(display=":1999"))
    out = call(tool, action="type", text="hello")
    assert out.is_error and "X display :1999 is not running" in out.text


def test_a_display_that_dies_gives_a_clear_error_then_recovers() -> None:
    vd = VirtualDisplay(width=640, height=480).start()
    number = vd.number
    tool = make_tool(vd.display)
    assert not call(tool, action="mouse_move", coordinate=[500, 500]).is_error
    vd.stop()
    out = call(tool, action="left_click", coordinate=[500, 500])
    assert out.is_error and "desktop unavailable" in out.text and vd.display in out.text
    with VirtualDisplay(width=640, height=480, number=number) as again:  # same number, new server
        out = call(tool, action="mouse_move", coordinate=[500, 500])
        assert not out.is_error, out.text
        assert out.data["screen"] == [320, 240]
        assert again.is_running()


def test_one_process_drives_two_displays(virtual_display: VirtualDisplay, event_logger: EventLoggerApp, tmp_path: Path) -> None:
    """pyautogui binds one display at import; the tool rebinds it per call, so two tools on two
    displays each reach their own app."""
    with VirtualDisplay(width=640, height=480) as second:
        log = tmp_path / "second.jsonl"
        log.touch()
        proc = subprocess.Popen(
            [sys.executable, str(APPS / "event_logger.py"), str(log), "--geometry", "640x480+0+0"],
            env=second.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        other = EventLoggerApp(log_path=log, proc=proc)
        try:
            other.ready = _wait(lambda: (other.events("ready") or [None])[0], 15.0, "the second app")
            first_tool = make_tool(virtual_display.display)
            second_tool = make_tool(second.display)
            assert not call(second_tool, action="left_click", coordinate=[500, 500]).is_error
            assert not call(first_tool, action="right_click", coordinate=model_xy(640, 600)).is_error
            assert not call(second_tool, action="middle_click", coordinate=[250, 750]).is_error
            mine = event_logger.wait_for(lambda ev: [e for e in ev if e["type"] == "press"])
            theirs = other.wait_for(lambda ev: p if len(p := [e for e in ev if e["type"] == "press"]) == 2 else None)
            assert [(e["button"], e["x"], e["y"]) for e in mine] == [(3, 640, 600)]
            assert [(e["button"], e["x"], e["y"]) for e in theirs] == [(1, 320, 240), (2, 160, 360)]
        finally:
            _stop_process_group(proc)


def test_failsafe_corner_stops_the_agent(tool: Tool, virtual_display: VirtualDisplay) -> None:
    # The agent's own click on a corner is moved one pixel in, so it cannot trip the fail-safe...
    out = call(tool, action="left_click", coordinate=[0, 0])
    assert not out.is_error and out.data["screen"] == [1, 1]
    # ...but a person who moves the mouse into a corner stops the next action.
    subprocess.run(["xdotool", "mousemove", "0", "0"], env=virtual_display.env(), check=True)
    try:
        out = call(tool, action="left_click", coordinate=[500, 500])
        assert out.is_error and "fail-safe" in out.text
    finally:
        subprocess.run(["xdotool", "mousemove", "640", "400"], env=virtual_display.env(), check=True)


def test_controller_is_shared_when_passed(virtual_display: VirtualDisplay) -> None:
    controller = DesktopController(DesktopConfig(display=virtual_display.display, screenshot_after_action=False))
    [tool] = desktop_tools(controller=controller)
    assert call(tool, action="mouse_move", coordinate=[250, 250]).data["screen"] == [320, 200]
    assert controller.monitor() == SCREEN
    with pytest.raises(ValueError, match="either config or controller"):
        desktop_tools(DesktopConfig(display=":5"), controller=controller)
