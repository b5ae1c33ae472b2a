"""Shell tool overhead: spawning a command with and without the bubblewrap sandbox, and one
command in a persistent session.

Each figure is one ``await tool.call({"command": "true"})`` as the agent loop makes it (spawn,
output capture, result text), so it is the tool's fixed cost per call; ``true`` itself takes
microseconds. Raw ``subprocess.run`` figures are printed beside them to show what is process
start-up and what is the tool. Prints median / p95 in milliseconds and the machine.

    .venv/bin/python evals/perf/bench_shell_spawn.py [--iterations 100]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omni_agent.tool import ToolContext  # noqa: E402
from omni_agent.tools.sandbox import SandboxLimits, bwrap_argv  # noqa: E402
from omni_agent.tools.shell import shell_tools  # noqa: E402
from omni_agent.machine import describe_machine  # noqa: E402


def _machine() -> str:
    bwrap = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip() if shutil.which("bwrap") else "no bwrap"
    return describe_machine(bwrap)


def _stats(name: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"  {name:<46} median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms   (n={len(ms)})")


async def _time_async(fn: Callable[[], Awaitable[object]], n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


def _time_sync(fn: Callable[[], object], n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


async def main(iterations: int) -> None:
    print(f"machine: {_machine()}")
    ws = Path(tempfile.mkdtemp(prefix="bench-shell-"))
    try:
        [plain] = shell_tools(workspace=ws)
        [boxed] = shell_tools(workspace=ws, sandbox="bubblewrap")
        [session] = shell_tools(workspace=ws, persistent=True)
        [boxed_session] = shell_tools(workspace=ws, sandbox="bubblewrap", persistent=True)
        ctx, boxed_ctx = ToolContext(run_id="bench"), ToolContext(run_id="bench-boxed")

        async def check(tool_call: Awaitable[object]) -> None:
            out = await tool_call
            assert "[exit code 0]" in out.text, out.text  # type: ignore[attr-defined]

        print("\nraw process start (subprocess.run, for reference):")
        _stats("bash -c true", _time_sync(lambda: subprocess.run(["bash", "-c", "true"], check=True), iterations))
        argv = bwrap_argv(["bash", "-c", "true"], workspace=ws, cwd=ws, env={"PATH": "/usr/bin:/bin"},
                          limits=SandboxLimits(), bwrap="bwrap", prlimit="prlimit")  # fmt: skip
        _stats("bwrap + prlimit + bash -c true", _time_sync(lambda: subprocess.run(argv, check=True), iterations))

        print("\nshell tool, one call (await tool.call({'command': 'true'})):")
        _stats("sandbox='none'", await _time_async(lambda: check(plain.call({"command": "true"})), iterations))
        _stats("sandbox='bubblewrap'", await _time_async(lambda: check(boxed.call({"command": "true"})), iterations))
        _stats("persistent session, sandbox='none'",
               await _time_async(lambda: check(session.call({"command": "true"}, ctx)), iterations))  # fmt: skip
        _stats("persistent session, sandbox='bubblewrap'",
               await _time_async(lambda: check(boxed_session.call({"command": "true"}, boxed_ctx)), iterations))  # fmt: skip
        big = "seq 1 200000"
        _stats("sandbox='none', 1.3 MB output capped to 16 kB",
               await _time_async(lambda: check(plain.call({"command": big})), max(10, iterations // 5)))  # fmt: skip
    finally:
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    asyncio.run(main(parser.parse_args().iterations))
