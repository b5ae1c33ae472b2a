"""Tools from MCP servers: one :class:`McpToolset` per server, its tools namespaced by server.

    async with mcp_tools("stdio:python weather.py") as weather:   # an async context manager
        agent = Agent(model, tools=[weather])                    # weather__forecast, ...

    tools = load_toolsets("shell,mcp:http://127.0.0.1:8000/mcp")  # the CLI and task files

What happens to a server's answers:
- its input schemas are checked like ours (JSON Schema 2020-12, an object at the root); a tool
  with a broken schema is left out and named in :attr:`McpToolset.problems` (and a warning),
  so one bad tool never takes the whole server down;
- results become ToolOutputs (text, images the model sees, structured content): see
  :mod:`omni_agent.mcp.results`; they are untrusted unless the server is marked trusted;
- a call that outlives ``timeout_s`` or a server that crashes gives the model a clear error;
  the connection is then restarted (a new process for stdio) on the next call;
- ``tools/list_changed`` (or a 2026 ``subscriptions/listen`` event) re-lists the tools; the
  registry of a running agent swaps them in before the next model turn;
- a run closes the connections its calls used when it ends (like the browser session); the next
  call, in this run or a later one, connects again.

The session lives in one background event loop (:mod:`omni_agent.mcp.background`), so tools
loaded synchronously keep working across ``Agent.run()`` calls, each in its own loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import re
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..exceptions import ToolDefinitionError, ToolExecutionError, UserError, require
from ..tool import TOOL_NAME_RE, Tool, ToolContext, ToolOutput
from .background import BackgroundLoop, CallerLoop, background_loop
from .results import from_mcp_result
from .spec import McpServerSpec, parse_server_spec

__all__ = ["McpTool", "McpToolset", "connect_toolset", "load_mcp_toolset", "mcp_tools"]

_SEPARATOR = "__"


class McpTool(Tool):
    """A tool of an MCP server; ``source`` is its :class:`McpToolset` (the registry watches it)."""

    source: "McpToolset"
    remote_name: str


class McpToolset:
    """The tools of one MCP server, kept in step with the server. A dynamic tool group:
    ``tools()`` is the current list and ``tools_version`` grows when it changes."""

    def __init__(self, spec: McpServerSpec, *, loop: BackgroundLoop | CallerLoop | None = None) -> None:
        require("mcp", "mcp")
        self.spec = spec
        self.tools_version = 0
        self.problems: list[str] = []
        """Tools left out (invalid schemas, clashing names), one line each."""
        self._tools: dict[str, McpTool] = {}
        self._schemas: dict[str, tuple[str, str]] = {}  # remote name -> (description, schema json)
        self._client: Any = None
        self._holder: asyncio.Task[None] | None = None
        self._closed: asyncio.Event | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._loop = loop or background_loop()

    # -- public -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools())

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def start(self) -> "McpToolset":
        """Connect and list the tools (from any event loop)."""
        await self._loop.run(self._ensure_connected())
        return self

    def start_sync(self) -> "McpToolset":
        """:meth:`start` for synchronous callers (``load_toolsets``)."""
        self._loop.run_sync(self._ensure_connected(), timeout=self.spec.connect_timeout_s + 5)
        return self

    async def aclose(self) -> None:
        await self._loop.run(self._disconnect())

    def close(self) -> None:
        if self._loop.in_loop():
            raise RuntimeError("McpToolset.close() from its own loop: await aclose()")
        with contextlib.suppress(Exception):
            self._loop.run_sync(self._disconnect(), timeout=10)

    async def call(self, remote_name: str, arguments: dict[str, Any]) -> ToolOutput:
        """Call a server tool; every failure comes back as an error output."""
        return await self._loop.run(self._call(remote_name, arguments))

    # -- connection (runs in the background loop) ---------------------------------------------
    async def _ensure_connected(self) -> Any:
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._client is not None:
                return self._client
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._closed = asyncio.Event()
            self._holder = asyncio.create_task(self._hold(ready, self._closed), name=f"mcp-{self.name}")
            try:
                await asyncio.wait_for(asyncio.shield(ready), self.spec.connect_timeout_s)
            except asyncio.TimeoutError:
                await self._disconnect()
                raise ToolExecutionError(
                    f"MCP server {self.name} ({self.spec.label()}) did not start within {self.spec.connect_timeout_s:g} s"
                ) from None
            except Exception as exc:
                raise ToolExecutionError(f"cannot connect to MCP server {self.name} ({self.spec.label()}): {_describe(exc)}") from exc
            return self._client

    async def _hold(self, ready: asyncio.Future[None], closed: asyncio.Event) -> None:
        """Own the session for its whole life (anyio scopes must exit in the task that entered them)."""
        from mcp import Client

        try:
            async with Client(self._target(), message_handler=self._on_message, mode=self.spec.mode) as client:
                await self._relist(client)
                self._client = client
                ready.set_result(None)
                async with _listening(client, self._on_listen_event):
                    await closed.wait()
        except BaseException as exc:  # noqa: BLE001 - reported to the connecting caller, or ends the session
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self._client = None
            if not ready.done():
                ready.set_exception(ConnectionError("the session ended before it was ready"))

    def _target(self) -> Any:
        spec = self.spec
        if spec.transport == "stdio":
            from mcp import StdioServerParameters, stdio_client

            params = StdioServerParameters(command=spec.command[0], args=spec.command[1:], env=spec.env or None, cwd=spec.cwd)
            return stdio_client(params, errlog=_errlog())
        if spec.transport == "sse":
            from mcp.client.sse import sse_client

            return sse_client(spec.url or "", sse_read_timeout=spec.timeout_s + 30)
        return spec.url

    async def _disconnect(self) -> None:
        holder, closed = self._holder, self._closed
        self._holder = None
        if closed is not None:
            closed.set()
        if holder is not None and not holder.done():
            try:
                await asyncio.wait_for(holder, 10)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - a stuck transport: give up on it
                holder.cancel()
        self._client = None

    # -- calls ------------------------------------------------------------------------------
    async def _call(self, remote_name: str, arguments: dict[str, Any]) -> ToolOutput:
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        label = f"{self.name}{_SEPARATOR}{remote_name}"
        try:
            client = await self._ensure_connected()
            if remote_name not in self._schemas:
                return ToolOutput.error(f"{label} is no longer offered by the MCP server {self.name}")
            result = await client.call_tool(remote_name, arguments, read_timeout_seconds=self.spec.timeout_s)
        except ToolExecutionError as exc:
            return ToolOutput.error(exc.message)
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                await self._disconnect()
                return ToolOutput.error(
                    f"{label} did not answer within {self.spec.timeout_s:g} s; the MCP server {self.name} "
                    "was restarted: try again or use another way"
                )
            if exc.code == CONNECTION_CLOSED:
                await self._disconnect()
                return ToolOutput.error(
                    f"the MCP server {self.name} closed the connection during {label} (it crashed or exited); "
                    "it is restarted on the next call"
                )
            return ToolOutput.error(f"{label} failed: MCP error {exc.code}: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # transport failures (a dead HTTP server, broken pipes)
            await self._disconnect()
            return ToolOutput.error(f"{label} failed: {_describe(exc)}; the connection is restarted on the next call")
        return from_mcp_result(result, trusted=self.spec.trusted)

    # -- the tool list ------------------------------------------------------------------------
    async def _on_message(self, message: Any) -> None:
        method = getattr(message, "method", None) or getattr(getattr(message, "root", None), "method", None)
        if method == "notifications/tools/list_changed" and self._client is not None:
            asyncio.get_running_loop().create_task(self._relist_quietly(self._client))

    async def _on_listen_event(self, client: Any) -> None:
        await self._relist_quietly(client)

    async def _relist_quietly(self, client: Any) -> None:
        try:
            await self._relist(client)
        except Exception as exc:  # noqa: BLE001 - keep the old list; the next change tries again
            warnings.warn(f"MCP server {self.name}: re-listing tools failed: {_describe(exc)}", stacklevel=1)

    async def _relist(self, client: Any) -> None:
        listed: list[Any] = []
        cursor = None
        for _ in range(100):  # a server that pages forever cannot hang us
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        self._absorb(listed)

    def _absorb(self, listed: list[Any]) -> None:
        """Rebuild the tools from a listing; bump the version when anything changed."""
        import json

        schemas = {t.name: (t.description or "", json.dumps(t.input_schema, sort_keys=True)) for t in listed}
        if schemas == self._schemas:
            return
        tools: dict[str, McpTool] = {}
        problems: list[str] = []
        for remote in listed:
            old = next((t for t in self._tools.values() if t.remote_name == remote.name), None)
            if old is not None and self._schemas.get(remote.name) == schemas[remote.name]:
                tools[old.name] = old
                continue
            try:
                made = self._make_tool(remote, taken=tools)
            except ToolDefinitionError as exc:
                problems.append(f"{self.name}: tool {remote.name!r} left out: {exc.message}")
                continue
            tools[made.name] = made
        for line in problems:
            if line not in self.problems:
                warnings.warn(line, stacklevel=1)
        self._tools, self._schemas, self.problems = tools, schemas, problems
        self.tools_version += 1

    def _make_tool(self, remote: Any, *, taken: dict[str, McpTool]) -> McpTool:
        name = _tool_name(self.name, remote.name)
        if name in taken:
            raise ToolDefinitionError(f"its name clashes with {taken[name].remote_name!r} after cleaning ({name})")
        schema = remote.input_schema
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise ToolDefinitionError(f"its input schema must be a JSON object schema, got {str(schema)[:120]}")
        annotations = getattr(remote, "annotations", None)
        destructive = bool(annotations and annotations.destructive_hint and not annotations.read_only_hint)
        remote_name = remote.name

        async def call_remote(_omni_context: ToolContext, **arguments: Any) -> ToolOutput:
            if isinstance(self._loop, BackgroundLoop):  # closed when the run ends, reopened on the next call
                _omni_context.state.setdefault(f"omni_agent.mcp:{id(self)}", self)
            return await self.call(remote_name, arguments)

        description = (remote.description or remote.name).strip()
        tool = McpTool(
            name=name,
            description=f"{description}\n(MCP server {self.name}, tool {remote.name})",
            parameters=dict(schema, type="object"),
            fn=call_remote,
            context_param="_omni_context",
            timeout=self.spec.timeout_s + 10,  # our own timeout answers first, then restarts the server
            risk="dangerous" if destructive else "safe",
            kind="mcp",
            reads_untrusted=not self.spec.trusted,
        )
        tool.source = self
        tool.remote_name = remote.name
        return tool


@contextlib.asynccontextmanager
async def _listening(client: Any, on_event: Any) -> AsyncIterator[None]:
    """Follow 2026-07-28 ``subscriptions/listen`` tool-list events where the server offers them."""
    task: asyncio.Task[None] | None = None

    async def listen() -> None:
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    await on_event(client)
        except Exception:  # noqa: BLE001 - older protocol or no listen support: notifications cover it
            return

    if _modern(client):
        task = asyncio.get_running_loop().create_task(listen())
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _modern(client: Any) -> bool:
    try:
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        return client.protocol_version in MODERN_PROTOCOL_VERSIONS
    except Exception:  # noqa: BLE001
        return False


def _tool_name(server: str, remote: str) -> str:
    """``<server>__<tool>``, cleaned to our tool-name rules and at most 64 characters."""
    clean = re.sub(r"[^A-Za-z0-9_.\-]+", "_", remote).strip("_") or "tool"
    name = f"{server}{_SEPARATOR}{clean}"
    if len(name) > 64:
        digest = hashlib.sha1(remote.encode()).hexdigest()[:6]
        name = f"{name[:57]}_{digest}"
    if not TOOL_NAME_RE.fullmatch(name):
        raise ToolDefinitionError(f"cannot make a valid tool name from {remote!r}")
    return name


def _errlog() -> Any:
    """Where the server's stderr goes: ours, or the real one when sys.stderr is not a file
    (a notebook, a captured test runner), which a subprocess cannot write to."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (OSError, ValueError, AttributeError):
            continue
    return open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def _describe(exc: BaseException) -> str:
    group = getattr(exc, "exceptions", None)  # an ExceptionGroup from anyio's task groups
    if isinstance(group, (list, tuple)) and group:
        return "; ".join(_describe(e) for e in group[:3])
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_OPEN: list[McpToolset] = []


