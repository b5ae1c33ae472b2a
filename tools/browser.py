"""Browser tools: Playwright driving Chromium, as a small set of focused tools.

``browser_tools(config)`` returns the tools of a :class:`BrowserKit` (a
:class:`~omni_agent.toolkit.Toolkit`: one method per action), which share one
:class:`BrowserSession` (launched on first use): ``browser_goto``, ``browser_navigate`` (back / forward / reload), ``browser_click``,
``browser_fill``, ``browser_type``, ``browser_press``, ``browser_scroll``, ``browser_select``,
``browser_hover``, ``browser_wait``, ``browser_tabs``, ``browser_screenshot``, ``browser_read``
(page text or accessibility snapshot), ``browser_upload``, ``browser_download``, and with
``allow_javascript=True`` ``browser_eval`` (kind "javascript", so the policy gates it).

Why several tools rather than one ``browser`` tool with an ``action`` enum: each tool has a small
schema with only the arguments its action uses, so the validator can name exactly what is wrong
and models do not mix arguments of different actions; the names match the Playwright MCP tools
models have seen most; and JavaScript evaluation can carry its own tool kind for the policy.

Targets: an element is named by ``selector`` (CSS or any Playwright selector), ``text`` (visible
text), or ``role`` + ``name`` (ARIA role and accessible name, as the accessibility snapshot shows
them); clicks, hovers and scrolls also take ``x`` / ``y`` in the model's coordinate space (the
Qwen3 0..1000 grid over the viewport by default), mapped by :mod:`omni_agent.coords`.

Everything a page says is untrusted (titles, text, screenshots): every output is marked
``untrusted=True`` so the policy holds shell / file-writing / JavaScript calls afterwards.

Needs: apt ``chromium`` (or Playwright's own browser) and the ``browser`` extra (playwright).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from omni_agent.coords import QWEN3_SPEC, QWEN25_SPEC, model_to_image
from omni_agent.exceptions import ToolExecutionError
from omni_agent.tool import LOOP_BOUND_STATE, Tool, ToolContext, ToolOutput, tool
from omni_agent.toolkit import Toolkit

from .browser_session import BrowserConfig, BrowserSession, TabInfo, find_chromium

if TYPE_CHECKING:  # pragma: no cover
    from playwright.async_api import Locator, Page

__all__ = [
    "BrowserConfig",
    "BrowserKit",
    "BrowserSession",
    "browser_tools",
    "find_chromium",
    "normalize_key",
    "normalize_url",
    "viewport_point",
]

_KEY_ALIASES = {
    "ctrl": "Control", "control": "Control", "cmd": "Meta", "command": "Meta", "meta": "Meta",
    "win": "Meta", "super": "Meta", "alt": "Alt", "option": "Alt", "shift": "Shift",
    "enter": "Enter", "return": "Enter", "esc": "Escape", "escape": "Escape", "tab": "Tab",
    "space": "Space", "backspace": "Backspace", "delete": "Delete", "del": "Delete",
    "up": "ArrowUp", "down": "ArrowDown", "left": "ArrowLeft", "right": "ArrowRight",
    "arrowup": "ArrowUp", "arrowdown": "ArrowDown", "arrowleft": "ArrowLeft", "arrowright": "ArrowRight",
    "pageup": "PageUp", "pagedown": "PageDown", "pgup": "PageUp", "pgdn": "PageDown",
    "home": "Home", "end": "End", "insert": "Insert",
}


def normalize_key(combo: str) -> str:
    """Model-style key names ("ctrl+a", "enter", "Page_Down") -> Playwright's ("Control+a")."""
    parts = [p for p in re.split(r"\s*\+\s*", combo.strip()) if p]
    if not parts:
        raise ToolExecutionError("key is empty: use a name like Enter, Tab, ArrowDown or Control+a")
    out = []
    for part in parts:
        low = part.lower().replace("_", "")
        if low in _KEY_ALIASES:
            out.append(_KEY_ALIASES[low])
        elif re.fullmatch(r"f([1-9]|1[0-2])", low):
            out.append(low.upper())
        else:
            out.append(part)
    return "+".join(out)


