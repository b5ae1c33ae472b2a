"""``omni-agent serve`` as a real subprocess: it binds 127.0.0.1, requires its API key, and on
Ctrl-C finishes the request in flight before it exits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_requires_its_key_and_drains_on_ctrl_c(tiny_qwen3_omni_dir: Path) -> None:
    import httpx

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "omni_agent.cli", "serve", f"qwen-omni:{tiny_qwen3_omni_dir}", "--port", str(port),
         "--api-key", "k1", "--name", "tiny"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not come up: " + (proc.stdout.read() if proc.poll() is not None else ""))
        assert httpx.get(base + "/v1/models").status_code == 401
        headers = {"Authorization": "Bearer k1"}
        assert httpx.get(base + "/v1/models", headers=headers).json()["data"][0]["id"] == "tiny"

        answer: dict = {}

        def long_request() -> None:
            body = {"model": "tiny", "messages": [{"role": "user", "content": "a long story"}], "max_tokens": 120}
            answer["response"] = httpx.post(base + "/v1/chat/completions", json=body, headers=headers, timeout=120)

        client = threading.Thread(target=long_request)
        client.start()
        time.sleep(1.0)  # the request is being generated
        proc.send_signal(signal.SIGINT)
        client.join(120)
        assert proc.wait(60) == 0
        response = answer["response"]
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1
    finally:
        if proc.poll() is None:
            proc.kill()
