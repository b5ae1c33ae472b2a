"""OpenAI Chat Completions on the wire <-> ``ModelRequest`` / ``ModelResponse``.

Request side: messages (text, ``image_url`` data URLs, ``input_audio``, assistant
``tool_calls``, ``role: tool`` results), tools (each schema checked), ``tool_choice``, sampling
fields. Response side: the model's raw text goes through the project's one parser
(``omni_agent.parsing``): visible text becomes ``content``, thinking ``reasoning_content``,
calls ``tool_calls``; what the parser had to repair or could not read is reported in the
documented extra field ``parse_problems`` of the message (or of the stream chunk's delta).
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..messages import AssistantMessage, AudioPart, ImagePart, Message, SystemMessage, TextPart, ToolCall, ToolMessage, ToolResult, UserMessage
from ..models.base import GenerationSettings, ModelRequest
from ..parsing.types import ParsedOutput, ParseProblem
from .errors import RequestError
from .image_memo import IMAGE_MEMO

__all__ = [
    "AudioOptions",
    "ChatCompletionRequest",
    "ChatLimits",
    "completion_body",
    "finish_reason_for",
    "new_completion_id",
    "parse_problem_dicts",
    "to_model_request",
    "tool_call_dicts",
    "usage_dict",
]

AudioFormat = Literal["wav", "pcm16"]


class ChatLimits(BaseModel):
    """What the server accepts from clients."""

    max_image_bytes: int = 20 * 2**20
    max_image_pixels: int = 32_000_000
    max_audio_bytes: int = 25 * 2**20
    media_dir: str | None = None
    """Images may be given as file paths / file:// URLs only under this directory (off when None)."""
    max_tokens_cap: int = 8192


