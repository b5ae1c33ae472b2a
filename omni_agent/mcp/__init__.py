"""Model Context Protocol: mount MCP servers' tools (client) and serve ours (server).

Needs the ``mcp`` extra (``pip install 'omni-agent[mcp]'``, the SDK 2.x). Importing this package
is light; the SDK loads when a server is connected or served.
"""

from .client import McpTool, McpToolset, connect_toolset, mcp_tools
from .spec import McpServerSpec, parse_server_spec

__all__ = ["McpServerSpec", "McpTool", "McpToolset", "connect_toolset", "mcp_tools", "parse_server_spec"]
