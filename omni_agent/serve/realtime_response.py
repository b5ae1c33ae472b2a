"""One Realtime response: the Thinker's turn as protocol events, then the Talker's speech.

The Thinker streams through the project's ``StreamParser``: function calls become
``function_call`` items the moment their ``</tool_call>`` arrives, thinking is never sent, and
visible text streams as ``response.output_text.delta`` when the response is text-only. No audio
leaves before the Thinker's end, because a turn that calls a tool is never spoken (the Talker
would voice whatever the Thinker wrote: Qwen3-Omni issue 126). The first sentence is voiced
meanwhile (``EarlySpeech``) and dropped unheard if a call follows; a final answer is then sent
sentence by sentence through ``backend.speak_stream`` so a barge-in can truncate the transcript
at what was played.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from contextlib import aclosing
from typing import Any, AsyncIterator, Awaitable, Callable

from ..exceptions import OmniAgentError
from ..models.base import GenerationSettings, ModelRequest, ModelResponse
from ..parsing import CallReady, Problem, StreamEvent, StreamParser, TextDelta
from ..validation import validate_call
from .backend import AudioChunk, ServeBackend
from .realtime_audio import encode_pcm16
from .realtime_config import SessionConfig, tool_registry
from .realtime_conversation import Conversation, Item, SpokenSegment, truncate_transcript
from .realtime_events import AUDIO_RATE, ResponseOptions, new_id

__all__ = ["EarlySpeech", "ResponseRun", "split_sentences"]

Send = Callable[[dict[str, Any]], Awaitable[None]]

_SENTENCE_END = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+")


def split_sentences(text: str) -> list[str]:
    """The visible answer in spoken pieces (the Talker voices each as its own turn)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]


