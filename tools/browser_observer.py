"""A screenshot of the browser's current tab after each step, for the agent loop.

    session = BrowserSession(BrowserConfig(workspace="ws"))
    agent = Agent(model, tools=browser_tools(session=session),
                  observers=[BrowserScreenshotObserver(session)])

(or ``load_toolsets_with_observers("browser", observe="browser")`` from
:mod:`omni_agent.toolsets`; on the command line ``omni-agent run -t browser --observe browser``).

``BrowserScreenshotObserver(session)`` follows the Observer protocol of
:mod:`omni_agent.observers`: the loop waits ``settle_s`` after a step's tools ran (pages redraw,
animations end) and then calls :meth:`observe`; the parts go into the next user turn. Nothing is
observed before the browser has been used (observing never launches Chromium), and a failed
capture becomes a short text part instead of an exception.

Needs what :mod:`omni_agent.tools.browser_session` needs (the ``browser`` extra, Chromium).
"""

from __future__ import annotations

from omni_agent.exceptions import ToolExecutionError
from omni_agent.messages import ContentPart, TextPart
from omni_agent.tool import ToolContext

from .browser_session import BrowserSession

__all__ = ["BrowserScreenshotObserver"]


class BrowserScreenshotObserver:
    """Adds a JPEG screenshot of the active tab (and its URL) to the next user turn."""

    untrusted = True
    """What a screen shows is untrusted (a page may ask the agent to run commands): once an
    observation is added, the loop's policy holds shell / file-writing / JavaScript calls."""

    def __init__(self, session: BrowserSession, *, settle_s: float = 0.3, with_caption: bool = True) -> None:
        if settle_s < 0:
            raise ValueError(f"settle_s must be >= 0, got {settle_s}")
        self.session = session
        self.settle_s = settle_s
        """Seconds the loop waits before observing (read by the loop, not slept here)."""
        self.with_caption = with_caption

    async def observe(self, context: ToolContext) -> list[ContentPart]:
        if not self.session.running:
            if self.session.stopped_unexpectedly:  # crashed: say so rather than go silent
                return [TextPart(text="(the browser is not running; the next browser action relaunches it)")]
            return []
        try:
            page = await self.session.page()
            image = await self.session.screenshot(page)
        except ToolExecutionError as exc:
            return [TextPart(text=f"(browser screenshot unavailable: {exc.message})")]
        parts: list[ContentPart] = []
        if self.with_caption:
            parts.append(TextPart(text=f"Browser tab {self.session.active_index()}: {page.url}"))
        parts.append(image)
        return parts

    def __repr__(self) -> str:
        return f"BrowserScreenshotObserver(settle_s={self.settle_s})"
