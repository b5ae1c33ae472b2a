"""Desktop tool: the Qwen3-VL ``computer_use`` action space on an X display.

    config = DesktopConfig(display=":99", spec=QWEN3_SPEC)
    agent = Agent(model, tools=desktop_tools(config))

Mouse and keys go through pyautogui (``PAUSE = 0``: no 0.1 s sleep after every call; the
fail-safe stays on: a person can stop the agent by moving the mouse into a screen corner).
Text goes through ``xdotool type`` for ASCII and spare-keycode bindings for other characters
(or the clipboard), because ``pyautogui.write()`` drops non-ASCII characters and types ``<`` as
``>`` on common keymaps. Screenshots come from
:class:`omni_agent.screen.ScreenCapture`; coordinates from :mod:`omni_agent.coords`.

Needs: the ``desktop`` extra (pyautogui, mss, python-xlib) and the apt packages ``xdotool``
(``xclip`` for clipboard typing) and an X display (``xvfb`` when headless).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from omni_agent.coords import QWEN3_SPEC, ModelImageSpec, Monitor, ResizeInfo, model_to_screen, spec_for
from omni_agent.exceptions import MissingDependencyError, ToolExecutionError, require
from omni_agent.messages import ImagePart
from omni_agent.screen import ScreenCapture, resolve_display
from omni_agent.tool import Tool, ToolContext, ToolOutput
from omni_agent.toolkit import Toolkit
from omni_agent.xvfb import DisplayError, display_is_reachable

__all__ = [
    "ACTIONS", "DesktopConfig", "DesktopController", "DesktopKit", "computer_use_parameters", "desktop_tools",
]  # fmt: skip

ACTIONS = (
    "key", "type", "mouse_move", "left_click", "left_click_drag", "right_click", "middle_click",
    "double_click", "triple_click", "scroll", "hscroll", "wait", "terminate", "answer",
)  # fmt: skip
Action = Literal[
    "key", "type", "mouse_move", "left_click", "left_click_drag", "right_click", "middle_click",
    "double_click", "triple_click", "scroll", "hscroll", "wait", "terminate", "answer",
]  # fmt: skip


class DesktopConfig(BaseModel):
    """Where and how the desktop tool acts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    display: str | None = None
    """X display (':99'); None uses $DISPLAY at the first action."""
    spec: ModelImageSpec = QWEN3_SPEC
    """The model's image spec: its coordinate space and the screenshot resize."""
    monitor: int = Field(default=1, ge=0)
    """mss monitor number: 1 = first monitor, 0 = the whole desktop."""
    screenshot_after_action: bool = True
    """Return a fresh model-ready screenshot with each action's result."""
    settle_s: float = Field(default=0.3, ge=0)
    """Wait this long after an action before the screenshot, so the screen can redraw."""
    typing: Literal["xdotool", "clipboard"] = "xdotool"
    """How ``type`` enters text: keystrokes (xdotool for ASCII, spare keycodes for the rest; any
    app) or clipboard + ctrl+v (fast for long text, but needs an app that pastes with ctrl+v, and
    it replaces the clipboard)."""
    max_wait_s: float = Field(default=30.0, gt=0)
    max_scroll: int = Field(default=50, ge=1)
    """Most wheel clicks one scroll action may send."""
    drag_duration_s: float = Field(default=0.15, ge=0)
    """Drags move in steps over this time: apps ignore a press and release with no motion between."""
    failsafe: bool = True
    """Keep pyautogui's fail-safe (mouse in a corner stops the agent). Recommended."""

    @field_validator("spec", mode="before")
    @classmethod
    def _spec_by_name(cls, value: Any) -> Any:
        return spec_for(value) if isinstance(value, str) else value  # spec="qwen2.5-vl"


# -- keys -------------------------------------------------------------------------------------

