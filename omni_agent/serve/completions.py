"""One chat completion against a ``ServeBackend``: whole (``complete``) or as chunks (``stream``).

The backend's raw text goes through the project's one stream parser, so ``<tool_call>`` text is
never shown as content and each call is sent as a ``tool_calls`` delta the moment it closes.
Speech, when asked for, is made only for a turn without calls and only of its visible text:
the Talker never voices a call or thinking.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
import wave
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import numpy as np

from ..exceptions import ModelError
from ..models.base import ModelRequest, ModelResponse
from ..parsing import CallReady, Problem, StreamParser, TextDelta, parse_output
from ..parsing.types import ParsedOutput
from .backend import ServeBackend
from .chat import (
    ChatCompletionRequest,
    completion_body,
    finish_reason_for,
    new_completion_id,
    parse_problem_dicts,
    tool_call_dicts,
    usage_dict,
)
from .metrics import ServeMetrics

__all__ = ["CompletionJob", "pcm16_bytes", "wav_bytes"]

_REQUIRED_HINT = "You must answer this turn with a tool call{name}."


def pcm16_bytes(samples: np.ndarray) -> bytes:
    return (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes()


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16_bytes(samples))
    return buf.getvalue()


def _forced_prefix(choice: str) -> str:
    """Assistant text that makes the Thinker's turn a call (``required`` / a named function)."""
    if choice == "required":
        return "<tool_call>\n"
    if choice.startswith("function:"):
        return '<tool_call>\n{"name": "' + choice.split(":", 1)[1] + '", "arguments": '
    return ""