class EarlySpeech:
    """The first sentence spoken while the Thinker still writes the rest, held back until the turn
    is known to call no tool (then sent, else dropped unheard): the first audio leaves as soon as
    the Thinker ends even when the Talker is slower than the rest of the decode."""

    def __init__(self, backend: ServeBackend, sentence: str, voice: str | None) -> None:
        self.sentence = sentence
        self._chunks: asyncio.Queue[AudioChunk | BaseException | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(backend, voice))

    async def _run(self, backend: ServeBackend, voice: str | None) -> None:
        try:
            async with aclosing(backend.speak_stream(self.sentence, voice=voice)) as audio:
                async for chunk in audio:
                    self._chunks.put_nowait(chunk)
        except Exception as exc:  # handed to the reader, raised there
            self._chunks.put_nowait(exc)
        self._chunks.put_nowait(None)

    async def chunks(self) -> AsyncIterator[AudioChunk]:
        while (item := await self._chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def drop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class ResponseRun:
    """Runs one response and sends its events; cancelling its task ends it as ``cancelled``."""

    def __init__(self, *, backend: ServeBackend, send: Send, conversation: Conversation, config: SessionConfig,
                 options: ResponseOptions, session_id: str, metrics: Any | None) -> None:  # fmt: skip
        self.id = new_id("resp")
        self.backend, self.send, self.config, self.options = backend, send, config, options
        self.conversation = conversation if options.conversation == "auto" else Conversation()
        self.messages = conversation.messages(config.instructions)  # the context as it is now
        self.session_id, self.metrics = session_id, metrics
        self.cancel_reason = "client_cancelled"
        self.output: list[Item] = []
        self.problems: list[dict[str, Any]] = []
        self._calls: list[Item] = []
        self._visible = ""
        self._text_item: Item | None = None
        self._spoken: Item | None = None
        self._audio_ms = 0.0  # audio sent so far in this response
        self._first_audio_at: float | None = None
        self._started = time.perf_counter()
        self._first_token = False
        self._final: ModelResponse | None = None
        self._registry = tool_registry([])
        self._early: EarlySpeech | None = None

    async def run(self) -> None:
        """Everything from ``response.created`` to ``response.done`` (never raises)."""
        self._metric("request_started", "realtime")
        status, details = "completed", None
        try:
            await self.send({"type": "response.created", "response": self._wire("in_progress")})
            await self._think()
            if self.config.speaks and not self._calls and self._visible.strip():
                await self._speak(self._visible)
            elif self._visible.strip() and self._text_item is None:
                await self._text_answer(self._visible)  # a spoken-mode preamble before a call: shown, not voiced
        except asyncio.CancelledError:
            status, details = "cancelled", {"type": "cancelled", "reason": self.cancel_reason}
            await self._close_cancelled()
        except Exception as exc:  # the model failed (or a bug): this response fails, the session goes on
            message = exc.message if isinstance(exc, OmniAgentError) else f"{type(exc).__name__}: {exc}"
            status = "failed"
            details = {"type": "failed", "error": {"type": "server_error", "code": "model_error", "message": message}}
        finally:
            if self._early is not None:
                await self._early.drop()
            self._metric("request_finished", "realtime")
        await self.send({"type": "response.done", "response": self._wire(status, details)})

    # -- the Thinker ---------------------------------------------------------------------------
    async def _think(self) -> None:
        limit = self.config.max_output_tokens
        settings = GenerationSettings(temperature=self.config.temperature or 0.0)
        if isinstance(limit, int):
            settings.max_new_tokens = limit
        tools = self.config.model_tools()
        self._registry = tool_registry(tools)
        request = ModelRequest(messages=self.messages, tools=tools, settings=settings)
        parser = StreamParser()
        async with aclosing(self.backend.stream(request, session_id=self.session_id)) as chunks:
            async for chunk in chunks:
                if chunk.text:
                    if not self._first_token:
                        self._first_token = True
                        self._metric("observe_first_token", time.perf_counter() - self._started)
                    await self._on_parsed(parser.feed(chunk.text))
                if chunk.response is not None:
                    self._final = chunk.response
        await self._on_parsed(parser.close())
        if self._text_item is not None:
            await self._finish_text(self._text_item)

    async def _on_parsed(self, events: list[StreamEvent]) -> None:
        for event in events:
            if isinstance(event, TextDelta):
                if event.channel != "visible":
                    continue  # thinking is never sent, shown or spoken
                self._visible += event.text
                if not self.config.speaks:
                    await self._stream_text(event.text)
                elif self._early is None and not self._calls:
                    self._start_early_speech()
            elif isinstance(event, CallReady):
                if self._early is not None:
                    await self._early.drop()  # a turn that calls a tool is never spoken
                    self._early = None
                await self._emit_call(event.call)
            elif isinstance(event, Problem) and event.problem.fatal:
                self.problems.append(event.problem.model_dump())

    def _start_early_speech(self) -> None:
        """Once the first sentence is complete (punctuation, then more text), start voicing it."""
        first, *rest = _SENTENCE_END.split(self._visible.strip(), maxsplit=1)
        if rest and first.strip():
            self._early = EarlySpeech(self.backend, first, self.config.voice)

    async def _emit_call(self, call: Any) -> None:
        verdict = validate_call(call, self._registry)
        if verdict.ok:
            call = verdict.call  # with the documented coercions ("5" -> 5 for an integer)
        else:  # still sent: the client owns the tool; the issues travel in response.parse_problems
            self.problems.append({"kind": "invalid_call", "call_id": call.id, "message": verdict.message, "fatal": True})
        item = Item(type="function_call", call=call, response_id=self.id, status="in_progress")
        ref = {"response_id": self.id, "output_index": len(self.output), "item_id": item.id, "call_id": call.id}
        self._add(item)
        await self.send({"type": "response.output_item.added", "response_id": self.id,
                         "output_index": ref["output_index"], "item": item.wire() | {"arguments": ""}})  # fmt: skip
        arguments = json.dumps(call.arguments)
        await self.send({"type": "response.function_call_arguments.delta", **ref, "delta": arguments})
        item.status = "completed"
        self._calls.append(item)
        await self.send({"type": "response.function_call_arguments.done", **ref, "name": call.name, "arguments": arguments})
        await self.send({"type": "response.output_item.done", "response_id": self.id,
                         "output_index": ref["output_index"], "item": item.wire()})  # fmt: skip

    # -- text ----------------------------------------------------------------------------------
    async def _stream_text(self, delta: str) -> None:
        item = self._text_item
        if item is None:
            item = self._text_item = Item(type="message", role="assistant", response_id=self.id, status="in_progress")
            self._add(item)
            await self._open_part(item, {"type": "output_text", "text": ""})
        item.text += delta
        for name in ("response.output_text.delta", "response.text.delta"):  # GA name, then the beta one
            await self.send({"type": name, **self._ref(item), "delta": delta})

    async def _text_answer(self, text: str) -> None:
        await self._stream_text(text)
        assert self._text_item is not None
        await self._finish_text(self._text_item)

    async def _finish_text(self, item: Item) -> None:
        item.status = "completed"
        for name in ("response.output_text.done", "response.text.done"):
            await self.send({"type": name, **self._ref(item), "text": item.text})
        await self._close_part(item, {"type": "output_text", "text": item.text})

    # -- speech --------------------------------------------------------------------------------
    async def _speak(self, text: str) -> None:
        item = self._spoken = Item(type="message", role="assistant", spoken=True, response_id=self.id, status="in_progress")
        self._add(item)
        await self._open_part(item, {"type": "output_audio", "transcript": ""})
        for i, sentence in enumerate(split_sentences(text)):
            said = sentence if i == 0 else " " + sentence
            for name in ("response.output_audio_transcript.delta", "response.audio_transcript.delta"):
                await self.send({"type": name, **self._ref(item), "delta": said})
            start = self._audio_ms
            early = self._early if i == 0 and self._early is not None and self._early.sentence == sentence else None
            source = early.chunks() if early else self.backend.speak_stream(sentence, voice=self.config.voice)
            async with aclosing(source) as audio:
                async for chunk in audio:
                    await self._send_audio(item, chunk.samples, chunk.rate)
            item.segments.append(SpokenSegment(said, start, self._audio_ms))
            item.text += said
        item.status = "completed"
        ref = self._ref(item)
        for name in ("response.output_audio.done", "response.audio.done"):
            await self.send({"type": name, **ref})
        for name in ("response.output_audio_transcript.done", "response.audio_transcript.done"):
            await self.send({"type": name, **ref, "transcript": item.text})
        await self._close_part(item, {"type": "output_audio", "transcript": item.text})

    async def _send_audio(self, item: Item, samples: Any, rate: int) -> None:
        data, count = encode_pcm16(samples, rate)
        if not count:
            return
        if self._first_audio_at is None:
            self._first_audio_at = time.perf_counter()
            self._metric("observe_first_audio", self._first_audio_at - self._started)
        self._audio_ms += count * 1000 / AUDIO_RATE
        for name in ("response.output_audio.delta", "response.audio.delta"):
            await self.send({"type": name, **self._ref(item), "delta": data})

    def played_ms(self) -> float:
        """Audio the client has played by now if it plays as it receives (never more than sent)."""
        if self._first_audio_at is None:
            return 0.0
        return min(self._audio_ms, (time.perf_counter() - self._first_audio_at) * 1000)

    async def _close_cancelled(self) -> None:
        """Barge-in or ``response.cancel``: the spoken item keeps only what was heard."""
        item = self._spoken
        if item is None:
            return
        played = self.played_ms()
        item.text = truncate_transcript(item.segments, played)
        item.segments = [s for s in item.segments if s.end_ms <= played]
        item.status = "incomplete"
        if played < self._audio_ms or not item.segments:
            await self.send({"type": "conversation.item.truncated", "item_id": item.id, "content_index": 0,
                             "audio_end_ms": int(played)})  # fmt: skip

    # -- helpers -------------------------------------------------------------------------------
    def _add(self, item: Item) -> None:
        self.output.append(item)
        self.conversation.add(item)

    def _ref(self, item: Item) -> dict[str, Any]:
        return {"response_id": self.id, "item_id": item.id, "output_index": self.output.index(item), "content_index": 0}

    async def _open_part(self, item: Item, part: dict[str, Any]) -> None:
        await self.send({"type": "response.output_item.added", "response_id": self.id,
                         "output_index": self.output.index(item), "item": item.wire() | {"content": []}})  # fmt: skip
        await self.send({"type": "response.content_part.added", **self._ref(item), "part": part})

    async def _close_part(self, item: Item, part: dict[str, Any]) -> None:
        await self.send({"type": "response.content_part.done", **self._ref(item), "part": part})
        await self.send({"type": "response.output_item.done", "response_id": self.id,
                         "output_index": self.output.index(item), "item": item.wire()})  # fmt: skip

    def _wire(self, status: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        usage = self._final.usage if self._final is not None else None
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": details,
            "output": [i.wire() for i in self.output],
            "output_modalities": list(self.config.output_modalities),
            "conversation_id": None if self.options.conversation == "none" else self.session_id,
            "metadata": self.options.metadata,
            "usage": None if usage is None else {
                "total_tokens": usage.total_tokens, "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
                "input_token_details": {"cached_tokens": usage.cached_tokens},
            },  # fmt: skip
            "parse_problems": self.problems,
        }

    def _metric(self, name: str, value: Any) -> None:
        method = getattr(self.metrics, name, None) if self.metrics is not None else None
        if callable(method):
            method(value)