_KEY_ALIASES = {
    "control": "ctrl", "ctl": "ctrl", "lctrl": "ctrlleft", "rctrl": "ctrlright",
    "cmd": "win", "command": "win", "super": "win", "meta": "win", "windows": "win", "os": "win",
    "option": "alt", "lalt": "altleft", "ralt": "altright", "altgr": "altright",
    "escape": "esc", "return": "enter", "spacebar": "space", "bksp": "backspace",
    "del": "delete", "ins": "insert", "pgup": "pageup", "pgdn": "pagedown", "prior": "pageup",
    "next": "pagedown", "arrowup": "up", "arrowdown": "down", "arrowleft": "left",
    "arrowright": "right", "printscreen": "printscreen", "capslock": "capslock",
}  # fmt: skip


def normalize_key(name: str) -> str:
    """A key name as models write it ("Return", "Page_Down", "CTRL", "ArrowUp") -> pyautogui's.
    Single characters keep their case ("A" is shift+a)."""
    if len(name) == 1:
        return name
    key = re.sub(r"[\s_\-]", "", name.strip().lower())
    if key.startswith("key") and len(key) > 3:  # "KeyA" (browser style)
        key = key[3:]
    return _KEY_ALIASES.get(key, key)


def _check_keys(keys: list[str], known: dict[str, Any]) -> list[str]:
    normalized = []
    for raw in keys:
        key = normalize_key(raw)
        if len(keys) > 1 and len(key) == 1 and key.isascii():
            key = key.lower()  # ["ctrl", "C"] means ctrl+c, not ctrl+shift+c
        if known.get(key) is None:
            hint = " (use action=type for text)" if len(raw) == 1 else ""
            raise ToolExecutionError(
                f"unknown key {raw!r}{hint}; use names like 'enter', 'tab', 'esc', 'ctrl', 'shift', 'alt', "
                "'up', 'pagedown', 'f5', or single characters"
            )
        normalized.append(key)
    return normalized


# -- input backend ----------------------------------------------------------------------------

# pyautogui is process-global: one X connection bound at import. One lock serialises all input
# (GUI actions must not interleave anyway) and lets one process drive several displays.
_INPUT_LOCK = threading.RLock()
_CONNECTIONS: dict[str, Any] = {}  # display -> python-xlib connection
_bound_display: str | None = None  # the display pyautogui's connection points at now


def _pyautogui_for(display: str) -> Any:
    """pyautogui acting on ``display``. Call with ``_INPUT_LOCK`` held."""
    global _bound_display
    if "pyautogui" not in sys.modules:
        # pyautogui (and mouseinfo, which it imports) open $DISPLAY at import time.
        previous = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = display
        try:
            require("pyautogui", "desktop")
        except MissingDependencyError:
            raise
        except Exception as exc:  # Xlib's connection errors
            raise DisplayError(f"pyautogui cannot open X display {display}: {exc}") from exc
        finally:
            if previous is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = previous
        _bound_display = display
        _CONNECTIONS[display] = sys.modules["pyautogui._pyautogui_x11"]._display
    import pyautogui

    x11 = sys.modules["pyautogui._pyautogui_x11"]
    if display in _CONNECTIONS:
        try:
            _CONNECTIONS[display].sync()  # one round trip (~0.1 ms): is this server still ours?
        except Exception:  # closed: the server stopped, maybe a new one took its number
            _drop_connection(display)
    if display not in _CONNECTIONS:
        from Xlib.display import Display

        try:
            _CONNECTIONS[display] = Display(display)
        except Exception as exc:
            raise DisplayError(f"cannot open X display {display}: {exc}") from exc
    if _bound_display != display or x11._display is not _CONNECTIONS[display]:
        # Rebind the module's connection. Key codes in pyautogui's table were read from the first
        # display; Xvfb servers all load the same default keymap, so they stay valid.
        x11._display = _CONNECTIONS[display]
        _bound_display = display
    width, height = pyautogui.size()
    pyautogui.FAILSAFE_POINTS = [(0, 0), (0, height - 1), (width - 1, 0), (width - 1, height - 1)]
    pyautogui.PAUSE = 0
    pyautogui.MINIMUM_DURATION = 0
    return pyautogui