def normalize_url(url: str) -> str:
    """Add the scheme a model left out ("example.com" -> "https://example.com")."""
    url = url.strip()
    if not url:
        raise ToolExecutionError("url is empty")
    if re.match(r"^(about|data|file|blob):", url, re.IGNORECASE) or "://" in url:
        return url
    host = re.split(r"[/:?#]", url, maxsplit=1)[0].lower()
    local = host in ("localhost", "") or re.fullmatch(r"[\d.]+", host) is not None
    return ("http://" if local else "https://") + url


def browser_tools(
    config: BrowserConfig | None = None, *, session: BrowserSession | None = None, close_with_run: bool | None = None
) -> list[Tool]:
    """The browser tools of a :class:`BrowserKit` sharing one session. Pass ``session`` to share it
    with a :class:`~omni_agent.tools.browser_observer.BrowserScreenshotObserver` or your own code.

    A session you pass in is yours: ``await agent.arun()`` never closes it, so you can read the
    page afterwards (close it yourself, e.g. ``async with BrowserSession() as session``); a
    blocking ``agent.run()`` has its own event loop, which the browser cannot outlive. A session
    these tools create is closed when each run ends (``BrowserConfig.close_after_run``).
    ``close_with_run`` overrides either default.
    """
    return BrowserKit(config, session=session, close_with_run=close_with_run).tools()


def viewport_point(config: BrowserConfig, x: float, y: float) -> tuple[float, float]:
    """Model coordinates (``config.coordinate_space``) -> viewport CSS pixels, clamped inside
    the viewport. Screenshots are taken at CSS-pixel scale, so image pixels = viewport pixels."""
    w, h = config.viewport
    px, py = model_to_image(x, y, image_size=(w, h), spec=_spec(config))
    return min(px, w - 1), min(py, h - 1)


def _spec(config: BrowserConfig) -> Any:
    return QWEN3_SPEC if config.coordinate_space == "relative_1000" else QWEN25_SPEC


_POINTING_TOOLS = frozenset({"browser_click", "browser_scroll", "browser_hover"})
"""Tools that take x / y: their descriptions name the coordinate space."""


# Seconds a tool may take in total: its Playwright deadline, a relaunch, and slack.
def _tool_timeout(cfg: BrowserConfig) -> float:
    return max(cfg.action_timeout_s, cfg.navigation_timeout_s) + cfg.launch_timeout_s + 15


