"""Screen capture (reused mss per thread) and the desktop screenshot observer, on a real Xvfb."""

from __future__ import annotations

import asyncio
import threading

import pytest

from omni_agent.coords import QWEN3_SPEC, QWEN25_SPEC, Monitor
from omni_agent.messages import ImagePart
from omni_agent.observers import Observer
from omni_agent.screen import ScreenCapture
from omni_agent.tool import ToolContext
from omni_agent.tools.desktop_observer import DesktopScreenshotObserver
from omni_agent.xvfb import DisplayError, VirtualDisplay

from .fixtures.display import EventLoggerApp


def test_grab_shows_what_is_on_the_screen(virtual_display: VirtualDisplay, event_logger: EventLoggerApp) -> None:
    with ScreenCapture(virtual_display.display) as capture:
        assert capture.geometry() == Monitor(left=0, top=0, width=1280, height=800, scale=1.0)
        image = capture.grab()
        assert image.size == (1280, 800) and image.mode == "RGB"
        assert image.getpixel((640, 500)) == (255, 255, 255)  # the Tk canvas is white
        entry = event_logger.ready["entry"]
        assert image.getpixel((entry["x"] + 5, entry["y"] + 5)) != (0, 0, 0)


def test_an_empty_display_is_black() -> None:
    with VirtualDisplay(width=320, height=200) as vd, ScreenCapture(vd.display) as capture:
        image = capture.grab()
        assert image.size == (320, 200)
        assert image.getextrema() == ((0, 0), (0, 0), (0, 0))


def test_grab_for_model_resizes_per_model_family() -> None:
    with VirtualDisplay(width=1920, height=1080) as vd, ScreenCapture(vd.display) as capture:
        part, info = capture.grab_for_model(QWEN3_SPEC)
        assert isinstance(part, ImagePart) and part.load().size == (1920, 1088)
        assert info.tokens == 2040 and info.original_size == (1920, 1080)
        part, info = capture.grab_for_model(QWEN25_SPEC.model_copy(update={"max_pixels": 1280 * 28 * 28}))
        assert part.load().size == info.resized_size and info.tokens <= 1280
        assert info.coordinate_space == "absolute_resized"


def test_one_mss_instance_per_thread_reused(virtual_display: VirtualDisplay) -> None:
    with ScreenCapture(virtual_display.display) as capture:
        capture.grab()
        capture.grab()
        assert len(capture._instances) == 1  # reused in this thread
        sizes: list[tuple[int, int]] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(5):
                    sizes.append(capture.grab().size)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and sizes == [(1280, 800)] * 15
        assert len(capture._instances) == 4  # one per thread, never shared


def test_no_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(DisplayError, match="no X display.*VirtualDisplay"):
        ScreenCapture()
    with pytest.raises(DisplayError, match=":1998 is not running"):
        ScreenCapture(":1998")


def test_missing_monitor_is_a_clear_error(virtual_display: VirtualDisplay) -> None:
    with pytest.raises(DisplayError, match="monitor 3 does not exist"):
        ScreenCapture(virtual_display.display, monitor=3)


def test_capture_after_the_server_died_is_a_clear_error() -> None:
    vd = VirtualDisplay(width=320, height=200).start()
    capture = ScreenCapture(vd.display)
    capture.grab()
    vd.stop()
    with pytest.raises(DisplayError, match="no longer running"):
        capture.grab()
    capture.close()


def test_observer_returns_a_model_ready_screenshot(virtual_display: VirtualDisplay, event_logger: EventLoggerApp) -> None:
    observer = DesktopScreenshotObserver(ScreenCapture(virtual_display.display), QWEN25_SPEC, settle_s=0.1)
    assert isinstance(observer, Observer)
    parts = asyncio.run(observer.observe(ToolContext()))
    [part] = parts
    assert isinstance(part, ImagePart) and (part.width, part.height) == (1288, 812)
    assert observer.last_info is not None and observer.last_info.tokens == 46 * 29
    assert part.load().getpixel((644, 600)) == (255, 255, 255)
    with pytest.raises(ValueError, match="settle_s"):
        DesktopScreenshotObserver(observer.capture, settle_s=-1)