def _drop_connection(display: str) -> None:
    """Forget a dead X connection so the next action reconnects (e.g. to a restarted Xvfb)."""
    conn = _CONNECTIONS.pop(display, None)
    _TYPERS.pop(display, None)
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail; nothing to do
            pass


class _SpareKeyTyper:
    """Types characters that have no key on the keymap (é, ü, 東...) through one X connection.

    Why not ``xdotool type`` for these: it binds the character to a spare keycode, sends the key
    and restores the keycode at once; a client that reads the keymap late gets the wrong key
    (measured: about one lost character in 30 runs of "café <ü> 東京" on a busy 2-core machine).
    Here each character keeps one of the ~18 spare keycodes (round robin, a repeated character
    reuses its binding), the client gets ``BIND_SETTLE_S`` to take a new binding in before the
    key arrives, and a keycode is rebound only ``REUSE_AFTER_S`` after its last use. 0 lost in
    90 runs, also with both cores busy. Bindings stay: no physical key sends those keycodes.
    """

    REUSE_AFTER_S = 0.25
    BIND_SETTLE_S = 0.02

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        low = conn.display.info.min_keycode
        high = conn.display.info.max_keycode
        mapping = conn.get_keyboard_mapping(low, high - low + 1)
        # Skip the lowest keycode (8): some toolkits treat it as "no key".
        self.spare = [low + i for i, syms in enumerate(mapping) if not any(syms) and low + i > 8]
        self.last_used = dict.fromkeys(self.spare, 0.0)
        self.bound: dict[int, int] = {}  # keysym -> keycode currently bound to it
        if not self.spare:
            raise ToolExecutionError("the keyboard map has no free keycode to type non-ASCII text; use typing='clipboard'")

    def type_char(self, ch: str) -> None:
        from Xlib import X
        from Xlib.ext.xtest import fake_input

        code = ord(ch)
        keysym = code if 0x20 <= code <= 0xFF else 0x01000000 | code  # X11: Latin-1 keysyms = code points
        keycode = self.bound.get(keysym)
        if keycode is None:
            keycode = min(self.spare, key=self.last_used.__getitem__)
            wait = self.REUSE_AFTER_S - (time.monotonic() - self.last_used[keycode])
            if wait > 0:
                time.sleep(wait)
            self.bound = {k: v for k, v in self.bound.items() if v != keycode}
            self.conn.change_keyboard_mapping(keycode, [(keysym, keysym)])
            self.conn.sync()
            self.bound[keysym] = keycode
            time.sleep(self.BIND_SETTLE_S)
        fake_input(self.conn, X.KeyPress, keycode)
        fake_input(self.conn, X.KeyRelease, keycode)
        self.conn.sync()
        self.last_used[keycode] = time.monotonic()


_TYPERS: dict[str, _SpareKeyTyper] = {}


def _text_runs(text: str) -> list[str]:
    """Split text into ASCII runs (typed by xdotool from the keymap) and single other characters."""
    runs: list[str] = []
    for ch in text:
        if ch.isascii() and runs and runs[-1].isascii():
            runs[-1] += ch
        else:
            runs.append(ch)
    return runs


