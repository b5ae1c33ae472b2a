"""Conversation <-> OpenAI chat-completions wire format (the converter of the OpenAI backend).

Kept apart from the HTTP client so the mapping can be read and tested on its own:

* messages -> ``messages`` (images as JPEG data URLs, audio as ``input_audio`` base64 WAV at
  16 kHz mono, video as ``video_url``, assistant ``tool_calls`` with JSON-encoded arguments,
  tool results as ``role: tool`` messages with ``tool_call_id``);
* tool schemas -> ``tools=[{"type": "function", "function": ...}]``;
* generation settings -> ``max_tokens``, ``temperature``, ...;
* a response body, or the chunks of a stream, -> :class:`ModelResponse`.
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..exceptions import ModelError, ModelResponseError, UserError
from ..messages import (
    AssistantMessage,
    AudioPart,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
    VideoPart,
)
from .base import GenerationSettings, ModelResponse, Usage

__all__ = [
    "AUDIO_SAMPLE_RATE",
    "ConversionOptions",
    "StreamAssembler",
    "audio_to_wav_base64",
    "decode_audio_bytes",
    "decode_audio_payload",
    "body_snippet",
    "messages_to_openai",
    "response_from_openai",
    "server_error_message",
    "settings_to_openai",
    "tools_to_openai",
]

AUDIO_SAMPLE_RATE = 16_000
"""Qwen-Omni's audio encoder runs at 16 kHz mono; sending that avoids a resample on the server."""

_URL_PREFIXES = ("http://", "https://", "data:", "file://")


@dataclass(frozen=True, kw_only=True)
class ConversionOptions:
    """How media is put on the wire, and what the model accepts (refused with a UserError)."""

    media_root: str | os.PathLike[str] | None = None
    """Base directory for relative media paths."""
    image_quality: int = 85
    video_as: Literal["data_url", "file_url"] = "data_url"
    """``file_url`` only for a server on this machine started with --allowed-local-media-path."""
    can_see: bool = True
    can_hear: bool = True
    model_name: str = "model"
    """Named in refusal messages."""


# --------------------------------------------------------------------------- request side


