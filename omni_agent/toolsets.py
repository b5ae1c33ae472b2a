"""Named tool sets for the CLI and task files: built-ins by name, user tools by import path.

``shell``, ``files``, ``browser`` and ``desktop`` are the built-in sets (``omni_agent.tools``);
``package.module:attr`` or ``path/to/file.py[:attr]`` loads user tools (a Tool, a list of Tools,
a Toolkit instance, or a zero-argument factory returning one of them, e.g. a Toolkit class);
``mcp:stdio:COMMAND ARGS...`` / ``mcp:http://HOST:PORT/PATH`` / ``mcp:sse:URL`` mount an MCP
server's tools (:mod:`omni_agent.mcp.client`; options ``mcp_trusted``, ``mcp_timeout_s``, ``mcp_env``). Heavy imports happen only for the sets asked for.
``options`` go to the built-in sets whose config has a field of that name, e.g.
``{"sandbox": "bubblewrap"}`` (shell, the CLI's ``--sandbox``), ``{"headless": False,
"display": ":99"}`` (browser), ``{"spec": "qwen2.5-vl"}`` (desktop).

Screenshot observers that share the loaded tools' browser session or display::

    loaded = load_toolsets_with_observers("browser,shell", workspace="ws", observe="browser")
    agent = Agent(model, loaded.tools, observers=loaded.observers)

(the CLI's ``omni-agent run --observe browser|desktop``). Observing the desktop turns off the
desktop tool's own screenshot per action unless ``options`` say otherwise: the observer already
shows the screen after every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .exceptions import UserError
from .importing import import_target
from .observers import Observer
from .tool import Tool

__all__ = [
    "BUILTIN_TOOLSETS",
    "OBSERVABLE",
    "LoadedToolsets",
    "load_toolsets",
    "load_toolsets_with_observers",
    "split_toolset_names",
]

OBSERVABLE = ("browser", "desktop")
"""What :func:`load_toolsets_with_observers` can observe (a screenshot after every step)."""


def _shell(workspace: Path, options: dict[str, Any]) -> list[Tool]:
    from .tools.shell import ShellConfig, shell_tools

    cfg = {k: v for k, v in options.items() if k in ShellConfig.model_fields}
    return shell_tools(**{"workspace": workspace, **cfg})


def _files(workspace: Path, options: dict[str, Any]) -> list[Tool]:
    from .tools.files import file_tools

    return file_tools(workspace)


def _browser_session(workspace: Path, options: dict[str, Any]) -> Any:
    from .tools.browser import BrowserConfig, BrowserSession

    cfg = {k: v for k, v in options.items() if k in BrowserConfig.model_fields}
    cfg.setdefault("workspace", workspace)
    return BrowserSession(BrowserConfig(**cfg))


def _browser(workspace: Path, options: dict[str, Any]) -> list[Tool]:
    from .tools.browser import browser_tools

    # A session passed in options is the caller's (never closed by a run) unless this module made
    # it to share with an observer (load_toolsets_with_observers): then runs close it.
    given = options.get("browser_session")
    if given is None or given is options.get(_OWN_SESSION):
        session = given or _browser_session(workspace, options)
        return browser_tools(session=session, close_with_run=session.config.close_after_run)
    return browser_tools(session=given)


_OWN_SESSION = "omni_agent.toolsets:own_browser_session"
"""Marks the browser session this module created for an observer (closed with the run)."""


def _desktop_controller(options: dict[str, Any]) -> Any:
    from .tools.desktop import DesktopConfig, DesktopController

    cfg = {k: v for k, v in options.items() if k in DesktopConfig.model_fields}
    return DesktopController(DesktopConfig(**cfg))


def _desktop(workspace: Path, options: dict[str, Any]) -> list[Tool]:
    from .tools.desktop import desktop_tools

    controller = options.get("desktop_controller") or _desktop_controller(options)
    return desktop_tools(controller=controller)


BUILTIN_TOOLSETS: dict[str, Callable[[Path, dict[str, Any]], list[Tool]]] = {
    "shell": _shell,
    "files": _files,
    "browser": _browser,
    "desktop": _desktop,
}


def _mcp(spec: str, options: dict[str, Any], loaded: list[Tool]) -> list[Tool]:
    from .mcp.client import load_mcp_toolset

    toolset = load_mcp_toolset(spec, options)
    taken = {t.name for t in loaded}
    if any(t.name in taken for t in toolset.tools()):
        toolset.close()
        raise UserError(f"two MCP servers are both named {toolset.name!r}: name one with mcp:NAME=... ({spec})")
    return toolset.tools()


def split_toolset_names(spec: str | Iterable[str] | None) -> list[str]:
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [s.strip() for s in items if s and s.strip()]


def _as_tools(value: Any, origin: str) -> list[Tool]:
    from .toolkit import Toolkit

    if isinstance(value, Tool):
        return [value]
    if isinstance(value, Toolkit):
        return value.tools()
    if isinstance(value, type) and issubclass(value, Toolkit):  # a Toolkit class: one instance
        return value().tools()
    if callable(value) and not isinstance(value, type):
        return _as_tools(value(), origin)
    if isinstance(value, (list, tuple)) and all(isinstance(t, Tool) for t in value):
        return list(value)
    raise UserError(f"{origin} is not a Tool, a list of Tools, a Toolkit or a factory of them")


def _load_user(spec: str) -> list[Tool]:
    target, _, attr = spec.partition(":") if not spec.endswith(".py") else (spec, "", "")
    module = import_target(target, what="tool module")
    if attr:
        if not hasattr(module, attr):
            raise UserError(f"{target} has no attribute {attr!r}")
        return _as_tools(getattr(module, attr), spec)
    found = [v for v in vars(module).values() if isinstance(v, Tool)]
    if not found:
        raise UserError(f"{target} defines no tools (decorate functions with @tool)")
    return found


def load_toolsets(
    names: str | Iterable[str] | None, *, workspace: str | Path | None = None, options: dict[str, Any] | None = None
) -> list[Tool]:
    """Tools for a comma-separated list of toolset names or import paths."""
    ws = Path(workspace or Path.cwd()).resolve()
    ws.mkdir(parents=True, exist_ok=True)
    tools: list[Tool] = []
    for name in split_toolset_names(names):
        if name in BUILTIN_TOOLSETS:
            tools.extend(BUILTIN_TOOLSETS[name](ws, dict(options or {})))
        elif name.startswith("mcp:"):
            tools.extend(_mcp(name, dict(options or {}), tools))
        elif ":" in name or name.endswith(".py"):
            tools.extend(_load_user(name))
        else:
            valid = ", ".join(BUILTIN_TOOLSETS)
            raise UserError(f"unknown toolset {name!r}: use one of {valid}, or module:attr / file.py")
    return tools


@dataclass
class LoadedToolsets:
    """Tools and the screenshot observers that look at the same browser session / display."""

    tools: list[Tool]
    observers: list[Observer] = field(default_factory=list)


def load_toolsets_with_observers(
    names: str | Iterable[str] | None,
    *,
    workspace: str | Path | None = None,
    options: dict[str, Any] | None = None,
    observe: str | Iterable[str] | None = None,
) -> LoadedToolsets:
    """:func:`load_toolsets` plus observers (``observe``: "browser", "desktop" or both).

    ``browser`` screenshots the active tab of the browser tools' own session (so it needs the
    browser toolset); ``desktop`` grabs the screen of the desktop tool's display, or of
    ``options["display"]`` / $DISPLAY without the desktop toolset. Raises UserError for an unknown
    or unusable observer and DisplayError when observing a desktop that is not there.
    """
    wanted = split_toolset_names(observe)
    unknown = [w for w in wanted if w not in OBSERVABLE]
    if unknown:
        raise UserError(f"cannot observe {unknown[0]!r}: use one of {', '.join(OBSERVABLE)}")
    names_list = split_toolset_names(names)
    ws = Path(workspace or Path.cwd()).resolve()
    opts = dict(options or {})
    observers: list[Observer] = []
    if "browser" in wanted:
        if "browser" not in names_list:
            raise UserError("observing the browser needs the browser toolset (add browser to the tools)")
        from .tools.browser_observer import BrowserScreenshotObserver

        opts["browser_session"] = opts[_OWN_SESSION] = _browser_session(ws, opts)
        observers.append(BrowserScreenshotObserver(opts["browser_session"]))
    if "desktop" in wanted:
        from .tools.desktop_observer import DesktopScreenshotObserver

        opts.setdefault("screenshot_after_action", False)  # the observer shows the screen already
        controller = _desktop_controller(opts)
        if "desktop" in names_list:
            opts["desktop_controller"] = controller
        # controller.capture opens the display now: a missing one fails here, in one line.
        observers.append(DesktopScreenshotObserver(controller.capture, controller.config.spec))
    return LoadedToolsets(tools=load_toolsets(names_list, workspace=ws, options=opts), observers=observers)