def _run_x_tool(cmd: list[str], display: str, *, input_text: str | None = None, timeout: float = 30.0) -> None:
    binary = shutil.which(cmd[0])
    if binary is None:
        raise ToolExecutionError(f"{cmd[0]} is not installed (apt package '{cmd[0]}'); cannot type text")
    env = {**os.environ, "DISPLAY": display}
    try:
        proc = subprocess.run(
            [binary, *cmd[1:]],
            input=input_text.encode() if input_text is not None else None,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # xclip's background server keeps pipes open: never capture
            stderr=subprocess.PIPE if cmd[0] != "xclip" else subprocess.DEVNULL,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolExecutionError(f"{cmd[0]} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or b"").decode("utf-8", "replace").strip()[-300:]
        raise ToolExecutionError(f"{cmd[0]} failed (exit {proc.returncode}): {detail or 'no message'}")


# -- arguments ---------------------------------------------------------------------------------

_NUMBER = r"[-+]?\d+(?:\.\d+)?"


def _coordinate(value: Any, name: str, action: str) -> tuple[float, float]:
    if isinstance(value, str):  # "[500, 300]", "(500,300)", "500 300"
        found = re.findall(_NUMBER, value)
        value = [float(v) for v in found] if len(found) == 2 else value
    if isinstance(value, dict) and {"x", "y"} <= set(value):
        value = [value["x"], value["y"]]
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ToolExecutionError(f"action={action}: '{name}' must be [x, y] (two numbers), got {value!r}")
    return float(value[0]), float(value[1])


def _require(args: dict[str, Any], name: str, action: str, what: str) -> Any:
    value = args.get(name)
    if value is None or value == "" or value == []:
        raise ToolExecutionError(f"action={action} needs '{name}': {what}")
    return value


def _number(value: Any, name: str, action: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ToolExecutionError(f"action={action}: '{name}' must be a number, got {value!r}")
    return float(value)


# -- controller --------------------------------------------------------------------------------


class DesktopController(Toolkit):
    """Executes computer_use actions on one display and maps model coordinates to the screen.

    A :class:`~omni_agent.toolkit.Toolkit` with one tool, ``computer_use`` (Qwen3-VL's action
    space, one schema), whose actions are the ``do_<action>`` methods; ``stop()`` closes the
    screen capture. A run whose display is missing fails at its start (:meth:`check_display`).
    """

    def __init__(self, config: DesktopConfig | None = None) -> None:
        self.config = config or DesktopConfig()
        self._capture: ScreenCapture | None = None
        self._capture_lock = threading.Lock()

    # -- display ------------------------------------------------------------------------------
    @property
    def capture(self) -> ScreenCapture:
        """The screen capture (opened on first use; raises DisplayError without a display)."""
        with self._capture_lock:
            if self._capture is None:
                self._capture = ScreenCapture(self.config.display, self.config.monitor)
            return self._capture

    @property
    def display(self) -> str:
        return self.capture.display

    def monitor(self) -> Monitor:
        return self.capture.geometry()

    def to_screen(self, coordinate: tuple[float, float], action: str) -> tuple[int, int]:
        """Model coordinates -> screen point, refusing values outside the model's space."""
        monitor = self.monitor()
        size = monitor.pixel_size
        max_x, max_y = self.config.spec.model_extent(size)
        x, y = coordinate
        if not (0 <= x <= max_x and 0 <= y <= max_y):
            raise ToolExecutionError(
                f"action={action}: coordinate [{x:g}, {y:g}] is outside the screen; "
                f"{self.describe_space()}"
            )
        return model_to_screen(x, y, spec=self.config.spec, monitor=monitor, image_size=size)

    def describe_space(self) -> str:
        spec = self.config.spec
        if spec.coordinate_space == "relative_1000":
            return f"x and y run from 0 (left/top edge) to {spec.grid} (right/bottom edge)"
        try:
            w, h = spec.resized_size(self.monitor().pixel_size)
        except DisplayError:
            return "x and y are pixels of the screenshot you were shown"
        return f"x runs 0..{w} and y 0..{h}, pixels of the {w}x{h} screenshot you were shown"

    def screenshot(self) -> tuple[ImagePart, ResizeInfo]:
        return self.capture.grab_for_model(self.config.spec)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None

    def check_display(self) -> None:
        """Raise now when the display is missing (none set, or no X server there): an agent run
        calls this before the model, so a missing display is one clear error, not one per step."""
        resolve_display(self.config.display)

    # -- toolkit ------------------------------------------------------------------------------
    def tools(self, *, close_with_run: bool = False) -> list[Tool]:
        """The ``computer_use`` tool (one tool; GUI calls run one at a time). With
        ``close_with_run`` each run that used it closes this controller at its end (for a
        controller the tools created); otherwise it stays open for its owner."""

        def computer_use(context: ToolContext, action: str, **arguments: Any) -> ToolOutput:
            if close_with_run:  # the run closes what its tools put in the state
                context.state.setdefault(f"omni_agent.tools.desktop:{id(self)}", self)
            return self.run(action, **arguments)

        schema = {"name": "computer_use", "description": _description(self), "parameters": computer_use_parameters()}
        return [
            Tool.from_schema(
                schema,
                computer_use,
                parallel_safe=False,
                kind="desktop",
                reads_untrusted=self.config.screenshot_after_action,
                timeout=self.config.max_wait_s + 30.0,
                preflight=self.check_display,
            )
        ]

    async def stop(self) -> None:
        self.close()

    # -- execution ----------------------------------------------------------------------------
    def run(self, action: str, **args: Any) -> ToolOutput:
        """Execute one action. Never raises: failures come back as error outputs for the model."""
        try:
            return self._run(action, args)
        except ToolExecutionError as exc:
            return ToolOutput.error(exc.message)
        except MissingDependencyError as exc:
            return ToolOutput.error(f"desktop unavailable: {exc.message}")
        except Exception as exc:  # pyautogui fail-safe, Xlib errors: report, never a traceback
            if type(exc).__name__ == "FailSafeException":
                return ToolOutput.error(
                    "stopped by the fail-safe: the mouse is in a screen corner, which means a person "
                    "asked the agent to stop. Do not continue without the user."
                )
            display = self.config.display or os.environ.get("DISPLAY", "")
            gone = bool(display) and not display_is_reachable(display)
            if gone:
                with _INPUT_LOCK:
                    _drop_connection(display)  # reconnect if a display comes back on this number
                self.close()
            if isinstance(exc, DisplayError):
                return ToolOutput.error(f"desktop unavailable: {exc.message}")
            if gone:
                return ToolOutput.error(f"desktop unavailable: X display {display} is no longer running")
            return ToolOutput.error(f"action={action} failed: {type(exc).__name__}: {exc}")

    def _run(self, action: str, args: dict[str, Any]) -> ToolOutput:
        if action not in ACTIONS:
            raise ToolExecutionError(f"unknown action {action!r}; one of: {', '.join(ACTIONS)}")
        return getattr(self, f"do_{action}")(args)

    # -- the actions (one method each; ``args`` as the model sent them) ----------------------
    def do_terminate(self, args: dict[str, Any]) -> ToolOutput:
        status = args.get("status")
        if status not in ("success", "failure"):
            raise ToolExecutionError(f"action=terminate needs 'status': 'success' or 'failure', got {status!r}")
        return ToolOutput(text=f"terminated: {status}", finish=True, answer=status, data={"status": status})

    def do_answer(self, args: dict[str, Any]) -> ToolOutput:
        text = _require(args, "text", "answer", "the answer text")
        return ToolOutput(text=str(text), finish=True, answer=str(text))

    def do_wait(self, args: dict[str, Any]) -> ToolOutput:
        seconds = _number(_require(args, "time", "wait", "seconds to wait"), "time", "wait")
        if not 0 <= seconds <= self.config.max_wait_s:
            raise ToolExecutionError(f"action=wait: 'time' must be 0..{self.config.max_wait_s:g} seconds")
        time.sleep(seconds)
        return self._result(f"waited {seconds:g} s", {"action": "wait"}, settle=False)

    def do_key(self, args: dict[str, Any]) -> ToolOutput:
        display = self.display
        keys = _require(args, "keys", "key", 'a list of key names, e.g. ["ctrl", "c"]')
        if isinstance(keys, str):
            keys = [k for k in re.split(r"\s*\+\s*", keys) if k] if "+" in keys.strip("+") else [keys]
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise ToolExecutionError(f"action=key: 'keys' must be a list of key names, got {keys!r}")
        with _INPUT_LOCK:
            pg = _pyautogui_for(display)
            pg.FAILSAFE = self.config.failsafe
            names = _check_keys(keys, sys.modules["pyautogui._pyautogui_x11"].keyboardMapping)
            pg.hotkey(*names)
        return self._result(f"pressed {'+'.join(names)}", {"action": "key", "keys": names})

    def do_type(self, args: dict[str, Any]) -> ToolOutput:
        display = self.display
        text = args.get("text")
        if not isinstance(text, str) or text == "":
            raise ToolExecutionError("action=type needs 'text': the text to type (a non-empty string)")
        with _INPUT_LOCK:
            self._type(text, display)
        return self._result(f"typed {len(text)} characters", {"action": "type", "chars": len(text)})

    def do_mouse_move(self, args: dict[str, Any]) -> ToolOutput:
        return self._pointer("mouse_move", args, lambda pg, at: pg.moveTo(*at))

    def do_left_click(self, args: dict[str, Any]) -> ToolOutput:
        return self._pointer("left_click", args, lambda pg, at: pg.click(*(at or ()), button="left"))

    def do_right_click(self, args: dict[str, Any]) -> ToolOutput:
        return self._pointer("right_click", args, lambda pg, at: pg.click(*(at or ()), button="right"))

    def do_middle_click(self, args: dict[str, Any]) -> ToolOutput:
        return self._pointer("middle_click", args, lambda pg, at: pg.click(*(at or ()), button="middle"))

    def do_double_click(self, args: dict[str, Any]) -> ToolOutput:
        return self._pointer(
            "double_click", args, lambda pg, at: pg.click(*(at or ()), clicks=2, interval=0.05, button="left")
        )

    def do_triple_click(self, args: dict[str, Any]) -> ToolOutput:
        return self._pointer(
            "triple_click", args, lambda pg, at: pg.click(*(at or ()), clicks=3, interval=0.05, button="left")
        )

    def do_left_click_drag(self, args: dict[str, Any]) -> ToolOutput:
        self.display  # noqa: B018 - a missing display is the first thing to report
        if args.get("coordinate") is None:
            raise ToolExecutionError(f"action=left_click_drag needs 'coordinate': [x, y]; {self.describe_space()}")
        start = None
        if args.get("start_coordinate") is not None:
            start = self.to_screen(_coordinate(args["start_coordinate"], "start_coordinate", "left_click_drag"), "left_click_drag")

        def drag(pg: Any, at: tuple[int, int]) -> None:
            self._drag(pg, self._avoid_failsafe(start, pg) if start else None, at)

        extra = {"start": list(start)} if start is not None else {}
        return self._pointer("left_click_drag", args, drag, extra=extra)

    def do_scroll(self, args: dict[str, Any]) -> ToolOutput:
        self.display  # noqa: B018 - a missing display is the first thing to report
        clicks = self._wheel_clicks("scroll", args)
        return self._pointer("scroll", args, lambda pg, at: pg.scroll(clicks, *(at or ())), clicks=clicks)

    def do_hscroll(self, args: dict[str, Any]) -> ToolOutput:
        self.display  # noqa: B018 - a missing display is the first thing to report
        clicks = self._wheel_clicks("hscroll", args)
        return self._pointer("hscroll", args, lambda pg, at: pg.hscroll(clicks, *(at or ())), clicks=clicks)

    # -- shared by the pointer actions ---------------------------------------------------------
    def _wheel_clicks(self, action: str, args: dict[str, Any]) -> int:
        pixels = _number(_require(args, "pixels", action, "wheel amount, + up/right, - down/left"), "pixels", action)
        if pixels == 0:
            raise ToolExecutionError(f"action={action}: 'pixels' must not be 0")
        limit = self.config.max_scroll
        return max(-limit, min(limit, round(pixels) or (1 if pixels > 0 else -1)))

    def _pointer(
        self,
        action: str,
        args: dict[str, Any],
        perform: Callable[[Any, Any], None],
        *,
        clicks: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ToolOutput:
        """Map the coordinate, run ``perform(pyautogui, screen point or None)`` under the input
        lock, and report where the pointer ended up."""
        display = self.display
        coordinate = args.get("coordinate")
        if action in ("mouse_move", "left_click_drag") and coordinate is None:
            raise ToolExecutionError(f"action={action} needs 'coordinate': [x, y]; {self.describe_space()}")
        target = self.to_screen(_coordinate(coordinate, "coordinate", action), action) if coordinate is not None else None
        with _INPUT_LOCK:
            pg = _pyautogui_for(display)
            pg.FAILSAFE = self.config.failsafe
            if target is not None:
                target = self._avoid_failsafe(target, pg)
            perform(pg, target)
            point = tuple(pg.position())
        data: dict[str, Any] = {"action": action, "screen": list(point)}
        where = f" at [{coordinate[0]:g}, {coordinate[1]:g}]" if isinstance(coordinate, (list, tuple)) else ""
        if clicks is not None:
            data["clicks"] = clicks
            return self._result(f"{action} {clicks:+d}{where}", data)
        data.update(extra or {})
        return self._result(f"{action}{where} -> screen ({point[0]}, {point[1]})", data)

    def _type(self, text: str, display: str) -> None:
        if self.config.typing == "clipboard":
            _run_x_tool(["xclip", "-selection", "clipboard", "-i"], display, input_text=text)
            pg = _pyautogui_for(display)
            pg.hotkey("ctrl", "v")
            return
        _pyautogui_for(display)  # checks (or reopens) the connection the spare-key typer uses
        for run in _text_runs(text):
            if run.isascii():
                # xdotool types ASCII from the keymap itself (pyautogui turns '<' into '>').
                _run_x_tool(["xdotool", "type", "--delay", "2", "--", run], display)
            else:
                if display not in _TYPERS:
                    _TYPERS[display] = _SpareKeyTyper(_CONNECTIONS[display])
                _TYPERS[display].type_char(run)

    def _drag(self, pg: Any, start: tuple[int, int] | None, end: tuple[int, int]) -> None:
        if start is not None:
            pg.moveTo(*start)
        x0, y0 = pg.position()
        pg.mouseDown(button="left")
        try:
            steps = 10
            for i in range(1, steps + 1):
                pg.moveTo(round(x0 + (end[0] - x0) * i / steps), round(y0 + (end[1] - y0) * i / steps))
                time.sleep(self.config.drag_duration_s / steps)
        finally:
            pg.mouseUp(button="left")

    def _avoid_failsafe(self, point: tuple[int, int], pg: Any) -> tuple[int, int]:
        # The fail-safe corners are for the human; an agent's own click on a corner would otherwise
        # stop every later action. Move it one pixel inwards.
        if point not in pg.FAILSAFE_POINTS:
            return point
        width, height = pg.size()
        x, y = point
        return (x + 1 if x == 0 else x - 1 if x >= width - 1 else x, y + 1 if y == 0 else y - 1 if y >= height - 1 else y)

    def _result(self, text: str, data: dict[str, Any], *, settle: bool = True) -> ToolOutput:
        if not self.config.screenshot_after_action:
            return ToolOutput(text=text, data=data)
        if settle and self.config.settle_s:
            time.sleep(self.config.settle_s)
        image, info = self.screenshot()
        data["screenshot"] = info.model_dump()
        return ToolOutput(text=text, images=[image], data=data, untrusted=True)


# -- the tool ----------------------------------------------------------------------------------


def computer_use_parameters() -> dict[str, Any]:
    """The JSON Schema of ``computer_use`` (Qwen3-VL's action space, plus ``start_coordinate``)."""
    return {
        "type": "object",
        "properties": {
            "action": {
                "type": "string",
                "enum": list(ACTIONS),
                "description": (
                    "The action to perform:\n"
                    "* `key`: press the keys in `keys` in order, release them in reverse (a hotkey).\n"
                    "* `type`: type the string `text`.\n"
                    "* `mouse_move`: move the cursor to `coordinate`.\n"
                    "* `left_click`: click the left button at `coordinate` (or where the cursor is).\n"
                    "* `left_click_drag`: press at `start_coordinate` (default: the cursor), drag to `coordinate`, release.\n"
                    "* `right_click` / `middle_click`: click that button at `coordinate`.\n"
                    "* `double_click` / `triple_click`: click the left button 2 / 3 times at `coordinate`.\n"
                    "* `scroll`: turn the wheel by `pixels` notches (+ up, - down), at `coordinate` if given.\n"
                    "* `hscroll`: scroll horizontally by `pixels` notches (+ right, - left).\n"
                    "* `wait`: wait `time` seconds for the screen to change.\n"
                    "* `terminate`: end the task with `status` success or failure.\n"
                    "* `answer`: end the task answering with `text`."
                ),
            },
            "keys": {"type": "array", "items": {"type": "string"}, "description": "Required only by action=key."},
            "text": {"type": "string", "description": "Required only by action=type and action=answer."},
            "coordinate": {
                "type": "array",
                "items": {"type": "number"},
                "minItems": 2,
                "maxItems": 2,
                "description": "(x, y): where to act. Required by mouse_move and left_click_drag.",
            },
            "start_coordinate": {
                "type": "array",
                "items": {"type": "number"},
                "minItems": 2,
                "maxItems": 2,
                "description": "(x, y): where a left_click_drag starts (default: the current cursor position).",
            },
            "pixels": {"type": "number", "description": "Required only by action=scroll and action=hscroll."},
            "time": {"type": "number", "description": "Seconds to wait. Required only by action=wait."},
            "status": {
                "type": "string",
                "enum": ["success", "failure"],
                "description": "Required only by action=terminate.",
            },
        },
        "required": ["action"],
    }


def _description(controller: DesktopController) -> str:
    spec = controller.config.spec
    if spec.coordinate_space == "relative_1000":
        screen = f"* The screen's resolution is {spec.grid}x{spec.grid}: {controller.describe_space()}."
    else:
        screen = f"* Coordinates are screenshot pixels: {controller.describe_space()}."
    return (
        "Use a mouse and keyboard to interact with a computer, and take screenshots.\n"
        "* This is an interface to a desktop GUI. You do not have access to a terminal.\n"
        "* Some applications take time to start or respond; wait and look at the next screenshot.\n"
        f"{screen}\n"
        "* Click buttons, links and icons in their center, not on their edges."
    )


def desktop_tools(config: DesktopConfig | None = None, *, controller: DesktopController | None = None) -> list[Tool]:
    """The ``computer_use`` tool on ``config.display`` (one tool; GUI calls run one at a time).

    Pass ``controller`` to share one display connection with an observer or your own code: it
    stays open after runs (close it yourself). A controller these tools create is closed when
    each run ends. A run whose display is missing fails at its start, before the model is called.
    """
    owned = controller is None
    if controller is None:
        controller = DesktopController(config)
    elif config is not None and config != controller.config:
        raise ValueError("pass either config or controller, not two different configs")
    return controller.tools(close_with_run=owned)


DesktopKit = DesktopController
"""The desktop toolkit under its toolkit name (same class)."""
