"""Benchmark: the Realtime WebSocket's own cost (protocol, JSON, VAD, audio encoding; no model work).

The ``/v1/realtime`` router runs on uvicorn on 127.0.0.1 over a backend that answers at once with
canned text and 0.5 s of silence per spoken sentence, and a ``websockets`` client measures:

* event round trip: ``session.update`` -> ``session.updated``;
* audio in: one 100 ms PCM16 chunk through base64, the 24 -> 16 kHz resampler and server VAD
  (200 appends, then one round trip; the baseline round trip subtracted);
* a whole response: ``response.create`` -> ``response.done`` for a three-sentence answer, text
  only and spoken (PCM16 encoding of 1.5 s of audio, both delta names).

Run: ``.venv/bin/python evals/perf/bench_realtime_overhead.py [--iterations N]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import statistics
import threading
import time
from typing import Any, AsyncIterator

import numpy as np

from omni_agent.machine import describe_machine
from omni_agent.models.base import ModelChunk, ModelInfo, ModelRequest, ModelResponse
from omni_agent.serve.backend import AudioChunk

ANSWER = "The timer is set. It runs for five minutes. I will tell you when it ends."


class InstantBackend:
    """A ServeBackend without a model: the cost measured is the server's alone."""

    info = ModelInfo(name="instant", backend="bench")

    async def stream(self, request: ModelRequest, *, session_id: str | None = None) -> AsyncIterator[ModelChunk]:
        for word in ANSWER.split(" "):
            yield ModelChunk(text=word + " ")
        yield ModelChunk(response=ModelResponse(text=ANSWER))

    async def speak_stream(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        yield AudioChunk(samples=np.zeros(12_000, dtype=np.float32), rate=24_000)

    async def aclose(self) -> None:
        pass


def start_server() -> tuple[Any, int]:
    import uvicorn
    from fastapi import FastAPI

    from omni_agent.serve.realtime import realtime_router

    app = FastAPI()
    app.include_router(realtime_router(InstantBackend(), api_key=None, metrics=None))
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that name it, and without
    # it Nagle + delayed ACKs stall back-to-back events by 40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, sock.getsockname()[1]


async def until(ws: Any, kind: str) -> None:
    while json.loads(await ws.recv())["type"] != kind:
        pass


async def round_trip(ws: Any) -> float:
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "x"}}))
    await until(ws, "session.updated")
    return time.perf_counter() - t0


async def measure(port: int, iterations: int) -> dict[str, list[float]]:
    import websockets

    chunk = base64.b64encode((np.random.default_rng(0).normal(0, 0.01, 2400) * 32767).astype("<i2").tobytes()).decode()
    out: dict[str, list[float]] = {"round trip": [], "append 100 ms": [], "text response": [], "spoken response": []}
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime", max_size=None) as ws:
        await until(ws, "session.created")
        for _ in range(iterations):
            out["round trip"].append(await round_trip(ws))
        base = statistics.median(out["round trip"])
        for _ in range(max(iterations // 20, 3)):
            t0 = time.perf_counter()
            for _ in range(200):
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await round_trip(ws)
            out["append 100 ms"].append((time.perf_counter() - t0 - base) / 200)
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        await ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
        await until(ws, "session.updated")
        for modality, key in ((["text"], "text response"), (["audio"], "spoken response")):
            for _ in range(max(iterations // 10, 5)):
                t0 = time.perf_counter()
                await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": modality,
                                                                                   "conversation": "none"}}))  # fmt: skip
                await until(ws, "response.done")
                out[key].append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    server, port = start_server()
    results = asyncio.run(measure(port, args.iterations))
    server.should_exit = True
    print(describe_machine())
    for name, values in results.items():
        ms = sorted(v * 1000 for v in values)
        print(f"{name:16s} median {statistics.median(ms):7.3f} ms   p95 {ms[int(len(ms) * 0.95) - 1]:7.3f} ms   (n={len(ms)})")


if __name__ == "__main__":
    main()