def tools_to_openai(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool schemas in the ``{"type": "function", "function": {...}}`` shape.

    Accepts the wrapped form (what ``ToolRegistry.schemas()`` returns) or a bare function
    schema (``{"name", "description", "parameters"}``).
    """
    out: list[dict[str, Any]] = []
    for i, schema in enumerate(tools):
        if not isinstance(schema, dict):
            raise UserError(f"tool schema #{i} must be a dict, got {type(schema).__name__}")
        if schema.get("type") == "function" and isinstance(schema.get("function"), dict):
            function = schema["function"]
        elif "name" in schema:
            function = schema
        else:
            raise UserError(f"tool schema #{i} has no function name: {json.dumps(schema)[:200]}")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise UserError(f"tool schema #{i} has no function name: {json.dumps(schema)[:200]}")
        function = {k: v for k, v in function.items() if k in ("name", "description", "parameters", "strict")}
        function.setdefault("parameters", {"type": "object", "properties": {}})
        out.append({"type": "function", "function": function})
    return out


def settings_to_openai(settings: GenerationSettings) -> dict[str, Any]:
    """Generation settings as request fields. ``top_k`` is a vLLM extension: sent only when set."""
    body: dict[str, Any] = {
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
    }
    if settings.seed is not None:
        body["seed"] = settings.seed
    if settings.stop:
        body["stop"] = list(settings.stop)
    if settings.top_k is not None:
        body["top_k"] = settings.top_k
    return body


def messages_to_openai(messages: list[Any], options: ConversionOptions | None = None) -> list[dict[str, Any]]:
    """Convert a conversation to OpenAI chat messages.

    Consecutive tool results become consecutive ``role: tool`` messages (the API requires them
    right after the assistant message that made the calls); media they returned follows in one
    user message after the run, because OpenAI tool messages carry text only.
    """
    opts = options or ConversionOptions()
    out: list[dict[str, Any]] = []
    pending_media: list[dict[str, Any]] = []  # tool-result media waiting for the end of the run

    def flush_tool_media() -> None:
        if pending_media:
            out.append({"role": "user", "content": list(pending_media)})
            pending_media.clear()

    for index, message in enumerate(messages):
        if isinstance(message, ToolMessage):
            out.append(_tool_message(message, pending_media, opts))
            continue
        flush_tool_media()
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": _content(message.content, opts, where=f"message #{index}")})
        elif isinstance(message, UserMessage):
            out.append({"role": "user", "content": _content(message.content, opts, where=f"message #{index}")})
        elif isinstance(message, AssistantMessage):
            out.append(_assistant_message(message))
        else:
            raise UserError(f"message #{index} is not a conversation message: {type(message).__name__}")
    flush_tool_media()
    return out


def _assistant_message(message: AssistantMessage) -> dict[str, Any]:
    # Assistant content is text on the wire; thinking is not sent back (Qwen templates drop it
    # from history too) and the calls travel as structured tool_calls, which the server's chat
    # template renders in the model's own format (``<tool_call>`` blocks for Qwen).
    text = message.text
    result: dict[str, Any] = {"role": "assistant"}
    if message.tool_calls:
        result["content"] = text or None
        result["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
            }
            for call in message.tool_calls
        ]
    else:
        result["content"] = text
    return result


def _tool_message(message: ToolMessage, pending_media: list[dict[str, Any]], opts: ConversionOptions) -> dict[str, Any]:
    result = message.result
    media = [p for p in result.content if not isinstance(p, TextPart)]
    text = result.text
    if media:
        # OpenAI tool messages are text-only: the images / audio a tool returned go into one user
        # message after this run of tool messages, labelled with the call they belong to.
        pending_media.append({"type": "text", "text": f"Media returned by {result.name} (call {result.call_id}):"})
        pending_media.extend(_content_part(p, opts, where=f"result of {result.name}") for p in media)
        note = f"[{len(media)} media item(s) attached in the next user message]"
        text = f"{text}\n{note}" if text else note
    return {"role": "tool", "tool_call_id": result.call_id, "content": text}


def _content(parts: list[Any], opts: ConversionOptions, *, where: str) -> str | list[dict[str, Any]]:
    """A plain string when all parts are text (accepted by every server), else a parts list."""
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts)
    return [_content_part(p, opts, where=where) for p in parts]


def _content_part(part: Any, opts: ConversionOptions, *, where: str) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        if not opts.can_see:
            raise UserError(f"{opts.model_name} cannot see: {where} holds an image (set can_see=True if it can)")
        return {"type": "image_url", "image_url": {"url": _image_url(part, opts)}}
    if isinstance(part, AudioPart):
        if not opts.can_hear:
            if part.transcript:
                return {"type": "text", "text": f"[spoken] {part.transcript}"}
            raise UserError(
                f"{opts.model_name} cannot hear: {where} holds audio without a transcript "
                "(transcribe it first, or set can_hear=True for a model that takes audio)"
            )
        return {"type": "input_audio", "input_audio": {"data": audio_to_wav_base64(part, opts.media_root), "format": "wav"}}
    if isinstance(part, VideoPart):
        if not opts.can_see:
            raise UserError(f"{opts.model_name} cannot see: {where} holds a video")
        return {"type": "video_url", "video_url": {"url": _video_url(part, opts)}}
    raise UserError(f"{where}: unsupported content part {type(part).__name__}")


def _resolve(path: str, root: str | os.PathLike[str] | None) -> Path:
    p = Path(path).expanduser()
    if root is not None and not p.is_absolute():
        p = Path(root) / p
    return p


def _image_url(part: ImagePart, opts: ConversionOptions) -> str:
    if part._image is None and part.path and part.path.startswith(_URL_PREFIXES):
        return part.path
    try:
        part.load(opts.media_root)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read image {part.path!r}: {exc}") from exc
    data = part.encode("JPEG", quality=opts.image_quality)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _video_url(part: VideoPart, opts: ConversionOptions) -> str:
    if part.path.startswith(_URL_PREFIXES):
        return part.path
    path = _resolve(part.path, opts.media_root).resolve()
    if not path.is_file():
        raise UserError(f"video file not found: {path}")
    if opts.video_as == "file_url":
        # Only for a server on this machine started with --allowed-local-media-path.
        return path.as_uri()
    media_type = mimetypes.guess_type(path.name)[0] or "video/mp4"
    return f"data:{media_type};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def audio_to_wav_base64(part: AudioPart, media_root: str | os.PathLike[str] | None = None) -> str:
    """Audio part -> base64 16-bit PCM WAV, 16 kHz mono."""
    import wave

    try:
        samples, rate = part.load(media_root)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot read audio {part.path!r}: {exc}") from exc
    samples = _resample(np.asarray(samples, dtype=np.float32), rate, AUDIO_SAMPLE_RATE)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(AUDIO_SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or samples.size == 0:
        return samples
    try:
        import soxr
    except ImportError:
        # soxr is in the voice/qwen extras; without it, linear interpolation is good enough for
        # speech sent to a server (it keeps the core install free of a compiled dependency).
        n_out = max(1, round(samples.size * target / rate))
        positions = np.arange(n_out, dtype=np.float64) * (rate / target)
        return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)
    return soxr.resample(samples, rate, target).astype(np.float32)


# -------------------------------------------------------------------------- response side


def body_snippet(body: bytes | str, limit: int = 200) -> str:
    """The first bytes of a body, for error messages."""
    if isinstance(body, bytes):
        body = body[: limit * 4].decode("utf-8", errors="replace")
    body = body.strip()
    return repr(body[:limit] + ("..." if len(body) > limit else ""))


def _with_thinking(reasoning: str, content: str) -> str:
    """Servers with a reasoning parser split ``<think>`` out; put it back so the one parser sees
    the model's text as it was generated."""
    return f"<think>{reasoning}</think>{content}" if reasoning else content


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    details = data.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int((details.get("cached_tokens") if isinstance(details, dict) else 0) or 0),
    )


