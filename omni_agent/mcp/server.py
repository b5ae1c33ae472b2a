"""Our tools served over MCP (stdio or streamable HTTP), for any MCP client.

Each call goes through the same pipeline as in the agent loop (:func:`omni_agent.execution.execute_calls`):
our JSON Schema validation (with the same lenient coercion), the policy, then the tool with its
timeout. The policy's "ask" becomes an MCP elicitation when the client declared the capability
(a yes/no form; a 2026-07-28 connection gets an ``InputRequiredResult`` and the client's retry
carries the answer; older connections get an ``elicitation/create`` request mid-call); a client
that cannot be asked gets the denial. Images (browser and desktop screenshots) go out as MCP
image content.

The server keeps one run's worth of state for its whole life: tools share ``ToolContext.state``
(the browser session), and once a tool has read untrusted content (a web page), shell, file
writing and JavaScript calls ask first, as in a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import json
from pathlib import Path
from typing import Any

from mcp.server.elicitation import AcceptedElicitation, render_elicitation_schema
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import (
    CallToolResult,
    ElicitRequest,
    ElicitRequestFormParams,
    InputRequiredResult,
    TextContent,
    ToolAnnotations,
)
from mcp_types import Tool as McpToolInfo
from pydantic import BaseModel, Field

from ..execution import execute_calls
from ..messages import TextPart, ToolCall
from ..policy import DefaultPolicy, Policy, PolicyState
from ..registry import ToolRegistry
from ..tool import Tool, ToolContext
from .results import to_mcp_result

__all__ = ["ToolServer"]

_CONFIRM_KEY = "omni_agent_confirm"
_INPUT_REQUIRED_VERSION = "2026-07-28"


class _Approval(BaseModel):
    approve: bool = Field(description="Run this call?")


class _InputNeeded(BaseException):
    """Raised by the approver on a 2026 connection to end the call with an InputRequiredResult.
    A BaseException so the policy's fail-closed ``except Exception`` does not swallow it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ToolServer:
    """Our tools behind an MCP server (``self.mcp``, an SDK ``MCPServer``)."""

    def __init__(
        self,
        tools: list[Tool],
        *,
        workspace: str | Path | None = None,
        policy: Policy | None = None,
        name: str = "omni-agent",
    ) -> None:
        self.registry = ToolRegistry(tools)
        self.policy: Policy = policy or DefaultPolicy()
        self.workspace = Path(workspace or Path.cwd()).resolve()
        self.state: dict[str, Any] = {}
        self.untrusted_seen = False
        self._steps = itertools.count(1)
        self.mcp = _SdkServer(self, name=name)

    # -- MCP handlers -------------------------------------------------------------------------
    def list_tools(self) -> list[McpToolInfo]:
        return [
            McpToolInfo(
                name=t.name,
                description=t.description,
                input_schema=t.parameters,
                annotations=ToolAnnotations(
                    destructive_hint=True if t.risk == "dangerous" else None,
                    open_world_hint=True if t.reads_untrusted else None,
                ),
            )
            for t in self.registry
        ]

    def input_schema(self, name: str) -> dict[str, Any] | None:
        tool = self.registry.get(name)
        return None if tool is None else tool.parameters

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None) -> Any:
        """Validate, authorize (asking through elicitation) and run one call."""
        step = next(self._steps)
        call = ToolCall(id=f"mcp-{step}", name=name, arguments=dict(arguments or {}))
        approver = _ElicitingApprover(context)
        try:
            outcomes = await execute_calls(
                [call],
                step=step,
                registry=self.registry,
                policy=self.policy,
                approver=approver,
                policy_state=PolicyState(run_id="mcp-server", step=step, untrusted_content_seen=self.untrusted_seen),
                context_factory=lambda call_id: self._context(step, call_id),
                emit=_ignore,
            )
        except _InputNeeded as need:
            return approver.input_required(call, need.message)
        outcome = outcomes[0]
        if outcome.brought_untrusted:
            self.untrusted_seen = True
        if outcome.output is not None:
            return to_mcp_result(outcome.output)
        text = "\n".join(p.text for p in outcome.result.content if isinstance(p, TextPart))
        return CallToolResult(content=[TextContent(text=text)], is_error=True)

    def _context(self, step: int, call_id: str) -> ToolContext:
        return ToolContext(
            workspace=self.workspace,
            run_id="mcp-server",
            step=step,
            call_id=call_id,
            state=self.state,
            untrusted_content_seen=self.untrusted_seen,
        )

    # -- running --------------------------------------------------------------------------------
    async def serve(self, transport: str = "stdio", *, host: str = "127.0.0.1", port: int = 8000, path: str = "/mcp") -> None:
        """Serve until the client goes away (stdio) or the process is stopped (HTTP)."""
        try:
            if transport == "stdio":
                await self.mcp.run_stdio_async()
            else:
                await self.mcp.run_streamable_http_async(host=host, port=port, streamable_http_path=path)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close what the tools opened (the browser session, sandboxes) like the end of a run."""
        for value in list(self.state.values()):
            closer = getattr(value, "aclose", None) or getattr(value, "close", None)
            if closer is None:
                continue
            with contextlib.suppress(Exception):
                result = closer()
                if inspect.isawaitable(result):
                    await result
        self.state.clear()


async def _ignore(_event: Any) -> None:
    return None


class _ElicitingApprover:
    """The policy's "ask" as an MCP elicitation; no elicitation capability means no."""

    def __init__(self, context: Context | None) -> None:
        self.context = context

    async def __call__(self, call: ToolCall, reason: str) -> bool:
        ctx = self.context
        if ctx is None or not _can_elicit(ctx):
            return False
        message = _question(call, reason)
        if _uses_input_required(ctx):
            answer = (ctx.input_responses or {}).get(_CONFIRM_KEY)
            if answer is None or ctx.request_state != _digest(call):
                raise _InputNeeded(message)
            content = getattr(answer, "content", None) or {}
            return getattr(answer, "action", None) == "accept" and content.get("approve") is True
        result = await ctx.elicit(message, _Approval)
        return isinstance(result, AcceptedElicitation) and result.data.approve

    def input_required(self, call: ToolCall, message: str) -> InputRequiredResult:
        request = ElicitRequest(
            params=ElicitRequestFormParams(message=message, requested_schema=render_elicitation_schema(_Approval))
        )
        return InputRequiredResult(input_requests={_CONFIRM_KEY: request}, request_state=_digest(call))


