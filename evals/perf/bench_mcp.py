"""Per-call overhead of MCP tools: stdio and streamable HTTP against a direct call.

The same ``echo`` tool three ways, each as the agent loop calls it (``await tool.call(args)``):
  direct  our own @tool function in this process;
  sdk     the SDK's own client calling the stdio demo server, no omni-agent code (for reference);
  stdio   the demo server (tests/apps/mcp_demo_server.py, the SDK's MCPServer) as a subprocess,
          mounted by load_toolsets (the session in omni-agent's MCP thread: one hop per call);
  stdio-async-with  the same through ``async with mcp_tools(...)`` (the session in the caller's loop);
  http    the same server over streamable HTTP on 127.0.0.1.
Overhead = median(MCP call) - median(direct call). Target: <= 3 ms over stdio on the 2-core
machine. Prints median / p95 in milliseconds and the machine.

    .venv/bin/python evals/perf/bench_mcp.py [--iterations 300]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from omni_agent.machine import describe_machine  # noqa: E402

DEMO = ROOT / "tests" / "apps" / "mcp_demo_server.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _time_calls(tool: Any, iterations: int) -> list[float]:
    for _ in range(20):  # warm up: imports, connections, caches
        await tool.call({"text": "warm"})
    times = []
    for i in range(iterations):
        t = time.perf_counter()
        out = await tool.call({"text": f"ping {i}"})
        times.append((time.perf_counter() - t) * 1000)
        if out.is_error:
            raise RuntimeError(out.text)
    return times


async def _time_async_with(iterations: int) -> list[float]:
    from omni_agent.mcp import mcp_tools

    async with mcp_tools(f"stdio:{sys.executable} {DEMO}") as toolset:
        return await _time_calls(toolset.tools()[0], iterations)


async def _time_sdk_calls(iterations: int) -> list[float]:
    """The SDK's own client in the caller's loop (no omni-agent code): what MCP itself costs."""
    from mcp import Client, StdioServerParameters

    async with Client(StdioServerParameters(command=sys.executable, args=[str(DEMO)])) as client:
        for _ in range(20):
            await client.call_tool("echo", {"text": "warm"})
        times = []
        for i in range(iterations):
            t = time.perf_counter()
            await client.call_tool("echo", {"text": f"ping {i}"})
            times.append((time.perf_counter() - t) * 1000)
    return times


def _wait_http(port: int, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the HTTP demo server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()

    from omni_agent import tool
    from omni_agent.mcp import connect_toolset

    @tool
    def echo(text: str) -> str:
        """Repeat the text."""
        return f"echo: {text}"

    results: dict[str, list[float]] = {"direct": asyncio.run(_time_calls(echo, args.iterations))}
    results["sdk"] = asyncio.run(_time_sdk_calls(args.iterations))

    stdio = connect_toolset(f"stdio:{sys.executable} {DEMO}")
    results["stdio"] = asyncio.run(_time_calls(stdio.tools()[0], args.iterations))
    stdio.close()
    results["stdio-async-with"] = asyncio.run(_time_async_with(args.iterations))

    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(DEMO), "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(port, proc)
        http = connect_toolset(f"http://127.0.0.1:{port}/mcp")
        results["http"] = asyncio.run(_time_calls(http.tools()[0], args.iterations))
        http.close()
    finally:
        proc.terminate()
        proc.wait(10)

    print(f"MCP tool call, {args.iterations} calls each ({describe_machine()})")
    base = statistics.median(results["direct"])
    for name, times in results.items():
        median = statistics.median(times)
        p95 = statistics.quantiles(times, n=20)[-1]
        extra = "" if name == "direct" else f"  overhead {median - base:6.2f} ms"
        print(f"  {name:16s} median {median:6.2f} ms  p95 {p95:6.2f} ms{extra}")
    stdio_overhead = statistics.median(results["stdio"]) - base
    print(f"stdio overhead {stdio_overhead:.2f} ms: {'meets' if stdio_overhead <= 3 else 'misses'} the <= 3 ms target")


if __name__ == "__main__":
    main()
