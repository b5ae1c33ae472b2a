"""Which MCP server to mount: ``stdio:COMMAND ARGS...``, ``http(s)://HOST:PORT/PATH`` or ``sse:URL``.

The CLI and task files name a server as ``mcp:<spec>`` among the tool sets; an optional
``NAME=`` in front of the spec sets the prefix of its tool names (``mcp:fs=stdio:python fs.py``
gives ``fs__read_file``). Without one, the name comes from the script or command
(``stdio:python weather.py`` -> ``weather``) or the URL's host and port.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePath
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from ..exceptions import UserError

__all__ = ["McpServerSpec", "parse_server_spec"]

_NAME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]{0,23})=(.+)$")
_SCRIPT_SUFFIXES = (".py", ".js", ".mjs", ".ts", ".sh")


class McpServerSpec(BaseModel):
    """One MCP server: how to reach it and how its tools are mounted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transport: Literal["stdio", "http", "sse"]
    command: list[str] = Field(default_factory=list)
    """stdio: the program and its arguments."""
    url: str | None = None
    """http / sse: the endpoint."""
    name: str
    """Prefix of the tool names (``<name>__<tool>``)."""
    trusted: bool = False
    """Results of a trusted server are not marked untrusted (the policy stays relaxed)."""
    timeout_s: float = Field(default=60.0, gt=0)
    """A call that takes longer is abandoned; the connection is restarted."""
    connect_timeout_s: float = Field(default=30.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    """stdio: extra environment variables (the SDK passes only HOME, PATH, USER... by default)."""
    cwd: str | None = None
    mode: Literal["auto", "legacy"] = "auto"
    """Protocol negotiation: "auto" (2026-07-28 when the server speaks it, else the initialize
    handshake) or "legacy" (always the handshake)."""

    def label(self) -> str:
        return " ".join(self.command) if self.transport == "stdio" else f"{self.url}"


def parse_server_spec(text: str, **options: object) -> McpServerSpec:
    """``stdio:python server.py --flag`` / ``http://127.0.0.1:8000/mcp`` / ``sse:http://.../sse``,
    optionally ``NAME=`` in front; ``options`` fill the other :class:`McpServerSpec` fields."""
    raw = text.strip()
    if raw.startswith("mcp:"):
        raw = raw[4:]
    options = dict(options)
    name = options.pop("name", None)
    named = _NAME_RE.match(raw)
    if named and not raw.startswith(("http://", "https://")):
        name, raw = name or named.group(1), named.group(2)
    if raw.startswith("stdio:"):
        try:
            command = shlex.split(raw[len("stdio:") :])
        except ValueError as exc:
            raise UserError(f"cannot split the MCP command {raw!r}: {exc}") from exc
        if not command:
            raise UserError("mcp:stdio: needs a command, e.g. mcp:stdio:python server.py")
        return McpServerSpec(transport="stdio", command=command, name=name or _command_name(command), **options)  # type: ignore[arg-type]
    transport: Literal["http", "sse"] = "http"
    if raw.startswith("sse:"):
        transport, raw = "sse", raw[len("sse:") :]
    if raw.startswith(("http://", "https://")):
        parts = urlsplit(raw)
        if not parts.hostname:
            raise UserError(f"MCP URL {raw!r} has no host")
        return McpServerSpec(transport=transport, url=raw, name=name or _url_name(raw), **options)  # type: ignore[arg-type]
    raise UserError(
        f"unknown MCP server {text!r}: use mcp:stdio:COMMAND ARGS..., mcp:http://HOST:PORT/PATH or mcp:sse:URL"
    )


def _clean(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-") or "mcp"
    return ("m" + name if not name[0].isalpha() else name)[:24]


def _command_name(command: list[str]) -> str:
    script = next((a for a in command[1:] if a.endswith(_SCRIPT_SUFFIXES)), None)
    if script is None and len(command) > 2 and command[1] == "-m":
        script = command[2].rsplit(".", 1)[-1]  # python -m package.server -> server
    return _clean(PurePath(script or command[0]).stem)


def _url_name(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "mcp"
    return _clean(f"{host}_{parts.port}" if parts.port else host)
