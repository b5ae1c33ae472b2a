"""Screen capture for desktop agents: one reused mss instance per thread, model-ready images.

A new mss instance costs ~8 ms per shot, a reused one ~1.6 ms to a PIL image (1280x800), and mss
instances are not thread-safe, hence one per thread. ``pyautogui.screenshot()`` is not used: it
shells out to scrot (~54 ms) or fails outright. Needs the ``desktop`` extra (mss).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from .coords import QWEN3_SPEC, ModelImageSpec, Monitor, ResizeInfo, resize_for_model
from .exceptions import require
from .messages import ImagePart
from .xvfb import DisplayError, display_is_reachable

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DisplayError", "ScreenCapture", "resolve_display"]


def resolve_display(display: str | None) -> str:
    """The display to use: the given one, else $DISPLAY; DisplayError when there is none or
    nothing answers there."""
    chosen = display or os.environ.get("DISPLAY", "")
    if not chosen:
        raise DisplayError(
            "no X display: pass display=':N' or set $DISPLAY "
            "(headless? start one with omni_agent.xvfb.VirtualDisplay or `Xvfb :99 &`)"
        )
    if not display_is_reachable(chosen):
        raise DisplayError(f"X display {chosen} is not running (no X server answers there)")
    return chosen


class ScreenCapture:
    """Grabs one monitor of an X display.

    ``monitor`` follows mss numbering: 0 is the whole virtual desktop (all monitors), 1 the
    first monitor, 2 the second...
    """

    def __init__(self, display: str | None = None, monitor: int = 1) -> None:
        self.display = resolve_display(display)
        if monitor < 0:
            raise ValueError(f"monitor must be >= 0, got {monitor}")
        self.monitor_index = monitor
        self._local = threading.local()
        self._instances: list[Any] = []  # every thread's instance, so close() reaches them all
        self._instances_lock = threading.Lock()
        self.geometry()  # fail now, with a clear message, if the monitor does not exist

    def _mss(self) -> Any:
        inst = getattr(self._local, "mss", None)
        if inst is None:
            mss = require("mss", "desktop")
            try:
                inst = mss.mss(display=self.display)
            except Exception as exc:  # mss raises ScreenShotError with X's own words
                raise DisplayError(f"cannot open X display {self.display} for capture: {exc}") from exc
            self._local.mss = inst
            with self._instances_lock:
                self._instances.append(inst)
        return inst

    def _mss_monitor(self) -> dict[str, int]:
        monitors = self._mss().monitors
        if self.monitor_index >= len(monitors):
            raise DisplayError(
                f"display {self.display} has {len(monitors) - 1} monitor(s); monitor {self.monitor_index} does not exist"
            )
        return monitors[self.monitor_index]

    def geometry(self) -> Monitor:
        """The captured monitor in screen points (X11 has no scale factor: scale=1)."""
        m = self._mss_monitor()
        return Monitor(left=m["left"], top=m["top"], width=m["width"], height=m["height"], scale=1.0)

    def grab(self) -> "Image.Image":
        """The monitor as an RGB PIL image, at full resolution."""
        from PIL import Image

        for attempt in (1, 2):
            try:
                shot = self._mss().grab(self._mss_monitor())
                break
            except DisplayError:
                raise
            except Exception as exc:
                self._drop_thread_instance()  # a dead connection must not be reused
                if not display_is_reachable(self.display):
                    raise DisplayError(f"X display {self.display} is no longer running (its X server stopped)") from exc
                if attempt == 2:
                    raise DisplayError(f"screen capture on {self.display} failed: {exc or type(exc).__name__}") from exc
                # else: a new server answers on this number (restarted); reconnect once
        # BGRX -> RGB in one C pass, no intermediate copy.
        return Image.frombuffer("RGB", shot.size, shot.bgra, "raw", "BGRX", 0, 1)

    def grab_for_model(self, spec: ModelImageSpec = QWEN3_SPEC) -> tuple[ImagePart, ResizeInfo]:
        """A screenshot resized the way the model's processor would (see coords.resize_for_model)."""
        image, info = resize_for_model(self.grab(), spec)
        return ImagePart.from_pil(image), info

    def _drop_thread_instance(self) -> None:
        inst = getattr(self._local, "mss", None)
        self._local.mss = None
        if inst is not None:
            with self._instances_lock:
                if inst in self._instances:
                    self._instances.remove(inst)
            _close_quietly(inst)

    def close(self) -> None:
        with self._instances_lock:
            instances, self._instances = self._instances, []
        for inst in instances:
            _close_quietly(inst)
        self._local = threading.local()

    def __enter__(self) -> "ScreenCapture":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ScreenCapture(display={self.display!r}, monitor={self.monitor_index})"


def _close_quietly(inst: Any) -> None:
    try:
        inst.close()
    except Exception:  # noqa: BLE001 - closing a broken X connection may fail; nothing to do
        pass
