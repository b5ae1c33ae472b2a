"""Screenshot observer for desktop agents: the model sees the screen after every step.

    capture = ScreenCapture(display=":99")
    agent = Agent(model, tools=desktop_tools(DesktopConfig(display=":99", screenshot_after_action=False)),
                  observers=[DesktopScreenshotObserver(capture, QWEN3_SPEC)])

(or ``load_toolsets_with_observers("desktop", observe="desktop")`` from
:mod:`omni_agent.toolsets`, which shares the desktop tool's display and model spec; on the
command line ``omni-agent run -t desktop --observe desktop`` with $DISPLAY set).
The loop waits ``settle_s`` before calling :meth:`observe` (so windows can redraw); the
observer itself only grabs. Needs the ``desktop`` extra (mss) and an X display.
"""

from __future__ import annotations

import asyncio

from omni_agent.coords import QWEN3_SPEC, ModelImageSpec, ResizeInfo
from omni_agent.messages import ContentPart
from omni_agent.screen import ScreenCapture
from omni_agent.tool import ToolContext

__all__ = ["DesktopScreenshotObserver"]


class DesktopScreenshotObserver:
    """Implements the Observer protocol: one model-ready screenshot per observation."""

    untrusted = True
    """What a screen shows is untrusted (a page may ask the agent to run commands): once an
    observation is added, the loop's policy holds shell / file-writing / JavaScript calls."""

    def __init__(self, capture: ScreenCapture, spec: ModelImageSpec = QWEN3_SPEC, settle_s: float = 0.2) -> None:
        if settle_s < 0:
            raise ValueError(f"settle_s must be >= 0, got {settle_s}")
        self.capture = capture
        self.spec = spec
        self.settle_s = settle_s
        self.last_info: ResizeInfo | None = None
        """Sizes and token count of the latest screenshot (for logs and budgets)."""

    async def observe(self, context: ToolContext) -> list[ContentPart]:
        # mss blocks for a few ms; off the event loop so streaming and timeouts keep running.
        image, info = await asyncio.to_thread(self.capture.grab_for_model, self.spec)
        self.last_info = info
        return [image]

    def __repr__(self) -> str:
        return f"DesktopScreenshotObserver({self.capture!r}, {self.spec.family}, settle_s={self.settle_s})"
