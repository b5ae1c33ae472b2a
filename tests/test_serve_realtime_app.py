"""``omni-agent serve``'s app mounts the Realtime route: one served model answers Chat Completions
and Realtime, the API key works from a browser (subprotocol), and Realtime responses show in
the server's own Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import httpx
import pytest


def _serve(app: Any) -> tuple[Any, int]:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            pytest.fail("the server did not start in 30 s")
        time.sleep(0.02)
    return server, sock.getsockname()[1]


def test_served_app_mounts_realtime_with_the_key_and_counts_it(forced_qwen3) -> None:  # noqa: ANN001
    import websockets

    from omni_agent.serve.app import create_app
    from omni_agent.serve.backend import SerialBackend

    class SharedModelBackend(SerialBackend):
        async def aclose(self) -> None:  # the tiny model is the session's fixture: others use it after us
            pass

    app = create_app(SharedModelBackend(forced_qwen3(["Hello there."])), api_key="sekret")
    server, port = _serve(app)
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=tiny"

    async def scenario() -> str:
        with pytest.raises(websockets.InvalidStatus):  # no key: refused at the handshake
            async with websockets.connect(url):
                pass
        protocols = ["realtime", "openai-insecure-api-key.sekret"]
        async with websockets.connect(url, subprotocols=protocols) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}))
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            text = ""
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if event["type"] == "response.output_text.delta":
                    text += event["delta"]
                elif event["type"] == "response.done":
                    return text

    try:
        assert asyncio.run(scenario()) == "Hello there."
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/metrics").status_code == 401
        body = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer sekret"}).text
        counted = [line for line in body.splitlines() if line.startswith("omni_requests_total{") and 'endpoint="realtime"' in line]
        assert counted and float(counted[0].split()[-1]) == 1.0
        in_flight = [line for line in body.splitlines() if line.startswith('omni_requests_in_flight{endpoint="realtime"}')]
        assert in_flight and float(in_flight[0].split()[-1]) == 0.0
        ttft = [line for line in body.splitlines() if line.startswith("omni_time_to_first_token_seconds_count")]
        assert ttft and float(ttft[0].split()[-1]) >= 1.0
    finally:
        server.should_exit = True
