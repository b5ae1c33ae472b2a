"""Console security: the access token guards the page, the API and the socket; the socket's
Origin must be the console's own. Real server on 127.0.0.1, real HTTP and WebSocket clients,
and real Chromium for the cross-site attempt."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def _ws_url(console: Any, token: str | None) -> str:
    base = console.base.replace("http://", "ws://") + "/ws"
    return base + (f"?token={token}" if token else "")


def test_page_and_api_need_the_token(start_console):
    console = start_console(["hi"])
    no_token = httpx.get(console.base + "/")
    assert no_token.status_code == 403 and "access token" in no_token.text
    assert httpx.get(console.base + "/api/runs").status_code == 403
    assert httpx.get(console.base + "/?token=wrong" + console.token[:4]).status_code == 403
    assert httpx.get(console.base + "/runs/x/meta.json").status_code == 403
    with httpx.Client() as client:
        page = client.get(console.url)
        assert page.status_code == 200 and "omni-agent console" in page.text
        assert client.get(console.base + "/api/runs").status_code == 200  # the cookie carries it now
    assert httpx.get(console.base + "/api/info", headers={"Authorization": f"Bearer {console.token}"}).status_code == 200
    assert httpx.get(console.base + "/static/console.js").status_code == 200  # assets hold no data


def test_socket_refuses_other_origins_and_missing_tokens(start_console):
    console = start_console(["hi"])
    own = console.base
    with pytest.raises(InvalidStatus) as other:
        connect(_ws_url(console, console.token), additional_headers={"Origin": "http://evil.example"})
    assert other.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        connect(_ws_url(console, None), additional_headers={"Origin": own})
    with pytest.raises(InvalidStatus):
        connect(_ws_url(console, console.token))  # no Origin at all
    with connect(_ws_url(console, console.token), additional_headers={"Origin": own}) as ws:
        first = json.loads(ws.recv(timeout=5))
        assert first["type"] == "state" and first["state"] == "idle"
        ws.send("{not json")
        assert "bad message" in json.loads(ws.recv(timeout=5))["message"]
        ws.send(json.dumps({"type": "start", "instruction": ""}))
        assert "bad message" in json.loads(ws.recv(timeout=5))["message"]
        ws.send(json.dumps({"type": "approve", "call_id": "nope", "approve": True}))
        assert "no call 'nope'" in json.loads(ws.recv(timeout=5))["message"]
    assert console.server.session.state == "idle" and console.model.requests == []


class _Site(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"<!doctype html><title>elsewhere</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_a_page_from_another_site_cannot_open_the_socket(start_console, console_page):
    console = start_console(["hi"])
    page = console_page
    page.goto(console.base + "/")
    assert "needs the access token" in page.inner_text("body")

    other = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
        outcome = page.evaluate(
            """(url) => new Promise((done) => { const ws = new WebSocket(url);
            ws.onopen = () => done('open'); ws.onclose = () => done('closed'); })""",
            _ws_url(console, console.token),
        )
    finally:
        other.shutdown()
    assert outcome == "closed"
    assert console.server.hub.peers == set()