class AudioOptions(BaseModel):
    voice: str | None = None
    format: str = "wav"


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields of ``POST /v1/chat/completions`` the server reads (others are ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    modalities: list[str] | None = None
    audio: AudioOptions | None = None
    n: int | None = None
    user: str | None = None
    session_id: str | None = Field(default=None, description="Our extension: names a conversation whose KV prefix is kept")

    @property
    def wants_audio(self) -> bool:
        return "audio" in (self.modalities or [])


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


# --------------------------------------------------------------------------- request side


def to_model_request(body: ChatCompletionRequest, limits: ChatLimits) -> tuple[ModelRequest, str]:
    """The request as the backend takes it, and the ``tool_choice`` mode: "auto", "none",
    "required" or "function:NAME"."""
    if body.n not in (None, 1):
        raise RequestError("only n=1 is supported", param="n")
    if not body.messages:
        raise RequestError("messages must not be empty", param="messages")
    tools = [_checked_tool(t, i) for i, t in enumerate(body.tools or [])]
    choice = _tool_choice(body.tool_choice, tools)
    if choice == "none":
        tools = []
    elif choice.startswith("function:"):
        tools = [t for t in tools if t["function"]["name"] == choice.split(":", 1)[1]]
    if body.wants_audio:
        fmt = (body.audio.format if body.audio else "wav").lower()
        if fmt not in ("wav", "pcm16"):
            raise RequestError(f"audio.format {fmt!r} is not supported; use 'wav' or 'pcm16'", param="audio.format")
    messages = _messages(body.messages, limits)
    wanted = body.max_completion_tokens or body.max_tokens or 1024
    if wanted < 1:
        raise RequestError("max_tokens must be >= 1", param="max_tokens")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    settings = GenerationSettings(
        max_new_tokens=min(wanted, limits.max_tokens_cap),
        temperature=body.temperature if body.temperature is not None else 0.0,
        top_p=body.top_p if body.top_p is not None else 1.0,
        top_k=body.top_k,
        seed=body.seed,
        stop=stop,
    )
    voice = body.audio.voice if body.audio else None
    return ModelRequest(messages=messages, tools=tools, settings=settings, speak=body.wants_audio, voice=voice), choice


def _checked_tool(tool: Any, index: int) -> dict[str, Any]:
    param = f"tools[{index}]"
    if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise RequestError(f"{param} must be {{'type': 'function', 'function': {{...}}}}", param=param)
    function = tool["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name or len(name) > 64 or not all(c.isalnum() or c in "_-." for c in name):
        raise RequestError(f"{param}.function.name must be 1-64 letters, digits, '_', '-' or '.'", param=f"{param}.function.name")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise RequestError(f"{param}.function.parameters must be a JSON Schema object", param=f"{param}.function.parameters")
    problem = _schema_problem(json.dumps(parameters, sort_keys=True))
    if problem is not None:
        raise RequestError(f"{param}.function.parameters is not a valid JSON Schema: {problem}", param=f"{param}.function.parameters")
    clean = {"name": name, "description": str(function.get("description") or ""), "parameters": parameters}
    return {"type": "function", "function": clean}


@functools.lru_cache(maxsize=1024)
def _schema_problem(schema_json: str) -> str | None:
    """Why a tool's parameter schema is invalid (None: valid). Cached by its canonical JSON: an
    agent sends the same tools every step, and checking a schema against the meta-schema costs
    milliseconds."""
    import jsonschema

    schema = json.loads(schema_json)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return exc.message
    return None


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> str:
    if choice is None:
        return "auto" if tools else "none"
    if choice in ("auto", "none", "required"):
        if choice == "required" and not tools:
            raise RequestError("tool_choice 'required' needs tools", param="tool_choice")
        return str(choice)
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if not any(t["function"]["name"] == name for t in tools):
            raise RequestError(f"tool_choice names function {name!r}, which is not in tools", param="tool_choice")
        return f"function:{name}"
    raise RequestError("tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}",
                       param="tool_choice")


def _messages(raw: list[dict[str, Any]], limits: ChatLimits) -> list[Message]:
    out: list[Message] = []
    call_names: dict[str, str] = {}
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"{where} must be an object", param=where)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            out.append(SystemMessage(_parts(content, limits, where, allow_media=False)))
        elif role == "user":
            out.append(UserMessage(_parts(content, limits, where, allow_media=True)))
        elif role == "assistant":
            calls = [_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(message.get("tool_calls") or [])]
            call_names.update({c.id: c.name for c in calls})
            text = _parts(content, limits, where, allow_media=False) if content else []
            out.append(AssistantMessage(text, tool_calls=calls))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise RequestError(f"{where}: a tool message needs tool_call_id", param=f"{where}.tool_call_id")
            parts = _parts(content, limits, where, allow_media=False)
            name = call_names.get(call_id) or str(message.get("name") or "tool")
            out.append(ToolMessage(result=ToolResult(call_id=call_id, name=name, content=parts)))
        else:
            raise RequestError(f"{where}.role {role!r} is not one of system, developer, user, assistant, tool", param=f"{where}.role")
    return out


def _call(raw: Any, where: str) -> ToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise RequestError(f"{where} must be {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}", param=where)
    function = raw["function"]
    arguments = function.get("arguments") or "{}"
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError as exc:
        raise RequestError(f"{where}.function.arguments is not JSON: {exc}", param=where) from None
    if not isinstance(parsed, dict):
        raise RequestError(f"{where}.function.arguments must be a JSON object", param=where)
    kwargs = {"id": raw["id"]} if isinstance(raw.get("id"), str) and raw["id"] else {}
    return ToolCall(name=str(function.get("name") or ""), arguments=parsed, **kwargs)


def _parts(content: Any, limits: ChatLimits, where: str, *, allow_media: bool) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(text=content)]
    if not isinstance(content, list):
        raise RequestError(f"{where}.content must be a string or a list of parts", param=f"{where}.content")
    parts: list[Any] = []
    for j, part in enumerate(content):
        pwhere = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(TextPart(text=str(part.get("text") or "")))
        elif kind == "image_url" and allow_media:
            url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else part.get("image_url")
            parts.append(_image(url, limits, pwhere))
        elif kind == "input_audio" and allow_media:
            parts.append(_audio(part.get("input_audio"), limits, pwhere))
        else:
            raise RequestError(f"{pwhere}: unsupported content part type {kind!r} here", param=pwhere)
    return parts


