"""Named tool sets for the CLI and task files: built-ins by name, user tools by import path.

``shell``, ``files``, ``browser`` and ``desktop`` are the built-in sets (``omni_agent.tools``);
``package.module:attr`` or ``path/to/file.py[:attr]`` loads user tools (a Tool, a list of Tools,
or a zero-argument factory returning either). Heavy imports happen only for the sets asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from .exceptions import UserError
from .importing import import_target
from .tool import Tool

__all__ = ["BUILTIN_TOOLSETS", "load_toolsets", "split_toolset_names"]


def _shell(workspace: Path, options: dict[str, Any]) -> list[Tool]:
    from .tools.shell import ShellConfig, shell_tools

    cfg = {k: v for k, v in options.items() if k in ShellConfig.model_fields}
    return shell_tools(**{"workspace": workspace, **cfg})


def _files(workspace: Path, options: dict[str, Any]) -> list[Tool]:
    from .tools.files import file_tools

    return file_tools(workspace)


def _browser(workspace: Path, options: dict[str, Any]) -> list[Tool]:
    from .tools.browser import BrowserConfig, browser_tools

    cfg = {k: v for k, v in options.items() if k in BrowserConfig.model_fields}
    cfg.setdefault("workspace", workspace)
    return browser_tools(BrowserConfig(**cfg))


def _desktop(workspace: Path, options: dict[str, Any]) -> list[Tool]:
    from .tools.desktop import DesktopConfig, desktop_tools

    cfg = {k: v for k, v in options.items() if k in DesktopConfig.model_fields}
    return desktop_tools(DesktopConfig(**cfg))


BUILTIN_TOOLSETS: dict[str, Callable[[Path, dict[str, Any]], list[Tool]]] = {
    "shell": _shell,
    "files": _files,
    "browser": _browser,
    "desktop": _desktop,
}


def split_toolset_names(spec: str | Iterable[str] | None) -> list[str]:
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [s.strip() for s in items if s and s.strip()]


def _as_tools(value: Any, origin: str) -> list[Tool]:
    if isinstance(value, Tool):
        return [value]
    if callable(value) and not isinstance(value, type):
        return _as_tools(value(), origin)
    if isinstance(value, (list, tuple)) and all(isinstance(t, Tool) for t in value):
        return list(value)
    raise UserError(f"{origin} is not a Tool, a list of Tools or a factory of them")


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
        elif ":" in name or name.endswith(".py"):
            tools.extend(_load_user(name))
        else:
            valid = ", ".join(BUILTIN_TOOLSETS)
            raise UserError(f"unknown toolset {name!r}: use one of {valid}, or module:attr / file.py")
    return tools