class BrowserKit(Toolkit):
    """The browser tools as one :class:`~omni_agent.toolkit.Toolkit`: one method per action,
    all acting on one :class:`BrowserSession` (launched on first use).

    A session the kit creates is the kit's: closed by :meth:`stop` and, when
    ``close_after_run``, at the end of each run. A session passed in is the caller's: neither
    closes it (``close_with_run`` overrides the run's default, see :func:`browser_tools`).
    """

    def __init__(
        self,
        config: BrowserConfig | None = None,
        *,
        session: BrowserSession | None = None,
        close_with_run: bool | None = None,
    ) -> None:
        self.owns_session = session is None
        if session is None:
            session = BrowserSession(config or BrowserConfig())
        elif config is not None and config is not session.config:
            raise ToolExecutionError("pass either config or a session (whose config is used), not both")
        self.session = session
        owned_default = self.owns_session and session.config.close_after_run
        self.close_with_run = owned_default if close_with_run is None else close_with_run
        self.cfg = session.config
        self.spec = _spec(self.cfg)

    # -- toolkit hooks ------------------------------------------------------------------------
    def tool_defaults(self) -> dict[str, Any]:
        return dict(
            timeout=_tool_timeout(self.cfg),
            parallel_safe=False,
            kind="browser",
            reads_untrusted=True,
            preflight=self.session.check_can_start,  # no Chromium / no display: one clear error at run start
        )

    def include_tool(self, name: str) -> bool:
        return name != "browser_eval" or self.cfg.allow_javascript

    def describe_tool(self, tool: Tool) -> Tool:
        if tool.name in _POINTING_TOOLS:
            tool.description += f" Coordinates: {self.coordinate_help()}."
        return tool

    async def stop(self) -> None:
        """Close the session the kit created (one passed in stays the caller's)."""
        if self.owns_session:
            await self.session.close()

    # -- helpers ------------------------------------------------------------------------------
    def point(self, x: float, y: float) -> tuple[float, float]:
        """A model point -> viewport pixel; refuses points outside the model's space, like the
        desktop tool (x=1500 on the 0..1000 grid means the model used another space: clicking
        the clamped edge point would act somewhere it never meant)."""
        max_x, max_y = self.spec.model_extent(self.cfg.viewport)
        if not (0 <= x <= max_x and 0 <= y <= max_y):
            raise ToolExecutionError(f"point ({x:g}, {y:g}) is outside the page: {self.coordinate_help()}")
        return viewport_point(self.cfg, x, y)

    def coordinate_help(self) -> str:
        w, h = self.cfg.viewport
        if self.cfg.coordinate_space == "relative_1000":
            return "x and y on a 0..1000 grid over the visible page (0,0 top-left, 1000,1000 bottom-right)"
        rw, rh = self.spec.resized_size((w, h))
        return f"x and y in pixels of the screenshot as you see it ({rw}x{rh})"

    @staticmethod
    def describe(*, selector: str | None, text: str | None, role: str | None, name: str | None) -> str:
        if selector:
            return f"selector {selector!r}"
        if text:
            return f"text {text!r}"
        if role:
            return f"{role} {name!r}" if name else f"role {role!r}"
        return "the element"

    @staticmethod
    def locator(
        page: "Page", *, selector: str | None, text: str | None, role: str | None, name: str | None
    ) -> tuple["Locator", str]:
        """The element a call names, and how to describe it in messages."""
        given = [k for k, v in (("selector", selector), ("text", text), ("role", role)) if v]
        if name and not role:
            raise ToolExecutionError("name needs role (e.g. role='button', name='Submit')")
        if len(given) > 1:
            raise ToolExecutionError(f"give one way to find the element, not {' and '.join(given)}")
        if selector:
            return page.locator(selector), f"selector {selector!r}"
        if text:
            return page.get_by_text(text), f"text {text!r}"
        if role:
            loc = page.get_by_role(role, name=name) if name else page.get_by_role(role)  # type: ignore[arg-type]
            return loc, f"{role} {name!r}" if name else f"role {role!r}"
        raise ToolExecutionError("name the element: selector (CSS), text, or role (+ name)")

    async def run(
        self,
        ctx: ToolContext,
        action: Callable[["Page"], Awaitable[str]],
        *,
        what: str,
        screenshot: bool | None = None,
        timeout_s: float | None = None,
    ) -> ToolOutput:
        """Run one action on the active tab and build the result: summary, tab line, notes and
        (when asked or configured) a fresh screenshot. Failures become error outputs."""
        s = self.bind(ctx)
        try:
            summary = await s.run(action, what=what, timeout_s=timeout_s)
        except ToolExecutionError as exc:
            notes = s.take_notes()
            return ToolOutput(text="\n".join([exc.message, *notes]), is_error=True, untrusted=True)
        lines = [summary]
        page = await s.page()
        lines.append(await self.tab_line(page))
        lines.extend(s.take_notes())
        want = self.cfg.screenshot_after_action if screenshot is None else screenshot
        images = []
        if want:
            try:
                images.append(await s.screenshot(page))
            except ToolExecutionError as exc:
                lines.append(f"(no screenshot: {exc.message})")
        return ToolOutput(text="\n".join(x for x in lines if x), images=images, untrusted=True)

    def bind(self, ctx: ToolContext) -> BrowserSession:
        """Point the session at this run's workspace; let the run close it at its end (when the
        session is not the caller's)."""
        s = self.session
        s.workspace = self.cfg.workspace or ctx.workspace
        if self.close_with_run:
            ctx.state.setdefault(f"omni_agent.tools.browser:{id(s)}", s)
        else:  # the caller's: left open, unless a blocking Agent.run()'s event loop ends under it
            s.closed_with_run = False
            ctx.state.setdefault(f"{LOOP_BOUND_STATE}browser:{id(s)}", s)
        return s

    async def tab_line(self, page: "Page") -> str:
        try:
            title = await asyncio.wait_for(page.title(), 2)
        except Exception:  # noqa: BLE001 - navigating: no title yet
            title = ""
        return f"Tab {self.session.active_index()}: {_short(title, 100)!r} {page.url}"

    def workspace_file(self, path: str) -> Path:
        root = (self.session.workspace or Path.cwd()).resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root):
            raise ToolExecutionError(f"{path!r} is outside the workspace {root}")
        if not target.is_file():
            raise ToolExecutionError(f"no file {path!r} in the workspace {root}")
        return target

    def cap(self, text: str, limit: int | None, hint: str) -> str:
        limit = min(limit or self.cfg.text_cap, self.cfg.text_cap)
        if len(text) <= limit:
            return text
        return text[:limit] + f"\n[... cut {len(text) - limit} of {len(text)} characters; {hint}]"

    # -- the tools (one method per action) ------------------------------------------------
    @tool(name="browser_goto")
    async def goto(self, ctx: ToolContext, url: str, screenshot: bool | None = None) -> ToolOutput:
        """Open a URL in the current tab and wait for it to load.

        Args:
            url: The address, e.g. https://example.com/page.
            screenshot: Also return a screenshot of the page.
        """
        full = normalize_url(url)
        reason = self.session.guard.check(full)
        if reason:
            return ToolOutput(text=f"Not opening {full}: {reason}.", is_error=True, untrusted=True)

        async def act(page: "Page") -> str:
            response = await self.session.navigate(page, lambda: page.goto(full, timeout=self.cfg.navigation_timeout_s * 1000))
            status = f" (HTTP {response.status})" if response is not None else ""
            return f"Opened {full}{status}."

        return await self.run(ctx, act, what=f"opening {full}", screenshot=screenshot, timeout_s=self.cfg.navigation_timeout_s)

    @tool(name="browser_navigate")
    async def navigate(
        self,
        ctx: ToolContext, action: Literal["back", "forward", "reload"], screenshot: bool | None = None
    ) -> ToolOutput:
        """Go back or forward in the current tab's history, or reload the page.

        Args:
            action: back, forward or reload.
            screenshot: Also return a screenshot of the page.
        """

        async def act(page: "Page") -> str:
            timeout = self.cfg.navigation_timeout_s * 1000
            if action == "reload":
                await self.session.navigate(page, lambda: page.reload(timeout=timeout))
                return "Reloaded."
            move = page.go_back if action == "back" else page.go_forward
            before = page.url
            # None means no history entry, or a same-document move: the URL tells them apart.
            if await self.session.navigate(page, lambda: move(timeout=timeout)) is None and page.url == before:
                raise ToolExecutionError(f"there is no page to go {action} to in this tab's history")
            return "Went back." if action == "back" else "Went forward."

        return await self.run(ctx, act, what=f"going {action}", screenshot=screenshot, timeout_s=self.cfg.navigation_timeout_s)

    @tool(name="browser_click")
    async def click(
        self,
        ctx: ToolContext,
        selector: str | None = None,
        text: str | None = None,
        role: str | None = None,
        name: str | None = None,
        x: float | None = None,
        y: float | None = None,
        button: Literal["left", "right", "middle"] = "left",
        double: bool = False,
        screenshot: bool | None = None,
    ) -> ToolOutput:
        """Click an element (by selector, text, or role and name) or a point (x and y).

        Args:
            selector: CSS selector of the element, e.g. #submit or form button.
            text: Visible text of the element, e.g. Sign in.
            role: ARIA role, e.g. button, link, checkbox, textbox.
            name: Accessible name to go with role, e.g. Submit.
            x: Horizontal position (instead of an element); see the tool description.
            y: Vertical position (instead of an element).
            button: Mouse button.
            double: Double-click.
            screenshot: Also return a screenshot after the click.
        """
        count = 2 if double else 1

        async def act(page: "Page") -> str:
            if x is not None or y is not None:
                if x is None or y is None or selector or text or role:
                    raise ToolExecutionError("a point click needs both x and y and no element arguments")
                px, py = self.point(x, y)
                await page.mouse.click(px, py, button=button, click_count=count)
                return f"Clicked at ({x:g}, {y:g}) = viewport pixel ({px:.0f}, {py:.0f})."
            loc, desc = self.locator(page, selector=selector, text=text, role=role, name=name)
            if button == "left" and await loc.evaluate(_OPENS_NEW_TAB_JS):
                # target=_blank: wait for the tab so the result can name it.
                async with page.expect_popup() as popup:
                    await loc.click(click_count=count)
                new_tab = await popup.value
                try:
                    await new_tab.wait_for_load_state("domcontentloaded", timeout=self.cfg.action_timeout_s * 1000)
                except Exception:  # noqa: BLE001 - slow or blocked: the note shows its URL anyway
                    pass
                return f"Clicked {desc}; it opened a new tab."
            await loc.click(button=button, click_count=count)
            return f"Clicked {desc}."

        where = f"({x}, {y})" if x is not None else self.describe(selector=selector, text=text, role=role, name=name)
        return await self.run(ctx, act, what=f"clicking {where}", screenshot=screenshot)


    @tool(name="browser_fill")
    async def fill(
        self,
        ctx: ToolContext,
        value: str,
        selector: str | None = None,
        text: str | None = None,
        role: str | None = None,
        name: str | None = None,
        submit: bool = False,
        screenshot: bool | None = None,
    ) -> ToolOutput:
        """Replace the content of a text field (input, textarea, contenteditable).

        Args:
            value: The text to put in the field.
            selector: CSS selector of the field, e.g. input[name=email].
            text: Visible text of the field.
            role: ARIA role, e.g. textbox, searchbox, spinbutton.
            name: Accessible name (usually the field's label), e.g. Email.
            submit: Press Enter afterwards.
            screenshot: Also return a screenshot.
        """

        async def act(page: "Page") -> str:
            loc, desc = self.locator(page, selector=selector, text=text, role=role, name=name)
            await loc.fill(value)
            if submit:
                await loc.press("Enter")
            return f"Filled {desc} with {_short(value, 80)!r}{' and pressed Enter' if submit else ''}."

        where = self.describe(selector=selector, text=text, role=role, name=name)
        return await self.run(ctx, act, what=f"filling {where}", screenshot=screenshot)

    @tool(name="browser_type")
    async def type(
        self,
        ctx: ToolContext,
        text: str,
        selector: str | None = None,
        role: str | None = None,
        name: str | None = None,
        submit: bool = False,
        screenshot: bool | None = None,
    ) -> ToolOutput:
        """Type text key by key into the focused element, or into an element clicked first.

        Args:
            text: The text to type.
            selector: CSS selector of an element to click before typing.
            role: ARIA role of an element to click before typing.
            name: Accessible name to go with role.
            submit: Press Enter afterwards.
            screenshot: Also return a screenshot.
        """

        async def act(page: "Page") -> str:
            where = "the focused element"
            if selector or role:
                loc, where = self.locator(page, selector=selector, text=None, role=role, name=name)
                await loc.click()
            await page.keyboard.type(text)
            if submit:
                await page.keyboard.press("Enter")
            return f"Typed {_short(text, 80)!r} into {where}{' and pressed Enter' if submit else ''}."

        return await self.run(ctx, act, what="typing", screenshot=screenshot)

    @tool(name="browser_press")
    async def press(
        self,
        ctx: ToolContext,
        key: str,
        selector: str | None = None,
        repeat: int = 1,
        screenshot: bool | None = None,
    ) -> ToolOutput:
        """Press a key or key combination, e.g. Enter, Tab, Escape, ArrowDown, Control+a.

        Args:
            key: Key name or combination joined with +.
            selector: CSS selector of an element to focus first (default: the focused one).
            repeat: How many times to press it (1..50).
            screenshot: Also return a screenshot.
        """
        combo = normalize_key(key)
        if not 1 <= repeat <= 50:
            return ToolOutput(text="repeat must be between 1 and 50", is_error=True, untrusted=True)

        async def act(page: "Page") -> str:
            for _ in range(repeat):
                if selector:
                    await page.locator(selector).press(combo)
                else:
                    await page.keyboard.press(combo)
            return f"Pressed {combo}{f' {repeat} times' if repeat > 1 else ''}."

        return await self.run(ctx, act, what=f"pressing {combo}", screenshot=screenshot)

    @tool(name="browser_scroll")
    async def scroll(
        self,
        ctx: ToolContext,
        direction: Literal["up", "down", "left", "right"] = "down",
        pixels: int = 600,
        selector: str | None = None,
        x: float | None = None,
        y: float | None = None,
        screenshot: bool | None = None,
    ) -> ToolOutput:
        """Scroll the page (or the area under x, y), or scroll an element into view.

        Args:
            direction: up, down, left or right.
            pixels: How far to scroll.
            selector: CSS selector of an element to scroll into view (ignores direction).
            x: Horizontal position of the mouse wheel (default: page centre).
            y: Vertical position of the mouse wheel.
            screenshot: Also return a screenshot.
        """

        async def act(page: "Page") -> str:
            if selector:
                await page.locator(selector).scroll_into_view_if_needed()
                done = f"Scrolled {selector!r} into view"
            else:
                w, h = self.cfg.viewport
                px, py = self.point(x, y) if x is not None and y is not None else (w / 2, h / 2)
                dx = {"left": -pixels, "right": pixels}.get(direction, 0)
                dy = {"up": -pixels, "down": pixels}.get(direction, 0)
                await page.mouse.move(px, py)
                await page.mouse.wheel(dx, dy)
                done = f"Scrolled {direction} {pixels} px"
            pos = await page.evaluate(
                "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() =>"
                " r([scrollX, scrollY, document.documentElement.scrollHeight, innerHeight]))))"
            )
            sx, sy, total, inner = (int(v) for v in pos)
            return f"{done}; the page is now at x={sx}, y={sy} of {total} px height (viewport {inner} px)."

        return await self.run(ctx, act, what="scrolling", screenshot=screenshot)


    @tool(name="browser_select")
    async def select(
        self,
        ctx: ToolContext,
        option: str | list[str],
        selector: str | None = None,
        role: str | None = None,
        name: str | None = None,
        screenshot: bool | None = None,
    ) -> ToolOutput:
        """Choose option(s) of a <select> drop-down, by value or visible label.

        Args:
            option: The option's value or label; a list for a multi-select.
            selector: CSS selector of the <select>, e.g. select[name=country].
            role: ARIA role (combobox or listbox).
            name: Accessible name (the drop-down's label).
            screenshot: Also return a screenshot.
        """
        wanted = [option] if isinstance(option, str) else list(option)

        async def act(page: "Page") -> str:
            loc, desc = self.locator(page, selector=selector, text=None, role=role, name=name)
            chosen = await loc.select_option(wanted)
            return f"Selected {', '.join(map(repr, chosen))} in {desc}."

        where = self.describe(selector=selector, text=None, role=role, name=name)
        return await self.run(ctx, act, what=f"selecting in {where}", screenshot=screenshot)

    @tool(name="browser_hover")
    async def hover(
        self,
        ctx: ToolContext,
        selector: str | None = None,
        text: str | None = None,
        role: str | None = None,
        name: str | None = None,
        x: float | None = None,
        y: float | None = None,
        screenshot: bool | None = None,
    ) -> ToolOutput:
        """Move the mouse over an element or a point (to open menus, show tooltips).

        Args:
            selector: CSS selector of the element.
            text: Visible text of the element.
            role: ARIA role of the element.
            name: Accessible name to go with role.
            x: Horizontal position (instead of an element).
            y: Vertical position.
            screenshot: Also return a screenshot.
        """

        async def act(page: "Page") -> str:
            if x is not None and y is not None:
                px, py = self.point(x, y)
                await page.mouse.move(px, py)
                return f"Moved the mouse to ({x:g}, {y:g})."
            loc, desc = self.locator(page, selector=selector, text=text, role=role, name=name)
            await loc.hover()
            return f"Hovering over {desc}."

        where = f"({x}, {y})" if x is not None else self.describe(selector=selector, text=text, role=role, name=name)
        return await self.run(ctx, act, what=f"hovering over {where}", screenshot=screenshot)


    @tool(name="browser_wait")
    async def wait(
        self,
        ctx: ToolContext,
        selector: str | None = None,
        text: str | None = None,
        load_state: Literal["load", "domcontentloaded", "networkidle"] | None = None,
        state: Literal["visible", "hidden", "attached", "detached"] = "visible",
        seconds: float | None = None,
        timeout_s: float = 5.0,
    ) -> ToolOutput:
        """Wait until an element or text appears (or disappears), the page reaches a load
        state, or a number of seconds has passed.

        Args:
            selector: CSS selector to wait for.
            text: Visible text to wait for.
            load_state: Page load state to wait for.
            state: What the element should become.
            seconds: Just wait this long (at most 10 s).
            timeout_s: Give up after this many seconds (at most 60).
        """
        limit = max(0.1, min(timeout_s, 60.0))
        if not (selector or text or load_state or seconds):
            return ToolOutput(
                text="say what to wait for: selector, text, load_state or seconds", is_error=True, untrusted=True
            )
        if selector and text:
            return ToolOutput(text="wait for selector or text, not both", is_error=True, untrusted=True)
        target = f"selector {selector!r}" if selector else f"text {text!r}" if text else f"load state {load_state}"

        async def act(page: "Page") -> str:
            if seconds and not (selector or text or load_state):
                await asyncio.sleep(min(seconds, 10.0))
                return f"Waited {min(seconds, 10.0):g} s."
            if load_state:
                await page.wait_for_load_state(load_state, timeout=limit * 1000)
                return f"The page reached {load_state}."
            loc = page.locator(selector) if selector else page.get_by_text(text or "")
            await loc.first.wait_for(state=state, timeout=limit * 1000)
            return f"{target.capitalize()} is {state}."

        return await self.run(ctx, act, what=f"waiting for {target} to be {state}", timeout_s=limit)

    @tool(name="browser_tabs")
    async def tabs(
        self,
        ctx: ToolContext,
        action: Literal["list", "open", "switch", "close"] = "list",
        index: int | None = None,
        url: str | None = None,
    ) -> ToolOutput:
        """List the open tabs, open a new one, switch to one, or close one.

        Args:
            action: list, open (optionally with url), switch (needs index), or close (index,
                default the current tab).
            index: Tab number as shown by list (0 is the first).
            url: Address to open in the new tab.
        """
        s = self.bind(ctx)
        try:
            if action == "switch":
                if index is None:
                    raise ToolExecutionError("switch needs index (see action=list)")
                await s.switch_tab(index)
            elif action == "close":
                await s.close_tab(index)
            elif action == "open":
                full = normalize_url(url) if url else None
                reason = s.guard.check(full) if full else None
                if reason:
                    raise ToolExecutionError(f"Not opening {full}: {reason}.")
                page = await s.open_tab()
                if full:
                    await s.run(lambda p: page.goto(full), what=f"opening {full}", timeout_s=self.cfg.navigation_timeout_s)
            tabs = await s.tabs()
        except ToolExecutionError as exc:
            return ToolOutput(text="\n".join([exc.message, *s.take_notes()]), is_error=True, untrusted=True)
        except Exception as exc:  # noqa: BLE001 - Playwright errors in tab bookkeeping
            err = s.translate_error(exc, what=f"tabs {action}")
            return ToolOutput(text=err.message, is_error=True, untrusted=True)
        s.take_notes()  # the list below already shows new tabs
        return ToolOutput(text=_format_tabs(tabs), data=[t.__dict__ for t in tabs], untrusted=True)

    @tool(name="browser_screenshot")
    async def screenshot(self, ctx: ToolContext) -> ToolOutput:
        """Take a screenshot of the visible part of the current tab."""

        async def act(page: "Page") -> str:
            return f"Screenshot of the viewport ({self.cfg.viewport[0]}x{self.cfg.viewport[1]}); {self.coordinate_help()}."

        return await self.run(ctx, act, what="taking a screenshot", screenshot=True)

    @tool(name="browser_read")
    async def read(
        self,
        ctx: ToolContext,
        mode: Literal["text", "snapshot"] = "text",
        selector: str | None = None,
        max_chars: int | None = None,
    ) -> ToolOutput:
        """Read the page: its visible text, or an accessibility snapshot (roles and names of
        the elements, usable with role and name in other browser tools).

        Args:
            mode: text or snapshot.
            selector: CSS selector of a part of the page to read (default: the whole page).
            max_chars: Most characters to return (capped by the configuration).
        """

        async def act(page: "Page") -> str:
            loc = page.locator(selector) if selector else page.locator("body")
            if not selector and await loc.count() == 0:
                loc = page.locator(":root")
            loc = loc.first
            if mode == "text":
                raw = re.sub(r"\n{3,}", "\n\n", await loc.inner_text()).strip()
            else:
                raw = await loc.aria_snapshot()
            hint = "pass selector to read one part of the page"
            return self.cap(raw, max_chars, hint) or "(the page has no text)"

        return await self.run(ctx, act, what=f"reading the page {mode}")

    @tool(name="browser_upload")
    async def upload(
        self,
        ctx: ToolContext,
        paths: list[str],
        selector: str | None = None,
        text: str | None = None,
        role: str | None = None,
        name: str | None = None,
    ) -> ToolOutput:
        """Attach workspace files to a file input (or to the button that opens a file chooser).

        Args:
            paths: File paths relative to the workspace.
            selector: CSS selector of the file input, e.g. input[type=file].
            text: Visible text of the upload button.
            role: ARIA role of the upload button.
            name: Accessible name to go with role.
        """
        self.bind(ctx)
        try:
            files = [self.workspace_file(p) for p in paths]
        except ToolExecutionError as exc:
            return ToolOutput(text=exc.message, is_error=True, untrusted=True)
        if not files:
            return ToolOutput(text="paths is empty", is_error=True, untrusted=True)

        async def act(page: "Page") -> str:
            loc, desc = self.locator(page, selector=selector, text=text, role=role, name=name)
            is_input = await loc.evaluate("e => e.tagName === 'INPUT' && e.type === 'file'")
            if is_input:
                await loc.set_input_files(files)
            else:
                async with page.expect_file_chooser() as chooser:
                    await loc.click()
                await (await chooser.value).set_files(files)
            return f"Attached {', '.join(f.name for f in files)} to {desc}."

        return await self.run(ctx, act, what="uploading")

    @tool(name="browser_download")
    async def download(
        self,
        ctx: ToolContext,
        selector: str | None = None,
        text: str | None = None,
        role: str | None = None,
        name: str | None = None,
        timeout_s: float = 30.0,
    ) -> ToolOutput:
        """Click a link or button that downloads a file and save the file in the workspace
        (under downloads/). The file's content is untrusted.

        Args:
            selector: CSS selector of the link or button.
            text: Visible text of the link or button.
            role: ARIA role of the link or button.
            name: Accessible name to go with role.
            timeout_s: Give up when no download has finished after this many seconds.
        """
        limit = max(1.0, min(timeout_s, 300.0))

        async def act(page: "Page") -> str:
            loc, desc = self.locator(page, selector=selector, text=text, role=role, name=name)
            path = await self.session.wait_for_download(loc.click, timeout_s=limit)
            root = (self.session.workspace or Path.cwd()).resolve()
            shown = path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path
            return f"Downloaded {shown} ({path.stat().st_size} bytes) by clicking {desc}."

        return await self.run(ctx, act, what="downloading", timeout_s=limit)

    @tool(name="browser_eval", kind="javascript")
    async def evaluate(self, ctx: ToolContext, expression: str) -> ToolOutput:
        """Run JavaScript in the current page and return its JSON result, e.g.
        document.querySelectorAll('a').length or () => [...].

        Args:
            expression: A JavaScript expression or function.
        """

        async def act(page: "Page") -> str:
            value = await page.evaluate(expression)
            text = json.dumps(value, ensure_ascii=False, default=str)
            return self.cap(text, None, "return less data")

        return await self.run(ctx, act, what="evaluating JavaScript")


_OPENS_NEW_TAB_JS = """e => {
  const link = e.closest('a[href][target], area[href][target]');
  const t = link ? link.target.toLowerCase() : '';
  return t !== '' && !['_self', '_top', '_parent'].includes(t);
}"""


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _format_tabs(tabs: list[TabInfo]) -> str:
    lines = [
        f"{'*' if t.active else ' '} {t.index}: {_short(t.title, 80)!r} {t.url}" for t in tabs
    ]
    return f"{len(tabs)} tab{'s' if len(tabs) != 1 else ''} (* = current):\n" + "\n".join(lines)
