"""Benchmark: the server's own cost per chat completion (HTTP, JSON, request conversion, parsing).

A no-op backend answers instantly with a fixed Qwen tool call (so the parser and the
``tool_calls`` conversion run); the app is served by uvicorn on 127.0.0.1 and one keep-alive
client sends requests one after another: 3 messages, 3 tools. Measured per request:

* server: from the first byte of the request reaching the ASGI app to the last byte of the
  response leaving it (a timing wrapper around the app) -- the server's cost, target <= 2 ms median;
* server CPU: CPU seconds the server's process used per request (from /proc, the server runs in
  a child process), which other jobs on a busy machine cannot inflate;
* round trip: the client's view (adds the client library and the loopback socket).

Both for a whole answer and for a streamed one (SSE, ``include_usage``). Wall-clock figures on a
shared machine include time spent waiting for a core; the CPU figure does not.

Run: ``.venv/bin/python evals/perf/bench_serve_overhead.py [--requests N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, AsyncIterator

from omni_agent.machine import describe_machine
from omni_agent.models.base import ModelChunk, ModelInfo, ModelRequest, ModelResponse, Usage
from omni_agent.serve.backend import AudioChunk

ANSWER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'


class NoOpBackend:
    """Answers every request at once with the same call (no model work)."""

    info = ModelInfo(name="noop", backend="noop")

    async def stream(self, request: ModelRequest, *, session_id: str | None = None) -> AsyncIterator[ModelChunk]:
        yield ModelChunk(text=ANSWER)
        yield ModelChunk(response=ModelResponse(text=ANSWER, usage=Usage(prompt_tokens=50, completion_tokens=20), finish_reason="stop"))

    async def speak_stream(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        if False:  # pragma: no cover - never speaks
            yield

    async def aclose(self) -> None:
        return None


class Timed:
    """ASGI wrapper: seconds from the request's arrival to the response's last body chunk."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.samples: list[float] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.samples.append(time.perf_counter() - t0)

        await self.app(scope, receive, timed_send)


BODY = {
    "model": "noop",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What's the weather in Paris for two days?"},
        {"role": "assistant", "content": "Let me check."},
    ],
    "tools": [
        {"type": "function", "function": {"name": name, "description": "A tool.", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"]}}}
        for name in ("get_weather", "get_time", "get_news")
    ],
    "max_tokens": 64,
}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_server() -> None:
    """Runs in the child: serve the timed no-op app, print the port, report timings on stdin EOF."""
    from omni_agent.serve.app import create_app
    from omni_agent.serve.server import BackgroundServer

    timed = Timed(create_app(NoOpBackend()))
    server = BackgroundServer(timed).start()
    print(server.port, flush=True)
    for line in sys.stdin:
        if line.strip() == "samples":
            print(json.dumps(timed.samples), flush=True)
            timed.samples.clear()
    server.stop()


async def client_run(base_url: str, n: int, *, stream: bool) -> list[float]:
    import httpx

    body = {**BODY, "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {})}
    trips: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            if stream:
                async with client.stream("POST", base_url + "/chat/completions", json=body) as r:
                    async for _ in r.aiter_lines():
                        pass
            else:
                r = await client.post(base_url + "/chat/completions", json=body)
                if r.json()["choices"][0]["finish_reason"] != "tool_calls":
                    raise SystemExit(f"unexpected answer: {r.text}")
            trips.append(time.perf_counter() - t0)
    return trips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_server()
        return
    proc = subprocess.Popen([sys.executable, __file__, "--child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        base_url = f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"
        print(f"machine: {describe_machine()}")
        for stream in (False, True):
            asyncio.run(client_run(base_url, 20, stream=stream))  # warm-up
            proc.stdin.write("samples\n")
            proc.stdin.flush()
            proc.stdout.readline()
            cpu0 = cpu_seconds(proc.pid)
            trips = asyncio.run(client_run(base_url, args.requests, stream=stream))
            cpu = (cpu_seconds(proc.pid) - cpu0) / args.requests
            proc.stdin.write("samples\n")
            proc.stdin.flush()
            server_s = json.loads(proc.stdout.readline())
            label = "streamed (SSE)" if stream else "whole answer "
            print(f"{label}: server CPU {cpu * 1000:.2f} ms/request; server wall {statistics.median(server_s) * 1000:.2f} ms median "
                  f"(p90 {sorted(server_s)[int(0.9 * len(server_s))] * 1000:.2f}); round trip {statistics.median(trips) * 1000:.2f} ms "
                  f"median; {args.requests} requests (target: server <= 2 ms)")
    finally:
        proc.stdin.close()
        proc.wait(30)


if __name__ == "__main__":
    main()
