"""Fan-out from the console to every open page: ordered JSON messages, latest-only frames.

Each connected page gets a :class:`Peer` with its own sender task. Text messages (events,
state, approvals) are kept in order; screen frames are not queued: a slow page skips to the
newest frame instead of falling behind. Thread-safe entry points (``*_threadsafe``) let the
frame grabber and the speaker post from their own threads.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

__all__ = ["Hub", "Peer"]

MAX_QUEUED_MESSAGES = 5_000
"""A page this far behind is disconnected (it reloads and reads the state afresh)."""


class Peer:
    """One page's socket and what waits to be sent to it."""

    def __init__(self, websocket: Any) -> None:
        self.websocket = websocket
        self.messages: collections.deque[str | bytes] = collections.deque()
        self.frame: bytes | None = None
        self.wake = asyncio.Event()
        self.closed = False

    def post(self, message: str | bytes) -> None:
        if len(self.messages) >= MAX_QUEUED_MESSAGES:
            self.closed = True
        self.messages.append(message)
        self.wake.set()

    def post_frame(self, frame: bytes) -> None:
        self.frame = frame
        self.wake.set()

    async def pump(self) -> None:
        """Send until the socket closes (returns quietly then)."""
        try:
            while not self.closed:
                await self.wake.wait()
                self.wake.clear()
                while self.messages:
                    message = self.messages.popleft()
                    if isinstance(message, bytes):
                        await self.websocket.send_bytes(message)
                    else:
                        await self.websocket.send_text(message)
                frame, self.frame = self.frame, None
                if frame is not None:
                    await self.websocket.send_bytes(frame)
        except Exception:  # noqa: BLE001 - the page went away; the receive side ends the peer
            self.closed = True


class Hub:
    """All connected pages; ``broadcast`` and ``broadcast_frame`` reach each of them."""

    def __init__(self) -> None:
        self.peers: set[Peer] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def add(self, peer: Peer) -> None:
        self.peers.add(peer)

    def remove(self, peer: Peer) -> None:
        peer.closed = True
        peer.wake.set()
        self.peers.discard(peer)

    @property
    def watching(self) -> bool:
        return bool(self.peers)

    def broadcast(self, message: str | bytes) -> None:
        for peer in list(self.peers):
            peer.post(message)

    def broadcast_frame(self, frame: bytes) -> None:
        for peer in list(self.peers):
            peer.post_frame(frame)

    def broadcast_threadsafe(self, message: str | bytes) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.broadcast, message)

    def frame_threadsafe(self, frame: bytes) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.broadcast_frame, frame)
