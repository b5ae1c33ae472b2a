"""A real MCP server built with the SDK's MCPServer (FastMCP in mcp 1.x), for the client tests.

    python tests/apps/mcp_demo_server.py                 # stdio
    python tests/apps/mcp_demo_server.py --http PORT     # streamable HTTP on 127.0.0.1:PORT/mcp
    python tests/apps/mcp_demo_server.py --sse PORT      # the older SSE transport on 127.0.0.1:PORT/sse
    ... --bad-schema                                     # also lists a tool with a broken schema

Tools: echo (text), add (structured), swatch (an image), fail (a tool error), crash (the process
exits mid-call), hang (sleeps), grow (adds a tool and announces tools/list_changed).
"""

from __future__ import annotations

import io
import os
import sys
import time

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("demo", log_level="CRITICAL")  # tracebacks of the failing tools stay quiet


@server.tool()
async def echo(text: str) -> str:
    """Repeat the text (async: the SDK runs sync tools in a worker thread, a cost bench_mcp.py
    should not count)."""
    return f"echo: {text}"


@server.tool()
def add(a: int, b: int) -> dict[str, int]:
    """Add two numbers."""
    return {"sum": a + b}


@server.tool()
def swatch(red: int, green: int, blue: int) -> Image:
    """A 32x24 image of one colour."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.new("RGB", (32, 24), (red, green, blue)).save(buf, format="PNG")
    return Image(data=buf.getvalue(), format="png")


@server.tool()
def fail(reason: str) -> str:
    """Always fails (a ToolError: the SDK hides other exceptions' messages)."""
    raise ToolError(f"cannot do that: {reason}")


@server.tool()
def crash() -> str:
    """Kills the server process mid-call."""
    os._exit(3)


@server.tool()
def pid() -> str:
    """The server's process id."""
    return str(os.getpid())


@server.tool()
def hang(seconds: float) -> str:
    """Sleeps (blocking the server) for a while."""
    time.sleep(seconds)
    return "woke up"


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds a tool named shout and tells the client the tool list changed."""

    def shout(text: str) -> str:
        """Repeat the text loudly."""
        return text.upper() + "!"

    server.add_tool(shout)
    await ctx.notify_tools_changed()  # 2026-07-28 clients: a subscriptions/listen event
    if (ctx.protocol_version or "") < "2026-07-28":  # older clients: the list_changed notification
        await ctx.request_context.session.send_tool_list_changed()
    return "added shout"


if "--bad-schema" in sys.argv:

    @server.tool()
    def broken(x: int) -> str:
        """A tool whose schema is broken below."""
        return str(x)

    server._tool_manager.get_tool("broken").parameters = {  # noqa: SLF001 - a deliberately broken server
        "type": "object",
        "properties": {"x": {"type": "no-such-type"}},
    }

if __name__ == "__main__":
    if "--http" in sys.argv:
        port = int(sys.argv[sys.argv.index("--http") + 1])
        server.run("streamable-http", host="127.0.0.1", port=port)
    elif "--sse" in sys.argv:
        port = int(sys.argv[sys.argv.index("--sse") + 1])
        server.run("sse", host="127.0.0.1", port=port)
    else:
        server.run()