def _reasoning_of(message: dict[str, Any]) -> str:
    # vLLM used ``reasoning_content``; newer versions and some servers use ``reasoning``.
    value = message.get("reasoning_content") or message.get("reasoning") or ""
    return value if isinstance(value, str) else ""


def server_error_message(data: Any) -> str | None:
    """The human message in an error body (``{"error": {"message": ..}}``, ``{"detail": ..}``)."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        message = error.get("message") or error.get("msg")
        if message:
            kind = error.get("type") or error.get("code")
            return f"{message} ({kind})" if kind and str(kind) not in str(message) else str(message)
    if isinstance(error, str) and error:
        return error
    for key in ("message", "detail"):
        if data.get(key):
            value = data[key]
            return value if isinstance(value, str) else json.dumps(value)[:500]
    return None


def response_from_openai(data: Any, *, raw: bytes | str = b"", where: str = "server") -> ModelResponse:
    """A non-streamed chat-completion body -> ModelResponse (native tool calls kept raw)."""
    if not isinstance(data, dict):
        raise ModelResponseError(f"{where} answered with JSON that is not an object: {body_snippet(raw)}")
    if "error" in data and not data.get("choices"):
        raise ModelError(f"{where} returned an error: {server_error_message(data) or body_snippet(raw)}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ModelResponseError(f"{where} answered without choices: {body_snippet(raw)}")
    # vLLM-Omni answers text + audio as two choices (text in one, audio in the other); OpenAI and
    # SGLang-Omni as one message with ``audio``. Both are read: text from the first choice that
    # has a message without audio data, audio from any choice that carries it.
    messages = [c.get("message") for c in choices if isinstance(c, dict)]
    if not isinstance(messages[0], dict):
        raise ModelResponseError(f"{where} answered without choices[0].message: {body_snippet(raw)}")
    audio = next((decode_audio_payload(m["audio"]) for m in messages if isinstance(m, dict) and _has_audio(m)), None)
    index = next((i for i, m in enumerate(messages) if isinstance(m, dict) and not (_has_audio(m) and not m.get("content"))), 0)
    choice = choices[index]
    message = messages[index]
    content = message.get("content") or ""
    if not isinstance(content, str):  # some servers echo a parts list
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    tool_calls = message.get("tool_calls") or None
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise ModelResponseError(f"{where} sent tool_calls that are not a list: {body_snippet(raw)}")
    return ModelResponse(
        text=_with_thinking(_reasoning_of(message), content),
        raw_tool_calls=tool_calls,
        usage=_usage(data.get("usage")),
        audio=audio,
        finish_reason=choice.get("finish_reason"),
        model=str(data.get("model") or ""),
    )


def _has_audio(message: dict[str, Any]) -> bool:
    audio = message.get("audio")
    return isinstance(audio, dict) and isinstance(audio.get("data"), str) and bool(audio["data"])


SPEECH_RATE = 24_000
"""Sample rate of raw PCM16 audio from servers (OpenAI's and Qwen's hosted APIs send 24 kHz)."""


def decode_audio_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """WAV (or another container soundfile reads) or raw little-endian PCM16 at 24 kHz."""
    if data[:4] in (b"RIFF", b"fLaC", b"OggS"):
        import soundfile

        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return samples.mean(axis=1).astype(np.float32), int(rate)
    pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0), SPEECH_RATE


def decode_audio_payload(audio: dict[str, Any]) -> AudioPart | None:
    """``message.audio`` ({data: base64, transcript}) -> AudioPart; None when it cannot be read."""
    try:
        samples, rate = decode_audio_bytes(base64.b64decode(audio["data"]))
    except Exception:  # a server's broken audio must not lose the text answer
        return None
    transcript = audio.get("transcript")
    return AudioPart.from_array(samples, rate, transcript=transcript if isinstance(transcript, str) else None)


class StreamAssembler:
    """Builds one response from ``chat.completion.chunk`` objects.

    ``feed(chunk)`` returns the text to show now. The pieces add up to the final ``text``:
    reasoning deltas are wrapped in ``<think>...</think>`` as they arrive, so a stream parser
    and the final parser see the same characters. Tool-call deltas are joined by ``index``.
    """

    def __init__(self, *, where: str = "server") -> None:
        self.where = where
        self._parts: list[str] = []
        self._in_thinking = False
        self._calls: dict[int, dict[str, Any]] = {}
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.model = ""
        self.chunks = 0
        self._audio: list[np.ndarray] = []
        self._audio_rate = SPEECH_RATE
        self._transcript: list[str] = []

    def feed(self, chunk: Any) -> str:
        if not isinstance(chunk, dict):
            raise ModelResponseError(f"{self.where} streamed a chunk that is not a JSON object: {body_snippet(json.dumps(chunk))}")
        if "error" in chunk and not chunk.get("choices"):
            raise ModelError(f"{self.where} reported an error mid-stream: {server_error_message(chunk) or chunk}")
        self.chunks += 1
        self.model = str(chunk.get("model") or self.model)
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        out: list[str] = []
        audio_chunk = chunk.get("modality") == "audio"  # vLLM-Omni: audio travels in its own chunks
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            if self._take_audio(delta, audio_chunk) or choice.get("index", 0) != 0:
                continue
            reasoning = _reasoning_of(delta)
            if reasoning:
                out.append(reasoning if self._in_thinking else "<think>" + reasoning)
                self._in_thinking = True
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(self._close_thinking() + content)
            for position, call_delta in enumerate(delta.get("tool_calls") or []):
                self._add_call_delta(call_delta, position)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        text = "".join(out)
        self._parts.append(text)
        return text

    def _take_audio(self, delta: Any, audio_chunk: bool) -> bool:
        """Collect streamed speech (``delta.audio`` or a vLLM-Omni audio chunk); True when the
        delta was audio only."""
        if not isinstance(delta, dict):
            return False
        audio = delta.get("audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        if audio_chunk and data is None and isinstance(delta.get("content"), str):
            data = delta["content"]
        if isinstance(audio, dict) and isinstance(audio.get("transcript"), str):
            self._transcript.append(audio["transcript"])
        if isinstance(data, str) and data:
            try:
                samples, rate = decode_audio_bytes(base64.b64decode(data))
            except Exception:  # undecodable audio is dropped, the text answer is kept
                return audio_chunk
            self._audio.append(samples)
            self._audio_rate = rate
        return audio_chunk or (isinstance(audio, dict) and not delta.get("content") and not delta.get("tool_calls"))

    def _close_thinking(self) -> str:
        if self._in_thinking:
            self._in_thinking = False
            return "</think>"
        return ""

    def _add_call_delta(self, delta: Any, position: int) -> None:
        if not isinstance(delta, dict):
            return
        index = delta.get("index", position)
        call = self._calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if delta.get("id"):
            call["id"] = delta["id"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if isinstance(function.get("arguments"), str):
            call["function"]["arguments"] += function["arguments"]
        elif isinstance(function.get("arguments"), dict):  # a few servers send the object itself
            call["function"]["arguments"] = json.dumps(function["arguments"], ensure_ascii=False)

    def finish(self) -> tuple[str, ModelResponse]:
        """Close the stream: returns (trailing text, the full response)."""
        tail = self._close_thinking()
        self._parts.append(tail)
        calls = [self._calls[i] for i in sorted(self._calls)] or None
        response = ModelResponse(
            text="".join(self._parts),
            raw_tool_calls=calls,
            usage=self.usage,
            audio=self._audio_part(),
            finish_reason=self.finish_reason,
            model=self.model,
        )
        return tail, response

    def _audio_part(self) -> AudioPart | None:
        if not self._audio:
            return None
        transcript = "".join(self._transcript) or None
        return AudioPart.from_array(np.concatenate(self._audio), self._audio_rate, transcript=transcript)