def _image(url: Any, limits: ChatLimits, where: str) -> ImagePart:
    if not isinstance(url, str) or not url:
        raise RequestError(f"{where}.image_url.url is missing", param=where)
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        if ";base64" not in header:
            raise RequestError(f"{where}: image data URLs must be base64", param=where)
        if len(data) * 3 // 4 > limits.max_image_bytes:
            raise RequestError(f"{where}: image is larger than {limits.max_image_bytes} bytes", param=where, code="image_too_large")
        try:
            raw = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            raise RequestError(f"{where}: image data URL is not valid base64", param=where) from None
        image = IMAGE_MEMO.get(raw, lambda: _decoded(io.BytesIO(raw), limits, where))
        _check_pixels(image, limits, where)  # a memo hit may come from a server with other limits
        return ImagePart.from_pil(image)
    elif limits.media_dir is not None:
        path = Path(url[7:] if url.startswith("file://") else url).expanduser().resolve()
        root = Path(limits.media_dir).resolve()
        if root not in path.parents or not path.is_file():
            raise RequestError(f"{where}: {url!r} is not a file under the server's media directory", param=where)
        return ImagePart.from_pil(_decoded(path, limits, where))
    raise RequestError(f"{where}: images must be data URLs (this server reads no files or web URLs)", param=where)


def _decoded(source: Any, limits: ChatLimits, where: str) -> Any:
    """The RGB image of an encoded file or buffer, refused past ``limits.max_image_pixels``."""
    from PIL import Image

    try:
        with Image.open(source) as img:
            _check_pixels(img, limits, where)  # before decoding the pixels (decompression bombs)
            return img.convert("RGB")
    except RequestError:
        raise
    except Exception as exc:  # PIL raises several types for undecodable or bomb images
        raise RequestError(f"{where}: cannot decode image: {exc}", param=where) from None


def _check_pixels(img: Any, limits: ChatLimits, where: str) -> None:
    if img.width * img.height > limits.max_image_pixels:
        raise RequestError(f"{where}: image is {img.width}x{img.height}, more than {limits.max_image_pixels} pixels",
                           param=where, code="image_too_large")


def _audio(spec: Any, limits: ChatLimits, where: str) -> AudioPart:
    import soundfile

    if not isinstance(spec, dict) or not isinstance(spec.get("data"), str):
        raise RequestError(f"{where}.input_audio needs base64 'data' and a 'format'", param=where)
    if len(spec["data"]) * 3 // 4 > limits.max_audio_bytes:
        raise RequestError(f"{where}: audio is larger than {limits.max_audio_bytes} bytes", param=where)
    try:
        raw = base64.b64decode(spec["data"])
        samples, rate = soundfile.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except Exception as exc:  # binascii / soundfile errors
        raise RequestError(f"{where}: cannot decode input_audio ({spec.get('format')}): {exc}", param=where) from None
    return AudioPart.from_array(samples.mean(axis=1), int(rate))


# -------------------------------------------------------------------------- response side


def tool_call_dicts(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
        for c in calls
    ]


def parse_problem_dicts(problems: list[ParseProblem]) -> list[dict[str, Any]]:
    return [p.model_dump() for p in problems]


def completion_body(
    *,
    completion_id: str,
    model: str,
    parsed: ParsedOutput,
    finish_reason: str,
    usage: dict[str, Any],
    audio: dict[str, Any] | None,
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": parsed.visible_text or (None if parsed.calls else "")}
    if parsed.calls:
        message["tool_calls"] = tool_call_dicts(parsed.calls)
    if parsed.thinking:
        message["reasoning_content"] = parsed.thinking
    if parsed.problems:
        message["parse_problems"] = parse_problem_dicts(parsed.problems)
    if audio is not None:
        message["audio"] = audio
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage,
    }


def finish_reason_for(parsed: ParsedOutput, model_reason: str | None) -> str:
    if parsed.calls:
        return "tool_calls"
    return "length" if model_reason == "length" else "stop"


def usage_dict(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
