"""A running console: the agent's session, the live screen, voice, and the HTTP server around them.

    console = ConsoleServer(agent, display=":99", runs_dir="runs")
    console.serve(host="127.0.0.1", port=7860)     # prints the URL with its access token

Binds 127.0.0.1 by default; ``port=0`` picks a free port (tests, benchmarks). ``start_in_thread``
runs the same server on a background thread and returns once it accepts connections.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .auth import make_token
from .frames import FrameStreamer
from .hub import Hub
from .protocol import ErrorMessage, HeardMessage
from .session import ConsoleSession
from .voice import PageSink, PushToTalk

__all__ = ["ConsoleServer"]


class ConsoleServer:
    """Everything one console serves. ``display`` None: no live screen (the page says so).

    Args:
        speak: say progress and answers in the page (espeak-ng, or the model's Talker).
        speech_engine: auto | talker | espeak | silent (as ``omni-agent listen``).
        voice_instruction: text sent with every spoken command (like ``listen --instruction``).
        fps: screen polls per second (frames go out when the screen changed).
    """

    def __init__(
        self,
        agent: Any,
        *,
        display: str | None = None,
        runs_dir: str | Path = "runs",
        token: str | None = None,
        speak: bool = True,
        speech_engine: str = "auto",
        voice_instruction: str = "",
        fps: float = 15.0,
    ) -> None:
        self.agent = agent
        self.display = display
        self.runs_dir = Path(runs_dir)
        self.token = token or make_token()
        self.hub = Hub()
        self.frames = (
            FrameStreamer(display, self.hub.frame_threadsafe, watching=lambda: self.hub.watching, on_error=self._screen_error, fps=fps)
            if display
            else None
        )
        size = self.frames.size if self.frames is not None else (1280, 800)
        self.session = ConsoleSession(agent, self.hub, screen_size=size)
        self.voice_instruction = voice_instruction
        self.voice_output: Any = None
        self.sink = PageSink(self.hub)
        if speak:
            from ..voice.output import attach_voice_output

            self.voice_output = attach_voice_output(agent, engine=speech_engine, sink=self.sink, min_interval_s=2.0)
        self.ptt = PushToTalk(on_utterance=self._heard, on_error=self.session.error, on_barge_in=self._barge_in)
        self.url = ""
        self.initial_instruction: str | None = None
        """Started as soon as the server is up (``omni-agent run ... --ui``)."""

    # -- hooks the app calls ------------------------------------------------------------------
    async def on_startup(self) -> None:
        self.hub.bind(asyncio.get_running_loop())
        if self.frames is not None:
            self.frames.start()
        if self.initial_instruction:
            self.session.start(self.initial_instruction)

    async def on_shutdown(self) -> None:
        await self.session.aclose()
        if self.frames is not None:
            self.frames.stop()
        if self.voice_output is not None:
            self.voice_output.close(wait_s=0)

    def on_page_opened(self) -> None:
        if self.frames is not None:
            self.frames.kick()

    def info(self) -> dict[str, Any]:
        return {
            "model": self.agent.model.info.label,
            "tools": self.agent.tools.names,
            "display": self.display,
            "screen": list(self.session.screen_size) if self.frames is not None else None,
            "runs_dir": str(self.runs_dir),
            "speak": self.voice_output is not None,
        }

    def _heard(self, utterance: Any) -> None:
        from ..exceptions import UserError

        self.hub.broadcast(HeardMessage(seconds=round(utterance.duration_s, 2)).wire())
        try:
            self.session.start(self.voice_instruction, audio=utterance.part())
        except UserError as exc:
            self.session.error(exc.message)

    def _screen_error(self, message: str) -> None:
        self.hub.broadcast_threadsafe(ErrorMessage(message=f"live screen: {message}").wire())

    def _barge_in(self) -> None:
        if self.voice_output is not None:
            self.voice_output.speaker.barge_in()

    # -- serving -------------------------------------------------------------------------------
    def _server(self, host: str, port: int) -> tuple[Any, socket.socket]:
        import uvicorn

        from .app import create_app

        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog from now on, even before uvicorn runs
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}/?token={self.token}"
        # No per-message deflate: frames are JPEG (incompressible) and zlib on ~100 KB costs latency.
        config = uvicorn.Config(
            create_app(self), log_level="warning", ws_max_size=1 << 20, ws_per_message_deflate=False, lifespan="on"
        )
        return uvicorn.Server(config), sock

    def serve(self, *, host: str = "127.0.0.1", port: int = 7860, announce: Callable[[str], None] = print) -> None:
        """Serve until interrupted (Ctrl-C stops the run, then the server)."""
        server, sock = self._server(host, port)
        announce(self.url)
        server.run(sockets=[sock])

    def start_in_thread(self, *, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 20.0) -> "ConsoleServer":
        """Serve on a daemon thread; returns once the server is up (``stop_thread`` ends it)."""
        server, sock = self._server(host, port)
        self._thread_server = server
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="console-server", daemon=True)
        thread.start()
        self._thread = thread
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console server did not start")
            time.sleep(0.02)
        return self

    def stop_thread(self) -> None:
        server = getattr(self, "_thread_server", None)
        if server is not None:
            server.should_exit = True
            self._thread.join(timeout=15)