@dataclass
class CompletionJob:
    """One request's context: what was asked, by whom, and its timings for the metrics."""

    backend: ServeBackend
    body: ChatCompletionRequest
    request: ModelRequest
    choice: str
    metrics: ServeMetrics
    model_name: str
    started: float = field(default_factory=time.perf_counter)
    completion_id: str = field(default_factory=new_completion_id)
    first_token_seen: bool = False

    # -- the backend call ----------------------------------------------------------------------
    def _backend_stream(self) -> AsyncIterator[Any]:
        prefix = _forced_prefix(self.choice)
        session = self.body.session_id
        if prefix and getattr(self.backend, "accepts_assistant_prefix", False):
            return self.backend.stream(self.request, session_id=session, assistant_prefix=prefix)  # type: ignore[call-arg]
        if prefix:  # a backend that cannot force the opening: say it in the prompt instead
            name = f" to {self.choice.split(':', 1)[1]}" if self.choice.startswith("function:") else ""
            from ..messages import SystemMessage

            hint = _REQUIRED_HINT.format(name=name)
            messages = list(self.request.messages)
            if messages and isinstance(messages[0], SystemMessage):  # templates want one system turn, first
                messages[0] = SystemMessage(f"{messages[0].text}\n\n{hint}")
            else:
                messages.insert(0, SystemMessage(hint))
            self.request = self.request.model_copy(update={"messages": messages})
        return self.backend.stream(self.request, session_id=session)

    def _note_first_token(self) -> None:
        if not self.first_token_seen:
            self.first_token_seen = True
            self.metrics.ttft.observe(time.perf_counter() - self.started)

    def _count(self, response: ModelResponse) -> None:
        self.metrics.prompt_tokens.inc(response.usage.prompt_tokens)
        self.metrics.completion_tokens.inc(response.usage.completion_tokens)

    # -- whole answer ---------------------------------------------------------------------------
    async def complete(self) -> dict[str, Any]:
        response: ModelResponse | None = None
        async for chunk in self._backend_stream():
            if chunk.text:
                self._note_first_token()
            if chunk.response is not None:
                response = chunk.response
        if response is None:
            raise ModelError("the backend's stream ended without a response")
        self._count(response)
        parsed = parse_output(response.text)
        audio = await self._audio_whole(parsed) if self.body.wants_audio else None
        usage = usage_dict(response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.cached_tokens)
        return completion_body(
            completion_id=self.completion_id,
            model=self.model_name,
            parsed=parsed,
            finish_reason=finish_reason_for(parsed, response.finish_reason),
            usage=usage,
            audio=audio,
        )

    async def _audio_whole(self, parsed: ParsedOutput) -> dict[str, Any] | None:
        text = parsed.visible_text.strip()
        if parsed.calls or not text:
            return None
        pieces: list[np.ndarray] = []
        rate = 24_000
        async for chunk in self.backend.speak_stream(text, voice=self.request.voice):
            if not pieces:
                self.metrics.ttfa.observe(time.perf_counter() - self.started)
            pieces.append(np.asarray(chunk.samples, dtype=np.float32))
            rate = chunk.rate
        samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        fmt = (self.body.audio.format if self.body.audio else "wav").lower()
        data = wav_bytes(samples, rate) if fmt == "wav" else pcm16_bytes(samples)
        return {
            "id": "audio_" + uuid.uuid4().hex[:16],
            "data": base64.b64encode(data).decode("ascii"),
            "expires_at": int(time.time()) + 3600,
            "transcript": text,
        }

    # -- streamed answer ------------------------------------------------------------------------
    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        """``chat.completion.chunk`` objects; the caller adds ``[DONE]``. The first is yielded
        only once the backend produced something, so a refusal is still a plain HTTP error."""
        parser = StreamParser()
        source = self._backend_stream()
        try:
            piece = await source.__anext__()
            yield self._chunk({"role": "assistant", "content": ""})
            response: ModelResponse | None = None
            calls: list[Any] = []
            visible: list[str] = []
            while True:
                if piece.text:
                    self._note_first_token()
                    for delta in self._deltas(parser.feed(piece.text), calls, visible):
                        yield self._chunk(delta)
                if piece.response is not None:
                    response = piece.response
                try:
                    piece = await source.__anext__()
                except StopAsyncIteration:
                    break
        finally:
            await source.aclose()
        for delta in self._deltas(parser.close(), calls, visible):
            yield self._chunk(delta)
        if response is None:
            raise ModelError("the backend's stream ended without a response")
        self._count(response)
        text = "".join(visible).strip()
        if self.body.wants_audio and not calls and text:
            async for delta in self._audio_deltas(text):
                yield self._chunk(delta)
        yield self._chunk({}, finish_reason_for(ParsedOutput(calls=calls), response.finish_reason))
        if self.body.stream_options is not None and self.body.stream_options.include_usage:
            usage = usage_dict(response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.cached_tokens)
            yield {**self._chunk({}), "choices": [], "usage": usage}

    @staticmethod
    def _deltas(events: list[Any], calls: list[Any], visible: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, TextDelta):
                if event.channel == "visible":
                    visible.append(event.text)
                    out.append({"content": event.text})
                else:
                    out.append({"reasoning_content": event.text})
            elif isinstance(event, CallReady):
                index = len(calls)
                calls.append(event.call)
                call = tool_call_dicts([event.call])[0]
                out.append({"tool_calls": [{"index": index, **call}]})
            elif isinstance(event, Problem):
                out.append({"parse_problems": parse_problem_dicts([event.problem])})
        return out

    async def _audio_deltas(self, text: str) -> AsyncIterator[dict[str, Any]]:
        audio_id = "audio_" + uuid.uuid4().hex[:16]
        first = True
        async for chunk in self.backend.speak_stream(text, voice=self.request.voice):
            delta: dict[str, Any] = {"id": audio_id, "data": base64.b64encode(pcm16_bytes(chunk.samples)).decode("ascii")}
            if first:
                self.metrics.ttfa.observe(time.perf_counter() - self.started)
                delta["transcript"] = text
                delta["expires_at"] = int(time.time()) + 3600
                first = False
            yield {"audio": delta}
