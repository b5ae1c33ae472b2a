"""One event loop in a daemon thread that owns every MCP connection of the process.

Why: an MCP session (a subprocess, an HTTP stream, anyio task groups) must live in one event
loop, but tools are loaded before any run starts (``load_toolsets`` is synchronous) and each
``Agent.run()`` makes a fresh loop. Calls from any loop or thread hop over to this one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundLoop", "CallerLoop", "background_loop"]

T = TypeVar("T")


class BackgroundLoop:
    """An asyncio loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="omni-agent-mcp", daemon=True)
        self._thread.start()

    def in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` in the background loop from any other loop (or directly inside it)."""
        if self.in_loop():
            return await coro
        future = self.submit(coro)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # the caller gave up (its timeout): stop the work over there too
            raise

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Block until ``coro`` is done in the background loop (not from inside that loop)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s") from None


class CallerLoop:
    """The loop of an ``async with mcp_tools(...)`` block: calls from that loop run inline, with
    no thread hop (the per-call cost that matters most); other loops cannot use the session."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self.in_loop():
            coro.close()
            raise RuntimeError("this MCP session belongs to the event loop of its `async with mcp_tools(...)` block")
        return await coro

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        coro.close()
        raise RuntimeError("an `async with mcp_tools(...)` session is asynchronous: await it")


_LOCK = threading.Lock()
_LOOP: BackgroundLoop | None = None


def background_loop() -> BackgroundLoop:
    """The process-wide MCP loop (started on first use)."""
    global _LOOP
    with _LOCK:
        if _LOOP is None:
            _LOOP = BackgroundLoop()
        return _LOOP
