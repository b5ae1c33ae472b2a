"""The contract between the server's protocol layers and whatever generates.

``serve/chat.py`` (Chat Completions) and ``serve/realtime.py`` (the Realtime WebSocket) talk only
to a ``ServeBackend``; ``serve/engine.py`` implements it over the local runtime with continuous
batching and per-session KV reuse. ``SerialBackend`` is the simplest correct implementation (one
request at a time over any ``Model``): the reference the batched engine must agree with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator, Protocol, runtime_checkable

import numpy as np

from ..models.base import Model, ModelChunk, ModelInfo, ModelRequest

__all__ = ["AudioChunk", "SerialBackend", "ServeBackend"]


@dataclass
class AudioChunk:
    """A playable piece of speech: float32 mono samples at ``rate`` Hz."""

    samples: np.ndarray
    rate: int


@runtime_checkable
class ServeBackend(Protocol):
    """What the protocol layers need from the model side."""

    info: ModelInfo

    def stream(self, request: ModelRequest, *, session_id: str | None = None) -> AsyncIterator[ModelChunk]:
        """Text chunks as generated; the last chunk carries the full ``ModelResponse``.
        ``session_id`` names a conversation whose KV prefix may be reused on its next turn."""
        ...

    def speak_stream(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        """Speech of exactly ``text`` (the visible answer, never calls or thinking), chunk by chunk."""
        ...

    async def aclose(self) -> None: ...


class SerialBackend:
    """One request at a time over a ``Model`` (no batching): correct, slow, the baseline."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.info = model.info
        self._lock = asyncio.Lock()

    async def stream(self, request: ModelRequest, *, session_id: str | None = None) -> AsyncIterator[ModelChunk]:
        async with self._lock:
            async for chunk in self.model.stream(request):
                yield chunk

    async def speak_stream(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        model: Any = self.model
        async with self._lock:
            if getattr(model, "family", None) is not None and model.family.key == "qwen3_omni":
                chunks = await asyncio.to_thread(lambda: list(model.speak_stream(text, voice=voice)))
                for chunk in chunks:
                    yield AudioChunk(samples=np.asarray(chunk.samples, dtype=np.float32), rate=24000)
                return
            audio = await model.aspeak(text, voice=voice)
            samples, rate = audio.load()
            yield AudioChunk(samples=np.asarray(samples, dtype=np.float32), rate=rate)

    async def aclose(self) -> None:
        await self.model.aclose()
