"""``omni-agent mcp-server``: serve our tool sets to any MCP client (stdio or streamable HTTP)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..exceptions import UserError

__all__ = ["mcp_server_cmd"]


def mcp_server_cmd(
    tools: str = typer.Option("shell,files", "--tools", "-t", help="Tool sets to serve: shell, files, browser, desktop, module:attr."),
    transport: str = typer.Option("stdio", "--transport", help="stdio (a client starts us) or http (streamable HTTP)."),
    sandbox: Optional[str] = typer.Option(
        None, "--sandbox", help="Shell sandbox: none | bubblewrap (read-only system, no network, only the workspace writable)."
    ),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w", help="Workspace for file/shell tools."),
    host: str = typer.Option("127.0.0.1", "--host", help="http: address to bind."),
    port: int = typer.Option(8000, "--port", help="http: port."),
    path: str = typer.Option("/mcp", "--path", help="http: endpoint path."),
    headless: bool = typer.Option(True, "--headless/--headed", help="browser: run Chromium without a window."),
) -> None:
    """Serve omni-agent tools over MCP (validated calls, the default policy; "ask" = elicitation).

    Exit codes: 0 the client went away (stdio) or the server stopped; 2 bad usage or configuration
    (a tool set that cannot load, a missing display or browser); 130 interrupted (Ctrl-C)."""
    from ..toolsets import load_toolsets, split_toolset_names
    from .server import ToolServer

    if transport not in ("stdio", "http"):
        raise UserError(f"--transport must be stdio or http, not {transport!r}")
    names = split_toolset_names(tools)
    options: dict[str, Any] = {"headless": headless}
    if sandbox is not None:
        if sandbox not in ("none", "bubblewrap"):
            raise UserError(f"--sandbox must be none or bubblewrap, not {sandbox!r}")
        if "shell" not in names:
            raise UserError("--sandbox applies to the shell toolset: add shell to --tools")
        options["sandbox"] = sandbox
    loaded = load_toolsets(names, workspace=workspace, options=options)
    _preflight(loaded)
    server = ToolServer(loaded, workspace=workspace)
    if transport == "http":
        print(f"omni-agent MCP server: http://{host}:{port}{path} ({len(server.registry)} tools)", file=sys.stderr)
    asyncio.run(server.serve(transport, host=host, port=port, path=path))


def _preflight(tools: list[Any]) -> None:
    """A missing display or browser stops the server at once with one clear line (as ``run``
    does), rather than serving tools whose every call fails."""
    checks = {id(t.preflight): t.preflight for t in tools if t.preflight is not None}
    for check in checks.values():
        out = check()
        if asyncio.iscoroutine(out):
            asyncio.run(out)