def _can_elicit(ctx: Context) -> bool:
    caps = ctx.client_capabilities
    elicitation = getattr(caps, "elicitation", None) if caps is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _uses_input_required(ctx: Context) -> bool:
    version = ctx.protocol_version
    return version is not None and version >= _INPUT_REQUIRED_VERSION  # ISO dates compare as text


def _question(call: ToolCall, reason: str) -> str:
    args = json.dumps(call.arguments, ensure_ascii=False)
    if len(args) > 400:
        args = args[:380] + "…"
    return f"Allow {call.name}({args})? Why this asks: {reason}"


def _digest(call: ToolCall) -> str:
    """Ties an answer to the call it was given for (same tool, same arguments)."""
    raw = json.dumps([call.name, call.arguments], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class _SdkServer(MCPServer):
    """The SDK's server with its tool handling replaced by a :class:`ToolServer`'s."""

    def __init__(self, owner: ToolServer, *, name: str) -> None:
        super().__init__(name=name, instructions="omni-agent tools: shell, files, browser, desktop.", log_level="WARNING")
        self._owner = owner

    async def list_tools(self) -> list[McpToolInfo]:  # type: ignore[override]
        return self._owner.list_tools()

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        return self._owner.input_schema(name)

    async def call_tool(  # type: ignore[override]
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> CallToolResult | InputRequiredResult:
        if name not in self._owner.registry:
            names = ", ".join(self._owner.registry.names)
            return CallToolResult(content=[TextContent(text=f"unknown tool {name!r}; tools: {names}")], is_error=True)
        return await self._owner.call_tool(name, arguments, context)