@atexit.register
def _close_all() -> None:
    for toolset in list(_OPEN):
        toolset.close()


def connect_toolset(spec: str | McpServerSpec, **options: Any) -> McpToolset:
    """Connect to a server synchronously and list its tools (``load_toolsets``' ``mcp:`` sets).
    Stays connected until the process exits (or ``close()``). Raises UserError when it cannot."""
    server = spec if isinstance(spec, McpServerSpec) else parse_server_spec(spec, **options)
    toolset = McpToolset(server)
    try:
        toolset.start_sync()
    except (ToolExecutionError, TimeoutError) as exc:
        raise UserError(str(exc)) from exc
    _OPEN.append(toolset)
    return toolset


def load_mcp_toolset(spec: str, options: dict[str, Any]) -> McpToolset:
    """The toolset for ``mcp:<spec>`` in a tool-set list. ``options``: ``mcp_trusted`` (True, or
    a list of server names), ``mcp_timeout_s``, ``mcp_env`` (extra environment for stdio)."""
    server = parse_server_spec(spec)
    trusted = options.get("mcp_trusted", False)
    fields: dict[str, Any] = {
        "trusted": trusted is True or (isinstance(trusted, (list, tuple, set)) and server.name in trusted),
        "env": dict(options.get("mcp_env") or {}),
    }
    if options.get("mcp_timeout_s") is not None:
        fields["timeout_s"] = float(options["mcp_timeout_s"])
    return connect_toolset(server.model_copy(update=fields))


@contextlib.asynccontextmanager
async def mcp_tools(
    server: str | McpServerSpec,
    *,
    name: str | None = None,
    trusted: bool = False,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> AsyncIterator[McpToolset]:
    """Connect to an MCP server for the ``async with`` block and yield its toolset (an iterable
    of tools and a tool group: ``Agent(model, tools=[toolset])`` follows tool-list changes).
    The session lives in the block's own event loop: no thread hop per call."""
    options: dict[str, Any] = {"trusted": trusted, "timeout_s": timeout_s, "env": env or {}}
    if name:
        options["name"] = name
    spec = server if isinstance(server, McpServerSpec) else parse_server_spec(server, **options)
    toolset = McpToolset(spec, loop=CallerLoop(asyncio.get_running_loop()))
    try:
        await toolset.start()
    except ToolExecutionError as exc:
        raise UserError(exc.message) from exc
    try:
        yield toolset
    finally:
        await toolset.aclose()
