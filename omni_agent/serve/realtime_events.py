"""The OpenAI Realtime protocol's shapes: client events in (pydantic), server events out (dicts).

Client events are validated here, at the boundary, so a malformed one becomes one ``error``
event naming the field and never reaches the session. Both spellings of the session are read:
the GA one (``audio.input.turn_detection``, ``audio.output.voice``, ``output_modalities``) and
the beta one that clients in the field still send (``turn_detection``, ``voice``,
``modalities``). Unknown fields are ignored, as SDKs send more than this server uses.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..tool import TOOL_NAME_RE

__all__ = [
    "AUDIO_RATE",
    "ClientEvent",
    "ConversationItemCreate",
    "ConversationItemDelete",
    "ConversationItemRetrieve",
    "ConversationItemTruncate",
    "FunctionCallOutputItem",
    "FunctionTool",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCommit",
    "MessageItem",
    "OutputAudioBufferClear",
    "ProtocolError",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseOptions",
    "SessionPatch",
    "SessionUpdate",
    "TurnDetection",
    "error_event",
    "new_id",
    "parse_client_event",
]

AUDIO_RATE = 24_000
"""PCM16 mono at 24 kHz: the Realtime default, the one format this server speaks both ways."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class ProtocolError(Exception):
    """A client event the server cannot act on; sent back as one ``error`` event."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None,
                 event_id: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.message, self.code, self.param, self.event_id = message, code, param, event_id


def error_event(error: ProtocolError, *, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": new_id("event"),
        "error": {"type": type_, "code": error.code, "message": error.message, "param": error.param,
                  "event_id": error.event_id},  # fmt: skip
    }


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- session configuration -----------------------------------------------------------------------
class TurnDetection(_Lenient):
    """Server VAD settings (``semantic_vad`` is accepted and served by the same VAD)."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = Field(0.5, gt=0, lt=1)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)
    silence_duration_ms: int = Field(500, ge=32, le=10_000)
    create_response: bool = True
    interrupt_response: bool = True


class FunctionTool(_Lenient):
    type: Literal["function"] = "function"
    name: str = Field(pattern=TOOL_NAME_RE.pattern)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class _AudioFormat(_Lenient):
    type: str = "audio/pcm"
    rate: int = AUDIO_RATE


class _AudioInput(_Lenient):
    format: _AudioFormat | None = None
    turn_detection: TurnDetection | None = None


class _AudioOutput(_Lenient):
    format: _AudioFormat | None = None
    voice: str | None = None


class _Audio(_Lenient):
    input: _AudioInput | None = None
    output: _AudioOutput | None = None


ToolChoice = Union[Literal["auto", "none", "required"], dict[str, Any]]
Modality = Literal["text", "audio"]


class SessionPatch(_Lenient):
    """A ``session.update``'s ``session``: only the fields it names change (GA or beta names)."""

    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    output_modalities: list[Modality] | None = Field(None, min_length=1)
    modalities: list[Modality] | None = Field(None, min_length=1)
    audio: _Audio | None = None
    voice: str | None = None
    turn_detection: TurnDetection | None = None
    input_audio_format: str | None = None
    output_audio_format: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_output_tokens: int | Literal["inf"] | None = None
    max_response_output_tokens: int | Literal["inf"] | None = None


class ResponseOptions(_Lenient):
    """``response.create``'s ``response``: overrides for this response only."""

    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    output_modalities: list[Modality] | None = Field(None, min_length=1)
    modalities: list[Modality] | None = Field(None, min_length=1)
    voice: str | None = None
    conversation: Literal["auto", "none"] = "auto"
    max_output_tokens: int | Literal["inf"] | None = None
    max_response_output_tokens: int | Literal["inf"] | None = None
    metadata: dict[str, str] | None = None


# -- conversation items ------------------------------------------------------------------------
class _Content(_Lenient):
    type: Literal["input_text", "input_audio", "text", "output_text", "output_audio", "audio"]
    text: str | None = None
    audio: str | None = None
    """Base64 PCM16 at 24 kHz (``input_audio``)."""
    transcript: str | None = None


class MessageItem(_Lenient):
    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant", "system"]
    content: list[_Content] = Field(min_length=1)


class FunctionCallOutputItem(_Lenient):
    type: Literal["function_call_output"]
    id: str | None = None
    call_id: str = Field(min_length=1)
    output: str


ConversationItem = Annotated[Union[MessageItem, FunctionCallOutputItem], Field(discriminator="type")]


# -- client events -------------------------------------------------------------------------------
class _Event(_Lenient):
    event_id: str | None = None


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: SessionPatch


class InputAudioBufferAppend(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_Event):
    type: Literal["input_audio_buffer.clear"]


class OutputAudioBufferClear(_Event):
    type: Literal["output_audio_buffer.clear"]


class ConversationItemCreate(_Event):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: ConversationItem


class ConversationItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(0, ge=0)
    audio_end_ms: int = Field(ge=0)


class ConversationItemDelete(_Event):
    type: Literal["conversation.item.delete"]
    item_id: str


class ConversationItemRetrieve(_Event):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: ResponseOptions = Field(default_factory=ResponseOptions)


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = Annotated[
    Union[
        SessionUpdate, InputAudioBufferAppend, InputAudioBufferCommit, InputAudioBufferClear,
        OutputAudioBufferClear, ConversationItemCreate, ConversationItemTruncate, ConversationItemDelete,
        ConversationItemRetrieve, ResponseCreate, ResponseCancel,
    ],  # fmt: skip
    Field(discriminator="type"),
]
_CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(ClientEvent)
_KNOWN_TYPES = frozenset(
    t for m in ClientEvent.__origin__.__args__ for t in m.model_fields["type"].annotation.__args__  # type: ignore[attr-defined]
)


def parse_client_event(data: Any) -> Any:
    """A decoded JSON value -> one of the client event models, or a :class:`ProtocolError`."""
    if not isinstance(data, dict):
        raise ProtocolError(f"a client event is a JSON object, got {type(data).__name__}", code="invalid_event")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("the event has no 'type'", code="invalid_event", param="type", event_id=event_id)
    if kind not in _KNOWN_TYPES:
        raise ProtocolError(f"unknown event type {kind!r}; this server handles: {', '.join(sorted(_KNOWN_TYPES))}",
                            code="unknown_event_type", param="type", event_id=event_id)  # fmt: skip
    try:
        return _CLIENT_EVENT.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:])  # [0] is the union tag
        raise ProtocolError(f"{kind}: {where or 'event'}: {first['msg']}", param=where or None,
                            event_id=event_id) from exc  # fmt: skip
