"""One Chromium for the browser tools: launch, context, tabs, crash recovery, error messages.

The session launches lazily on the first action (Debian's ``/usr/bin/chromium`` when there is
one: ``playwright install`` cannot download browsers everywhere), keeps one browser context with
its tabs, and puts a deadline on every Playwright call. When the browser dies (killed, crashed,
or stuck past its deadline) the failing action gets a clear error and the next action relaunches
it with a fresh blank tab and says so; nothing waits forever.

Playwright objects belong to the event loop that created them; if the session is used from a new
loop (``asyncio.run`` called again), the old browser is killed and a new one launched.

Needs: apt ``chromium`` (or a Playwright-installed Chromium) and the ``browser`` extra.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from omni_agent.exceptions import ToolExecutionError, UserError, require
from omni_agent.messages import ImagePart
from omni_agent.models.base import CoordinateSpace

from .browser_guard import DomainGuard, normalize_domain_pattern

if TYPE_CHECKING:  # pragma: no cover
    from playwright.async_api import Browser, BrowserContext, Download, Page, Playwright

__all__ = ["BrowserConfig", "BrowserSession", "TabInfo", "find_chromium"]

T = TypeVar("T")

CHROMIUM_CANDIDATES = (
    "/usr/bin/chromium",
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium-browser",
    "/snap/bin/chromium",
    "/usr/bin/google-chrome",
)
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--disable-smooth-scrolling",  # a screenshot right after a key press shows where it ends
)
# Harmless noise Debian's Chromium prints on every start (no system bus in containers, and the
# /usr/bin/chromium wrapper's broken test); kept out of error messages.
_NOISE_RE = re.compile(r"dbus|D-Bus|bus\.cc|\[: |object_proxy|gpu_init|^\s*$", re.IGNORECASE)


class BrowserConfig(BaseModel):
    """How the browser tools launch and behave. All fields have working defaults."""

    model_config = ConfigDict(extra="forbid")

    executable_path: str | None = None
    """Chromium binary; None finds one (/usr/bin/chromium, /usr/lib/chromium/chromium, Playwright's)."""
    headless: bool = True
    display: str | None = None
    """X display for headful mode (e.g. ":99"); None uses $DISPLAY."""
    viewport: tuple[int, int] = (1280, 800)
    """(width, height) in CSS pixels."""
    allow_domains: list[str] = Field(default_factory=list)
    """Only these domains (and subdomains) may load; empty allows all."""
    deny_domains: list[str] = Field(default_factory=list)
    """These domains (and subdomains) never load; wins over allow_domains."""
    allow_file_urls: bool = False
    allow_javascript: bool = False
    """Add the ``browser_eval`` tool (kind "javascript", gated by the policy). Page scripts
    always run; this is only about the model running its own code."""
    screenshot_after_action: bool = False
    """Attach a fresh screenshot to every action's result (a call can also ask for one)."""
    jpeg_quality: int = Field(default=75, ge=1, le=100)
    workspace: Path | None = None
    """Folder for uploads (read from) and downloads (written to); None uses the run's workspace."""
    action_timeout_s: float = Field(default=10.0, gt=0)
    navigation_timeout_s: float = Field(default=30.0, gt=0)
    launch_timeout_s: float = Field(default=30.0, gt=0)
    text_cap: int = Field(default=8000, ge=200)
    """Most characters of page text / accessibility snapshot returned at once."""
    coordinate_space: CoordinateSpace = "relative_1000"
    """How the model writes x/y: "relative_1000" (Qwen3: 0..1000 grid over the viewport) or
    "absolute_resized" (Qwen2.5: pixels of the screenshot as the model's processor resized it)."""
    close_after_run: bool = True
    """Close the browser when an agent run ends (the loop closes what tools put in
    ``ToolContext.state``); the next run launches a fresh one. False keeps it open across runs of
    one event loop; close the session yourself then."""
    extra_args: list[str] = Field(default_factory=list)

    @field_validator("allow_domains", "deny_domains")
    @classmethod
    def _check_domains(cls, value: list[str]) -> list[str]:
        return [normalize_domain_pattern(p) for p in value]

    @field_validator("viewport")
    @classmethod
    def _check_viewport(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 100 or max(value) > 8192:
            raise ValueError(f"viewport {value} out of range (100..8192 pixels per side)")
        return value


@dataclass(frozen=True)
class TabInfo:
    index: int
    title: str
    url: str
    active: bool


def find_chromium(configured: str | None = None) -> str | None:
    """The Chromium binary to launch, or None to let Playwright use its own download.

    Raises ToolExecutionError when a configured path does not exist."""
    if configured:
        path = shutil.which(configured) or configured
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ToolExecutionError(f"BrowserConfig.executable_path {configured!r} is not an executable file")
        return path
    for candidate in CHROMIUM_CANDIDATES:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _playwright_chromium_installed() -> bool:
    """Whether `playwright install chromium` left a browser in Playwright's cache."""
    root = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or str(Path.home() / ".cache" / "ms-playwright")
    return any(Path(root).glob("chromium*")) if root != "0" and Path(root).is_dir() else False


class BrowserCrashed(ToolExecutionError):
    """The browser process went away during an action."""


class BrowserSession:
    """A lazily launched Chromium with one context; shared by all browser tools of an agent.

    Use ``async with BrowserSession(config) as session`` or call :meth:`close` when done.
    """

    def __init__(self, config: BrowserConfig | None = None) -> None:
        self.config = config or BrowserConfig()
        self.guard = DomainGuard(
            allow_domains=self.config.allow_domains,
            deny_domains=self.config.deny_domains,
            allow_file_urls=self.config.allow_file_urls,
        )
        self.workspace: Path | None = self.config.workspace
        self.launches = 0
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._context: BrowserContext | None = None
        self._active: Page | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None
        self._driver_pid: int | None = None
        self._closing = False
        self._crashed = False
        self._lock: asyncio.Lock | None = None
        self._notes: list[str] = []
        self._new_pages: list[Page] = []
        self._downloads: list[Path] = []
        self._download_event: asyncio.Event | None = None
        self.closed_with_run = False
        """True once a blocking ``Agent.run()`` ended and closed this (the caller's) session."""

    async def __aenter__(self) -> "BrowserSession":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- lifecycle ----------------------------------------------------------------------------
    def check_can_start(self) -> None:
        """Raise a clear error now when the browser could not start (no playwright, no Chromium,
        no X display for headful mode); an agent run calls this before the model, so a missing
        browser is one error rather than a failed call per step."""
        if self.running:
            return
        require("playwright.async_api", "browser", "playwright")
        if not self.config.headless:
            from omni_agent.screen import resolve_display

            resolve_display(self.config.display)  # DisplayError: none set, or no X server there
        if find_chromium(self.config.executable_path) is None and not _playwright_chromium_installed():
            raise UserError(
                "no Chromium found: apt-get install chromium (or `playwright install chromium`), "
                "or set BrowserConfig.executable_path"
            )

    @property
    def running(self) -> bool:
        """True while a launched browser is connected (and owned by the running loop)."""
        return self._browser is not None and self._browser.is_connected() and not self._crashed

    @property
    def stopped_unexpectedly(self) -> bool:
        """True when the browser crashed, was killed or hung (not closed on purpose)."""
        return self._crashed or (self._browser is not None and not self._browser.is_connected())

    @property
    def pid(self) -> int | None:
        """The browser process id (the one to kill to simulate a crash)."""
        return self._pid

    async def loop_ending(self) -> None:
        """The event loop of a blocking ``Agent.run()`` ends: close the browser (it cannot outlive
        its loop) and remember why, so that reading the page afterwards says so rather than
        opening a fresh blank browser."""
        await self.close()
        self.closed_with_run = True

    async def ensure_started(self) -> None:
        """Launch the browser if it is not running; relaunch it after a crash."""
        if self.closed_with_run:
            raise UserError(
                "this browser session was closed when Agent.run() ended: a blocking run has its own event "
                "loop and the browser cannot outlive it. To read the page after a run, await agent.arun(...) "
                "in your own event loop (see examples/browser_script.py)"
            )
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            # Playwright objects of a finished loop cannot be used or closed from this one.
            self._kill_browser_process()
            self._stop_orphaned_driver()
            self._reset()
            self._pw = None
            self._loop = None
            self._lock = None
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.running:
                return
            if self._browser is not None or self._crashed:
                self._notes.append("The browser had stopped (crashed or killed) and was relaunched: earlier tabs are gone.")
                await self._discard()
            try:
                await asyncio.wait_for(self._launch(), self.config.launch_timeout_s)
            except asyncio.TimeoutError:
                await self._discard()
                raise ToolExecutionError(
                    f"Chromium did not start within {self.config.launch_timeout_s:.0f} s"
                ) from None
            except ToolExecutionError:
                await self._discard()
                raise
            except Exception as exc:  # noqa: BLE001 - Playwright's launch errors carry browser logs
                await self._discard()
                raise ToolExecutionError(f"Chromium failed to start: {_clean_launch_error(exc)}") from None
            self._loop = loop

    async def _launch(self) -> None:
        require("playwright.async_api", "browser", "playwright")
        from playwright.async_api import async_playwright

        cfg = self.config
        env = dict(os.environ)
        if not cfg.headless:
            display = cfg.display or os.environ.get("DISPLAY")
            if not display:
                raise ToolExecutionError(
                    "headful Chromium needs an X display: set BrowserConfig.display or $DISPLAY "
                    "(omni_agent.xvfb.VirtualDisplay starts one), or use headless=True"
                )
            env["DISPLAY"] = display
        args = list(CHROMIUM_ARGS) + self.guard.launch_args() + list(cfg.extra_args)
        if not cfg.headless:
            args.append("--test-type")  # hides the --no-sandbox warning bar
        executable = find_chromium(cfg.executable_path)
        if self._pw is None:
            self._pw = await async_playwright().start()
        if executable is None and not os.path.exists(self._pw.chromium.executable_path):
            raise ToolExecutionError(
                "no Chromium found: apt-get install chromium (or `playwright install chromium`), "
                "or set BrowserConfig.executable_path"
            )
        self._browser = await self._pw.chromium.launch(
            executable_path=executable,
            headless=cfg.headless,
            args=args,
            env=env,
            handle_sigint=False,
            handle_sigterm=False,
            handle_sighup=False,
        )
        self.launches += 1
        self._crashed = False
        self._browser.on("disconnected", self._on_disconnected)
        self._pid = await self._browser_pid(self._browser)
        self._driver_pid = _playwright_driver_pid(self._pid)
        width, height = cfg.viewport
        self._context = await self._browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        self._context.set_default_timeout(cfg.action_timeout_s * 1000)
        self._context.set_default_navigation_timeout(cfg.navigation_timeout_s * 1000)
        await self.guard.install(self._context)
        self._context.on("page", self._on_new_page)
        self._download_event = asyncio.Event()
        page = await self._context.new_page()
        self._new_pages.clear()  # the first tab is not news
        self._active = page

    @staticmethod
    async def _browser_pid(browser: "Browser") -> int | None:
        try:
            cdp = await browser.new_browser_cdp_session()
            info = await cdp.send("SystemInfo.getProcessInfo")
            await cdp.detach()
        except Exception:  # noqa: BLE001 - only used to kill a stuck browser; best effort
            return None
        for proc in info.get("processInfo", []):
            if proc.get("type") == "browser":
                return int(proc["id"])
        return None

    def _on_disconnected(self, _browser: Any) -> None:
        if not self._closing:
            self._crashed = True

    def _on_new_page(self, page: "Page") -> None:
        self._attach_page_handlers(page)
        self._new_pages.append(page)

    def _attach_page_handlers(self, page: "Page") -> None:
        page.on("download", self._on_download)
        page.on("dialog", self._on_dialog)

    async def _on_download(self, download: "Download") -> None:
        folder = (self.workspace or Path.cwd()) / "downloads"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target = _free_path(folder, download.suggested_filename)
            await download.save_as(target)
        except Exception as exc:  # noqa: BLE001 - reported to the model, not raised in a callback
            self._notes.append(f"A download ({download.suggested_filename!r}) failed: {_first_line(exc)}")
            return
        self._downloads.append(target)
        if self._download_event is not None:
            self._download_event.set()

    async def _on_dialog(self, dialog: Any) -> None:
        kind, message = dialog.type, dialog.message
        try:
            if kind in ("alert", "beforeunload"):
                await dialog.accept()
            else:
                await dialog.dismiss()
        except Exception:  # noqa: BLE001 - the page may be gone already
            pass
        action = "accepted" if kind in ("alert", "beforeunload") else "dismissed"
        self._notes.append(f"The page showed a {kind} dialog ({action}): {message[:200]!r}")

    async def close(self) -> None:
        """Close the browser and Playwright (idempotent)."""
        self._closing = True
        try:
            if self._loop is not None and self._loop is not asyncio.get_running_loop():
                self._kill_browser_process()
                self._stop_orphaned_driver()
                self._reset()
                self._pw = None
                self._loop = None
                return
            await self._discard()
            if self._pw is not None:
                try:
                    await asyncio.wait_for(self._pw.stop(), 10)
                except Exception:  # noqa: BLE001 - shutting down anyway
                    pass
            self._pw = None
            self._driver_pid = None  # exited with stop(); never signal a pid that may be reused
            self._loop = None
        finally:
            self._closing = False

    async def _discard(self) -> None:
        """Drop the current browser, closing it if it still answers, killing it if not."""
        browser = self._browser
        self._closing = True
        try:
            if browser is not None and browser.is_connected():
                try:
                    await asyncio.wait_for(browser.close(), 5)
                except Exception:  # noqa: BLE001 - stuck or already gone
                    self._kill_browser_process()
        finally:
            self._closing = False
        self._reset()

    def _reset(self) -> None:
        self._browser = self._context = self._active = None
        self._pid = None
        self._crashed = False
        self._new_pages.clear()

    def _stop_orphaned_driver(self) -> None:
        # The Playwright driver of a finished event loop cannot be stopped through its API.
        if self._driver_pid is not None:
            try:
                os.kill(self._driver_pid, signal.SIGTERM)
            except OSError:
                pass
        self._driver_pid = None

    def _kill_browser_process(self) -> None:
        if self._pid is None:
            return
        try:
            os.kill(self._pid, signal.SIGKILL)
        except OSError:
            pass

    # -- tabs ---------------------------------------------------------------------------------
    def _live_pages(self) -> list["Page"]:
        return [p for p in (self._context.pages if self._context else []) if not p.is_closed()]

    async def page(self) -> "Page":
        """The active tab (launching or relaunching the browser when needed)."""
        await self.ensure_started()
        assert self._context is not None
        if self._active is None or self._active.is_closed():
            pages = self._live_pages()
            if pages:
                self._active = pages[-1]
                self._notes.append(f"The active tab was closed; now on tab {len(pages) - 1}.")
            else:
                self._active = await self._context.new_page()
                self._new_pages.clear()
                self._notes.append("All tabs were closed; opened a new blank tab.")
        return self._active

    async def tabs(self) -> list[TabInfo]:
        await self.page()
        out = []
        for i, p in enumerate(self._live_pages()):
            try:
                title = await asyncio.wait_for(p.title(), 2)
            except Exception:  # noqa: BLE001 - a tab busy navigating has no title yet
                title = ""
            out.append(TabInfo(index=i, title=title, url=p.url, active=p is self._active))
        return out

    async def open_tab(self, url: str | None = None) -> "Page":
        await self.page()
        assert self._context is not None
        page = await self._context.new_page()
        if page in self._new_pages:
            self._new_pages.remove(page)
        self._active = page
        return page

    async def switch_tab(self, index: int) -> "Page":
        await self.page()
        pages = self._live_pages()
        if not 0 <= index < len(pages):
            raise ToolExecutionError(f"no tab {index}: there are {len(pages)} tabs (0..{len(pages) - 1})")
        self._active = pages[index]
        await asyncio.wait_for(self._active.bring_to_front(), self.config.action_timeout_s)
        return self._active

    async def close_tab(self, index: int | None = None) -> None:
        active = await self.page()
        pages = self._live_pages()
        target = active if index is None else (pages[index] if 0 <= index < len(pages) else None)
        if target is None:
            raise ToolExecutionError(f"no tab {index}: there are {len(pages)} tabs (0..{len(pages) - 1})")
        await asyncio.wait_for(target.close(), self.config.action_timeout_s)
        if target is self._active:
            rest = self._live_pages()
            self._active = rest[-1] if rest else None

    def active_index(self) -> int:
        pages = self._live_pages()
        return pages.index(self._active) if self._active in pages else -1

    # -- running actions ----------------------------------------------------------------------
    async def run(self, action: Callable[["Page"], Awaitable[T]], *, what: str, timeout_s: float | None = None) -> T:
        """Run ``action(active_page)`` under a hard deadline and translate failures into clean
        :class:`ToolExecutionError` messages (naming blocked domains, timeouts, crashes)."""
        page = await self.page()
        limit = (timeout_s or self.config.action_timeout_s) + 5.0  # Playwright's own timeout fires first
        commits = _ErrorPageWatch(page)
        try:
            return await asyncio.wait_for(action(page), limit)
        except asyncio.TimeoutError:
            # Playwright did not answer within its own deadline: the browser is stuck.
            self._kill_browser_process()
            self._crashed = True
            raise BrowserCrashed(
                f"The browser did not respond while {what} (over {limit:.0f} s); it was stopped and "
                "will be relaunched on the next action."
            ) from None
        except ToolExecutionError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated in one place, below
            from playwright.async_api import TimeoutError as PlaywrightTimeout

            if isinstance(exc, PlaywrightTimeout) and not await self._responsive():
                self._kill_browser_process()
                self._crashed = True
                raise BrowserCrashed(
                    f"The browser stopped responding while {what}; it was stopped and will be "
                    "relaunched on the next action."
                ) from None
            if "net::ERR_" in str(exc):
                # Chromium commits its error page only after Playwright reported the failure;
                # a navigation started before that commit is reported as "interrupted".
                await commits.wait_for_error_page(2.0)
            raise self.translate_error(exc, what=what, timeout_s=timeout_s) from None
        finally:
            commits.stop()

    async def navigate(self, page: "Page", go: Callable[[], Awaitable[T]]) -> T:
        """Run a navigation (goto, back, reload...); when it times out, stop the tab's loading
        before reporting it. A load left pending (a server that never answers) would otherwise
        block every later action on the tab until the browser is declared stuck and killed."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        try:
            return await go()
        except PlaywrightTimeout:
            try:
                cdp = await asyncio.wait_for(page.context.new_cdp_session(page), 2)
                await asyncio.wait_for(cdp.send("Page.stopLoading"), 2)
                await asyncio.wait_for(cdp.detach(), 2)
            except Exception:  # noqa: BLE001 - best effort; the timeout is what gets reported
                pass
            raise

    async def _responsive(self, timeout_s: float = 2.0) -> bool:
        """True when the browser process still answers (a timeout may just be a slow page)."""
        if self._browser is None or not self._browser.is_connected():
            return False
        try:
            cdp = await asyncio.wait_for(self._browser.new_browser_cdp_session(), timeout_s)
            await asyncio.wait_for(cdp.send("Browser.getVersion"), timeout_s)
            await asyncio.wait_for(cdp.detach(), timeout_s)
        except Exception:  # noqa: BLE001 - any failure means it does not answer
            return False
        return True

    def translate_error(self, exc: BaseException, *, what: str, timeout_s: float | None = None) -> ToolExecutionError:
        """One place that turns Playwright exceptions into short messages for the model."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        message = _first_line(exc)
        blocked = self.guard.take_blocked()
        if blocked and ("ERR_BLOCKED_BY_CLIENT" in message or "ERR_NAME_NOT_RESOLVED" in message or "ERR_ABORTED" in message):
            return ToolExecutionError(self.guard.describe(blocked))
        if "ERR_BLOCKED_BY_CLIENT" in message:
            return ToolExecutionError(f"{what}: blocked by the browser's domain policy")
        if type(exc).__name__ == "TargetClosedError" or "has been closed" in message or "Browser closed" in message:
            if self._browser is None or not self._browser.is_connected() or self._crashed:
                self._crashed = True
                return BrowserCrashed(
                    f"The browser crashed or was closed while {what}; it will be relaunched on the next action."
                )
            return ToolExecutionError(f"The tab was closed while {what}; the next action uses another tab.")
        if isinstance(exc, PlaywrightTimeout):
            limit = timeout_s or self.config.action_timeout_s
            hint = ""
            if "waiting for locator" in str(exc) and not what.startswith("waiting"):
                hint = (" (no matching element appeared, or it stayed hidden or disabled; "
                        "browser_read mode=snapshot lists what is there)")
            return ToolExecutionError(f"Timed out after {limit:g} s {what}{hint}.")
        if "strict mode violation" in message:
            count = re.search(r"resolved to (\d+) elements", message)
            n = count.group(1) if count else "several"
            return ToolExecutionError(
                f"{what}: the target matches {n} elements; make it more specific "
                "(a CSS selector with an id or :nth-match(), or role and name)."
            )
        if "ERR_NAME_NOT_RESOLVED" in message:
            return ToolExecutionError(f"{what}: the host name could not be resolved ({message}).")
        if "ERR_CONNECTION_REFUSED" in message:
            return ToolExecutionError(f"{what}: the connection was refused ({message}).")
        return ToolExecutionError(f"{what} failed: {message}")

    def take_notes(self, page: "Page | None" = None) -> list[str]:
        """What happened besides the action itself: relaunches, new tabs, downloads, dialogs,
        blocked requests. Cleared on read."""
        notes, self._notes = self._notes, []
        pages = self._live_pages()
        for new in self._new_pages:
            if new in pages:
                notes.append(
                    f"A new tab opened: tab {pages.index(new)} ({new.url}); switch with browser_tabs action=switch."
                )
        self._new_pages.clear()
        blocked = self.guard.take_blocked()
        if blocked:
            notes.append(self.guard.describe(blocked))
        return notes

    # -- downloads ----------------------------------------------------------------------------
    async def wait_for_download(self, trigger: Callable[[], Awaitable[Any]], *, timeout_s: float) -> Path:
        """Run ``trigger`` (a click) and return the path of the file it downloaded."""
        assert self._download_event is not None
        before = len(self._downloads)
        self._download_event.clear()
        await trigger()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self._downloads) == before:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise ToolExecutionError(f"no download started within {timeout_s:g} s after the click")
            try:
                await asyncio.wait_for(self._download_event.wait(), remaining)
            except asyncio.TimeoutError:
                continue
            self._download_event.clear()
        return self._downloads[-1]

    # -- screenshots --------------------------------------------------------------------------
    async def screenshot(self, page: "Page | None" = None) -> ImagePart:
        """A JPEG screenshot of the viewport, decoded as an image part."""
        target = page or await self.page()
        quality = self.config.jpeg_quality
        data = await self.run(
            lambda p: target.screenshot(type="jpeg", quality=quality, timeout=self.config.action_timeout_s * 1000),
            what="taking a screenshot",
        )
        from PIL import Image

        image = Image.open(io.BytesIO(data))
        image.load()
        part = ImagePart.from_pil(image)
        part.media_type = "image/jpeg"
        return part


class _ErrorPageWatch:
    """Notices when the main frame commits Chromium's error page (chrome-error://...)."""

    def __init__(self, page: "Page") -> None:
        self.page = page
        self.seen = asyncio.Event()
        page.on("framenavigated", self._on_navigated)

    def _on_navigated(self, frame: Any) -> None:
        if frame is self.page.main_frame and frame.url.startswith("chrome-error:"):
            self.seen.set()

    async def wait_for_error_page(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.seen.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    def stop(self) -> None:
        try:
            self.page.remove_listener("framenavigated", self._on_navigated)
        except Exception:  # noqa: BLE001 - page gone
            pass


def _playwright_driver_pid(browser_pid: int | None) -> int | None:
    """The Playwright driver (node) that launched the browser: its parent process (Linux /proc)."""
    if browser_pid is None:
        return None
    try:
        stat = Path(f"/proc/{browser_pid}/stat").read_text()
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        cmdline = Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return None
    return ppid if "playwright" in cmdline else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).split("\nCall log:")[0].strip()
    text = re.sub(r"^\w+(\.\w+)?: ", "", text.splitlines()[0] if text else type(exc).__name__)
    return text[:300]


def _clean_launch_error(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip() and not _NOISE_RE.search(ln)]
    return " | ".join(lines[:6])[:800] or type(exc).__name__


def _free_path(folder: Path, suggested: str) -> Path:
    name = re.sub(r"[^\w.\- ]", "_", Path(suggested).name).strip(" .") or "download"
    target = folder / name
    stem, suffix, n = target.stem, target.suffix, 1
    while target.exists():
        target = folder / f"{stem} ({n}){suffix}"
        n += 1
    return target
