"""Per-call overhead of MCP tools: stdio and streamable HTTP against a direct call.

The same ``echo`` tool five ways, each (but sdk) as the agent loop calls it (``await tool.call(args)``):
  direct  our own @tool function in this process;
  sdk     the SDK's own client calling the stdio demo server, no omni-agent code (for reference);
  stdio   the demo server (tests/apps/mcp_demo_server.py, the SDK's MCPServer) as a subprocess,
          mounted by load_toolsets (the session in omni-agent's MCP thread: one hop per call);
  stdio-async-with  the same through ``async with mcp_tools(...)`` (the session in the caller's loop);
  http    the same server over streamable HTTP on 127.0.0.1.
Overhead = median(MCP call) - median(direct call). Target: <= 3 ms over stdio on the 2-core
machine. The variants run in interleaved rounds so a busy spell on a shared machine hits them
all; prints median / p95 over all calls, the quietest round's median, the machine with its load,
and the CPU time the stdio server spends per call.

    .venv/bin/python evals/perf/bench_mcp.py [--rounds 5] [--iterations 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from omni_agent.machine import describe_machine  # noqa: E402

DEMO = ROOT / "tests" / "apps" / "mcp_demo_server.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc, clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _time_calls(call: Callable[[int], Awaitable[Any]], iterations: int) -> list[float]:
    times = []
    for i in range(iterations):
        t = time.perf_counter()
        await call(i)
        times.append((time.perf_counter() - t) * 1000)
    return times


def _tool_caller(tool: Any) -> Callable[[int], Awaitable[Any]]:
    async def call(i: int) -> Any:
        out = await tool.call({"text": f"ping {i}"})
        if out.is_error:
            raise RuntimeError(out.text)
        return out

    return call


async def _rounds(callers: dict[str, Callable[[int], Awaitable[Any]]], rounds: int, iterations: int) -> dict[str, list[list[float]]]:
    """Every variant ``rounds`` times, interleaved, so a busy spell on the machine hits them all."""
    for call in callers.values():
        for i in range(20):  # warm up: imports, connections, caches
            await call(i)
    results: dict[str, list[list[float]]] = {name: [] for name in callers}
    for _ in range(rounds):
        for name, call in callers.items():
            results[name].append(await _time_calls(call, iterations))
    return results


async def _measure(stdio: Any, http: Any, rounds: int, iterations: int) -> dict[str, list[list[float]]]:
    from mcp import Client, StdioServerParameters

    from omni_agent import tool
    from omni_agent.mcp import mcp_tools

    @tool
    def echo(text: str) -> str:
        """Repeat the text."""
        return f"echo: {text}"

    async with Client(StdioServerParameters(command=sys.executable, args=[str(DEMO)])) as client, mcp_tools(
        f"stdio:{sys.executable} {DEMO}"
    ) as in_loop:

        async def sdk_call(i: int) -> Any:
            return await client.call_tool("echo", {"text": f"ping {i}"})

        callers = {
            "direct": _tool_caller(echo),
            "sdk": sdk_call,
            "stdio": _tool_caller(stdio.tools()[0]),
            "stdio-async-with": _tool_caller(in_loop.tools()[0]),
            "http": _tool_caller(http.tools()[0]),
        }
        return await _rounds(callers, rounds, iterations)


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
    parser.add_argument("--iterations", type=int, default=100, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from omni_agent.mcp import connect_toolset

    stdio = connect_toolset(f"stdio:{sys.executable} {DEMO}")
    pid_tool = next(t for t in stdio.tools() if t.remote_name == "pid")
    server_pid = int(asyncio.run(pid_tool.call({})).text)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(DEMO), "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(port, proc)
        http = connect_toolset(f"http://127.0.0.1:{port}/mcp")
        cpu_before = _cpu_seconds(server_pid)
        results = asyncio.run(_measure(stdio, http, args.rounds, args.iterations))
        server_cpu = (_cpu_seconds(server_pid) - cpu_before) * 1000 / (args.rounds * args.iterations + 20)
        http.close()
        stdio.close()
    finally:
        proc.terminate()
        proc.wait(10)

    print(f"MCP tool call, {args.rounds} rounds x {args.iterations} calls per variant ({describe_machine()})")
    base = statistics.median(t for r in results["direct"] for t in r)
    for name, per_round in results.items():
        times = [t for r in per_round for t in r]
        median = statistics.median(times)
        p95 = statistics.quantiles(times, n=20)[-1]
        quietest = min(statistics.median(r) for r in per_round)
        extra = "" if name == "direct" else f"  overhead {median - base:6.2f} ms"
        print(f"  {name:16s} median {median:6.2f} ms  p95 {p95:6.2f} ms  quietest round {quietest:6.2f} ms{extra}")
    print(f"CPU time the stdio demo server spends per call: {server_cpu:.2f} ms (load now {os.getloadavg()[0]:.1f})")
    stdio_overhead = statistics.median(t for r in results["stdio"] for t in r) - base
    quiet = min(statistics.median(r) for r in results["stdio"]) - base
    verdict = "meets" if stdio_overhead <= 3 else "misses"
    print(f"stdio overhead {stdio_overhead:.2f} ms ({quiet:.2f} ms in the quietest round): {verdict} the <= 3 ms target")


if __name__ == "__main__":
    main()
