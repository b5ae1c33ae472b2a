"""The user's own clicks and keys on the live screen, as calls to the run's desktop tool.

The page sends points as fractions of the frame; they become the model's coordinates (so the
desktop tool maps them exactly as it maps the model's clicks, through :mod:`omni_agent.coords`)
and a ``computer_use`` call. Typing and keys go to ``computer_use`` too, or to the browser tools
(``browser_type`` / ``browser_press``) when the run has no desktop tool.
"""

from __future__ import annotations

from typing import Union

from ..coords import ModelImageSpec, image_to_model
from ..exceptions import UserError
from ..messages import ToolCall
from ..registry import ToolRegistry
from .protocol import KeyMessage, PointerMessage, TypeMessage

__all__ = ["TakeOverMessage", "takeover_call", "target_fractions"]

TakeOverMessage = Union[PointerMessage, TypeMessage, KeyMessage]

DESKTOP_TOOL = "computer_use"
_POINTER_ACTIONS = {"click": "left_click", "double_click": "double_click", "right_click": "right_click", "drag": "left_click_drag"}


def _model_point(fx: float, fy: float, size: tuple[int, int], spec: ModelImageSpec) -> list[int]:
    w, h = size
    mx, my = image_to_model(fx * w, fy * h, image_size=size, spec=spec)
    return [round(mx), round(my)]


def takeover_call(message: TakeOverMessage, registry: ToolRegistry, *, screen_size: tuple[int, int], spec: ModelImageSpec) -> ToolCall:
    """The tool call that does what the user did; :class:`UserError` when no tool can."""
    names = set(registry.names)
    if isinstance(message, PointerMessage):
        if DESKTOP_TOOL not in names:
            raise UserError("clicking on the screen needs the desktop toolset (computer_use)")
        args: dict[str, object] = {"action": _POINTER_ACTIONS[message.type], "coordinate": _model_point(message.fx, message.fy, screen_size, spec)}
        if message.type == "drag":
            if message.fx2 is None or message.fy2 is None:
                raise UserError("a drag needs its end point (fx2, fy2)")
            args["start_coordinate"] = args["coordinate"]
            args["coordinate"] = _model_point(message.fx2, message.fy2, screen_size, spec)
        return ToolCall(name=DESKTOP_TOOL, arguments=args)
    if isinstance(message, TypeMessage):
        if DESKTOP_TOOL in names:
            return ToolCall(name=DESKTOP_TOOL, arguments={"action": "type", "text": message.text})
        if "browser_type" in names:
            return ToolCall(name="browser_type", arguments={"text": message.text})
        raise UserError("typing needs the desktop or browser toolset")
    if DESKTOP_TOOL in names:
        return ToolCall(name=DESKTOP_TOOL, arguments={"action": "key", "keys": list(message.keys)})
    if "browser_press" in names:
        return ToolCall(name="browser_press", arguments={"key": "+".join(message.keys)})
    raise UserError("pressing keys needs the desktop or browser toolset")


def target_fractions(call: ToolCall, *, screen_size: tuple[int, int], spec: ModelImageSpec) -> dict[str, float] | None:
    """Where a model's desktop call acts, as fractions of the screen (for the page's marker)."""
    if call.name != DESKTOP_TOOL:
        return None
    from ..coords import model_to_image

    def frac(point: object) -> tuple[float, float] | None:
        if not (isinstance(point, (list, tuple)) and len(point) == 2 and all(isinstance(v, (int, float)) for v in point)):
            return None
        px, py = model_to_image(float(point[0]), float(point[1]), image_size=screen_size, spec=spec)
        return px / screen_size[0], py / screen_size[1]

    end = frac(call.arguments.get("coordinate"))
    if end is None:
        return None
    out = {"fx": end[0], "fy": end[1]}
    start = frac(call.arguments.get("start_coordinate"))
    if start is not None:
        out.update(fx0=start[0], fy0=start[1])
    return out
