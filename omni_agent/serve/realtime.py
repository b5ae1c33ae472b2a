"""OpenAI Realtime over WebSocket (``/v1/realtime``) in front of a ``ServeBackend``.

One connection is one session: its settings, its conversation, its input audio buffer with
server VAD, and at most one response running at a time (``realtime_response.ResponseRun``).
Client events are read one by one and answered in order; a bad one gets an ``error`` event and
the session goes on. A response runs in its own task so audio keeps arriving while it speaks:
speech that starts meanwhile cancels it (barge-in) and its transcript keeps only what was heard.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from typing_extensions import assert_never

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from ..exceptions import MissingDependencyError
from ..voice.audio_io import resample
from .backend import ServeBackend
from .realtime_audio import InputAudioBuffer, ServerVAD, SpeechBegan, SpeechEnded, TurnEvent, decode_pcm16
from .realtime_config import SessionConfig
from .realtime_conversation import Conversation, Item, truncate_transcript
from .realtime_events import (
    AUDIO_RATE,
    ClientEvent,
    ConversationItemCreate,
    ConversationItemDelete,
    ConversationItemRetrieve,
    ConversationItemTruncate,
    FunctionCallOutputItem,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    OutputAudioBufferClear,
    ProtocolError,
    ResponseCancel,
    ResponseCreate,
    ResponseOptions,
    SessionUpdate,
    error_event,
    new_id,
    parse_client_event,
)
from .realtime_response import ResponseRun

__all__ = ["realtime_router"]

log = logging.getLogger(__name__)

_KEY_PROTOCOL = "openai-insecure-api-key."
"""Browsers cannot set headers on a WebSocket: the OpenAI SDK sends the key as a subprotocol."""
_MIN_COMMIT_MS = 100
"""OpenAI refuses to commit less audio than this; so does this server."""


def realtime_router(backend: ServeBackend, *, api_key: str | None, metrics: Any | None) -> APIRouter:
    """The ``/v1/realtime`` WebSocket route over ``backend`` (``api_key``: required when set)."""
    router = APIRouter()

    @router.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        offered = list(websocket.scope.get("subprotocols") or [])
        if api_key is not None and not _authorized(websocket, offered, api_key):
            await _deny(websocket)
            return
        await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
        await RealtimeSession(websocket, backend, metrics).serve()

    return router


def _authorized(websocket: WebSocket, offered: list[str], api_key: str) -> bool:
    header = websocket.headers.get("authorization", "")
    keys = [header[7:].strip()] if header[:7].lower() == "bearer " else []
    keys += [p[len(_KEY_PROTOCOL) :] for p in offered if p.startswith(_KEY_PROTOCOL)]
    return any(hmac.compare_digest(k.encode(), api_key.encode()) for k in keys)


async def _deny(websocket: WebSocket) -> None:
    """Refuse the handshake with HTTP 401 and an OpenAI-shaped body (403 where the server cannot)."""
    from fastapi.responses import JSONResponse

    body = {"error": {"type": "invalid_request_error", "code": "invalid_api_key", "param": None,
                      "message": "missing or wrong API key: send 'Authorization: Bearer KEY'"}}  # fmt: skip
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=401))
    else:
        await websocket.close(code=1008, reason="invalid_api_key")


class RealtimeSession:
    """One WebSocket connection's state and its client-event handlers."""

    def __init__(self, websocket: WebSocket, backend: ServeBackend, metrics: Any | None) -> None:
        self.websocket, self.backend, self.metrics = websocket, backend, metrics
        self.id = new_id("sess")
        self.config = SessionConfig()
        self.conversation = Conversation()
        self.buffer = InputAudioBuffer()
        self.vad: ServerVAD | None = None
        self.response: ResponseRun | None = None
        self._task: asyncio.Task[None] | None = None
        self._speech_item_id: str | None = None
        self._send_lock = asyncio.Lock()
        self._open = True

    async def serve(self) -> None:
        try:
            try:
                self.vad = await self._make_vad(self.config)
            except ProtocolError:  # no VAD installed: the session starts with turns committed by hand
                self.config = self.config.model_copy(update={"turn_detection": None})
            await self._send_session("session.created")
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self._handle(message)
        except WebSocketDisconnect:
            pass
        finally:
            self._open = False
            await self._stop_response("client_cancelled")

    async def send(self, event: dict[str, Any]) -> None:
        """Send one server event (with an id); a closed connection drops it silently."""
        if not self._open:
            return
        event.setdefault("event_id", new_id("event"))
        async with self._send_lock:
            try:
                await self.websocket.send_text(json.dumps(event))
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._open = False

    # -- dispatch ------------------------------------------------------------------------------
    async def _handle(self, message: dict[str, Any]) -> None:
        event_id = None
        try:
            text = message.get("text")
            if text is None:
                raise ProtocolError("binary frames are not part of the protocol: send JSON text frames",
                                    code="invalid_event")  # fmt: skip
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ProtocolError(f"the message is not JSON ({exc})", code="invalid_json") from exc
            event = parse_client_event(data)
            event_id = event.event_id
            await self._dispatch(event)
        except ProtocolError as exc:
            exc.event_id = exc.event_id or event_id
            await self.send(error_event(exc))
        except Exception as exc:  # a bug must not end the session: report it and go on
            log.exception("realtime: event failed")
            await self.send(error_event(ProtocolError(f"{type(exc).__name__}: {exc}", code="server_error",
                                                      event_id=event_id), type_="server_error"))  # fmt: skip

    async def _dispatch(self, event: ClientEvent) -> None:
        match event:
            case SessionUpdate():
                await self._session_update(event)
            case InputAudioBufferAppend():
                await self._append(event)
            case InputAudioBufferCommit():
                await self._commit_buffer()
            case InputAudioBufferClear():
                self.buffer.clear()
                self._reset_vad()
                await self.send({"type": "input_audio_buffer.cleared"})
            case OutputAudioBufferClear():
                await self._stop_response("client_cancelled")
                await self.send({"type": "output_audio_buffer.cleared", "response_id": None})
            case ConversationItemCreate():
                await self._create_item(event)
            case ConversationItemTruncate():
                await self._truncate(event)
            case ConversationItemDelete():
                self.conversation.delete(event.item_id)
                await self.send({"type": "conversation.item.deleted", "item_id": event.item_id})
            case ConversationItemRetrieve():
                item = self.conversation.get(event.item_id)
                await self.send({"type": "conversation.item.retrieved", "item": item.wire()})
            case ResponseCreate():
                await self._start_response(event.response)
            case ResponseCancel():
                await self._cancel(event)
            case _:
                assert_never(event)

    # -- session -------------------------------------------------------------------------------
    async def _session_update(self, event: SessionUpdate) -> None:
        config = self.config.updated(event.session)
        if config.turn_detection != self.config.turn_detection:
            self.vad = await self._make_vad(config)  # a refusal leaves the whole update unapplied
        self.config = config
        await self._send_session("session.updated")

    async def _send_session(self, kind: str) -> None:
        await self.send({"type": kind, "session": self.config.wire(session_id=self.id, model=self.backend.info.name)})

    async def _make_vad(self, config: SessionConfig) -> ServerVAD | None:
        settings = config.turn_detection
        if settings is None:
            return None
        try:
            vad = await asyncio.to_thread(ServerVAD, settings)  # loads the ONNX model
        except MissingDependencyError as exc:
            raise ProtocolError(f"server_vad is unavailable on this server ({exc.message}); "
                                "set turn_detection to null and commit turns yourself",
                                code="turn_detection_unavailable", param="session.audio.input.turn_detection") from exc  # fmt: skip
        vad.start_at(self.buffer.received * 1000 / AUDIO_RATE)
        return vad

    def _reset_vad(self) -> None:
        if self.vad is not None:
            self.vad.reset()
            self.vad.start_at(self.buffer.received * 1000 / AUDIO_RATE)
        self._speech_item_id = None

    # -- input audio ---------------------------------------------------------------------------
    async def _append(self, event: InputAudioBufferAppend) -> None:
        samples = decode_pcm16(event.audio)
        self.buffer.append(samples)
        if self.vad is None:
            return
        for turn in await asyncio.to_thread(self.vad.feed, samples):
            await self._on_turn(turn)
        if not self.vad.in_speech:
            self.buffer.clear()  # between turns the VAD keeps its own pre-roll

    async def _on_turn(self, turn: TurnEvent) -> None:
        settings = self.config.turn_detection
        if isinstance(turn, SpeechBegan):
            self._speech_item_id = new_id("item")
            await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": turn.audio_start_ms,
                             "item_id": self._speech_item_id})  # fmt: skip
            if self._task is not None and settings is not None and settings.interrupt_response:
                await self._stop_response("turn_detected")
            return
        assert isinstance(turn, SpeechEnded)
        item_id = self._speech_item_id or new_id("item")
        self._speech_item_id = None
        await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": turn.audio_end_ms,
                         "item_id": item_id})  # fmt: skip
        if turn.samples is None:
            return
        self.buffer.clear()
        await self._commit(Item(type="message", id=item_id, role="user", audio=turn.samples))
        if settings is not None and settings.create_response and self._task is None:
            await self._start_response(ResponseOptions())

    async def _commit_buffer(self) -> None:
        if self.buffer.duration_ms < _MIN_COMMIT_MS:
            raise ProtocolError(f"the input audio buffer holds {self.buffer.duration_ms:.0f} ms; at least "
                                f"{_MIN_COMMIT_MS} ms are needed to commit", code="input_audio_buffer_commit_empty")  # fmt: skip
        item = Item(type="message", id=self._speech_item_id or new_id("item"), role="user", audio=self.buffer.take_16k())
        self._reset_vad()
        await self._commit(item)

    async def _commit(self, item: Item) -> None:
        previous = self.conversation.add(item)
        await self.send({"type": "input_audio_buffer.committed", "item_id": item.id, "previous_item_id": previous})
        await self._announce(item, previous)

    async def _announce(self, item: Item, previous: str | None) -> None:
        wire = item.wire()
        for kind in ("conversation.item.added", "conversation.item.created", "conversation.item.done"):
            await self.send({"type": kind, "previous_item_id": previous, "item": wire})

    # -- conversation --------------------------------------------------------------------------
    async def _create_item(self, event: ConversationItemCreate) -> None:
        given = event.item
        if isinstance(given, FunctionCallOutputItem):
            item = Item(type="function_call_output", call_id=given.call_id, output=given.output)
        else:
            texts = [c.text or c.transcript or "" for c in given.content if c.type != "input_audio"]
            audio_parts = [c for c in given.content if c.type == "input_audio"]
            if given.role != "user" and audio_parts:
                raise ProtocolError("only user messages carry input_audio", param="item.content")
            audio = [decode_pcm16(c.audio or "", param="item.content.audio") for c in audio_parts]
            samples = resample(_concat(audio), AUDIO_RATE) if audio else None
            if not "".join(texts).strip() and (samples is None or samples.size == 0):
                raise ProtocolError("the message has neither text nor audio", param="item.content")
            item = Item(type="message", role=given.role, text="".join(texts), audio=samples)
        if given.id:
            item.id = given.id
        previous = self.conversation.add(item, previous_item_id=event.previous_item_id)
        await self._announce(item, previous)

    async def _truncate(self, event: ConversationItemTruncate) -> None:
        item = self.conversation.get(event.item_id)
        if item.role != "assistant" or not item.spoken:
            raise ProtocolError(f"item {item.id!r} has no audio to truncate", param="item_id")
        if event.content_index != 0:
            raise ProtocolError("a spoken item has one content part (content_index 0)", param="content_index")
        if event.audio_end_ms > item.audio_ms:
            raise ProtocolError(f"audio_end_ms {event.audio_end_ms} is past the item's {item.audio_ms:.0f} ms of audio",
                                param="audio_end_ms")  # fmt: skip
        item.text = truncate_transcript(item.segments, event.audio_end_ms)
        item.segments = [s for s in item.segments if s.end_ms <= event.audio_end_ms]
        await self.send({"type": "conversation.item.truncated", "item_id": item.id, "content_index": 0,
                         "audio_end_ms": event.audio_end_ms})  # fmt: skip

    # -- responses -----------------------------------------------------------------------------
    async def _start_response(self, options: ResponseOptions) -> None:
        if self._task is not None:
            raise ProtocolError(f"response {self.response.id if self.response else ''} is still running: "
                                "cancel it or wait for response.done", code="conversation_already_has_active_response")  # fmt: skip
        config = self.config.for_response(options)
        config.model_tools()  # a tool_choice that names no tool is refused now, not mid-response
        run = ResponseRun(backend=self.backend, send=self.send, conversation=self.conversation, config=config,
                          options=options, session_id=self.id, metrics=self.metrics)  # fmt: skip
        self.response = run
        self._task = asyncio.create_task(self._run(run))

    async def _run(self, run: ResponseRun) -> None:
        try:
            await run.run()
        finally:
            if self.response is run:
                self.response, self._task = None, None

    async def _cancel(self, event: ResponseCancel) -> None:
        if self.response is None or (event.response_id and event.response_id != self.response.id):
            raise ProtocolError("there is no such response in progress", code="response_cancel_not_active",
                                param="response_id" if event.response_id else None)  # fmt: skip
        await self._stop_response("client_cancelled")

    async def _stop_response(self, reason: str) -> None:
        """Cancel the running response (if any) and wait until its ``response.done`` is sent."""
        task, run = self._task, self.response
        if task is None or run is None:
            return
        run.cancel_reason = reason
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self.response is run:  # cancelled before it began: its own cleanup never ran
            self.response, self._task = None, None


def _concat(chunks: list[Any]) -> Any:
    import numpy as np

    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
