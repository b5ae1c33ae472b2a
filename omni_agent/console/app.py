"""The console's routes (Starlette): the page, its assets, the history API and the WebSocket.

Every route except ``/static`` wants the access token (:mod:`.auth`); the WebSocket also checks
its Origin. Messages from the page are validated (:mod:`.protocol`); a bad one gets an error
reply on that socket and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..exceptions import UserError
from . import protocol as p
from .auth import COOKIE_NAME, origin_allowed, token_from, token_matches
from .history import list_runs, resolve_inside, trajectory_json
from .hub import Peer

if TYPE_CHECKING:  # pragma: no cover
    from .server import ConsoleServer

__all__ = ["MAX_MESSAGE_BYTES", "STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).with_name("static")
MAX_MESSAGE_BYTES = 1 << 20
"""Largest message a page may send (1 MiB, as the openai-agents realtime demo caps it)."""

_NO_TOKEN = (
    "omni-agent console: this page needs the access token. Open the URL the console printed at "
    "start (it ends in ?token=...)."
)


class _TokenGate:
    """ASGI middleware: no token, no entry (static assets excepted); WebSockets from another origin refused."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope) if scope["type"] == "http" else WebSocket(scope, receive, send)
        given = token_from(request.query_params, request.cookies, request.headers)
        if scope["type"] == "websocket":
            if not token_matches(self.token, given) or not origin_allowed(request.headers.get("origin"), request.headers.get("host")):
                await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
                return
        elif not token_matches(self.token, given):
            await PlainTextResponse(_NO_TOKEN, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(console: ConsoleServer) -> Starlette:
    """Routes for a :class:`~omni_agent.console.server.ConsoleServer` (its session, hub, runs folder)."""

    async def index(request: Request) -> Response:
        response = HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))
        response.set_cookie(COOKIE_NAME, console.token, httponly=True, samesite="strict")
        response.headers["Cache-Control"] = "no-store"
        return response

    async def runs(request: Request) -> Response:
        return JSONResponse([e.model_dump(mode="json") for e in list_runs(console.runs_dir)])

    async def run_detail(request: Request) -> Response:
        try:
            return JSONResponse(trajectory_json(console.runs_dir, request.path_params["name"]))
        except UserError as exc:
            return JSONResponse({"error": exc.message}, status_code=404)

    async def run_file(request: Request) -> Response:
        try:
            path = resolve_inside(console.runs_dir, request.path_params["path"])
        except UserError as exc:
            return PlainTextResponse(exc.message, status_code=404)
        if not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path)

    async def info(request: Request) -> Response:
        return JSONResponse(console.info())

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/runs", runs),
        Route("/api/runs/{name}", run_detail),
        Route("/runs/{path:path}", run_file),
        WebSocketRoute("/ws", lambda ws: _socket(console, ws)),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await console.on_startup()
        try:
            yield
        finally:
            await console.on_shutdown()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_TokenGate, token=console.token)
    return app


async def _socket(console: ConsoleServer, websocket: WebSocket) -> None:
    await websocket.accept()
    peer = Peer(websocket)
    console.hub.add(peer)
    for message in console.session.greeting():
        peer.post(message)
    console.on_page_opened()
    pump = asyncio.create_task(peer.pump())
    try:
        while not peer.closed:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data, text = message.get("bytes"), message.get("text")
            if (data and len(data) > MAX_MESSAGE_BYTES) or (text and len(text) > MAX_MESSAGE_BYTES):
                peer.post(_error("message too large (limit 1 MiB)"))
            elif data:
                if data[0] == p.AUDIO_IN:
                    console.ptt.feed(data[1:])
            elif text:
                await _handle(console, peer, text)
    except WebSocketDisconnect:
        pass
    finally:
        console.hub.remove(peer)
        pump.cancel()


def _error(message: str) -> str:
    return p.ErrorMessage(message=message).wire()


async def _handle(console: ConsoleServer, peer: Peer, text: str) -> None:
    """One JSON message from the page; bad input is answered on this socket and changes nothing."""
    try:
        message = p.parse_client_message(text)
    except (ValidationError, ValueError) as exc:
        peer.post(_error(f"bad message: {str(exc).splitlines()[0]}"))
        return
    session = console.session
    try:
        if isinstance(message, p.StartMessage):
            session.start(message.instruction)
        elif isinstance(message, p.StopMessage):
            session.stop()
        elif isinstance(message, p.PauseMessage):
            session.pause()
        elif isinstance(message, p.ResumeMessage):
            session.resume()
        elif isinstance(message, p.ApproveMessage):
            session.answer(message)
        elif isinstance(message, p.PttMessage):
            console.ptt.down() if message.action == "down" else console.ptt.up()
        else:  # take-over: runs the tool, so off the receive loop (stop stays responsive)
            asyncio.create_task(_take_over(session, peer, message))
    except UserError as exc:
        peer.post(_error(exc.message))


async def _take_over(session: Any, peer: Peer, message: Any) -> None:
    try:
        await session.take_over(message)
    except UserError as exc:
        peer.post(_error(exc.message))
    except Exception as exc:  # a tool bug: tell the page, keep serving
        peer.post(_error(f"take-over failed: {type(exc).__name__}: {exc}"))
