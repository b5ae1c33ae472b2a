"""What travels over the console's WebSocket, in one place.

Client -> server: JSON text messages (:data:`ClientMessage`, validated by pydantic; a bad one
gets an ``error`` reply and changes nothing) and binary push-to-talk audio (first byte
:data:`AUDIO_IN`, then 16 kHz mono int16 PCM). Server -> client: JSON text (agent events as
``{"type": "event", "event": {...}}`` by :func:`event_to_json`, and the ``*Message`` /
``Approval*`` models below) and binary frames whose first byte says what follows (:data:`FRAME`: 8-byte little-endian capture time in
Unix seconds, then a JPEG; :data:`SPEECH`: a WAV file).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import struct
from typing import Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter

from .. import events as ev
from ..messages import ImagePart, ToolCall, ToolResult

__all__ = [
    "AUDIO_IN",
    "ApprovalClosed",
    "ApprovalRequest",
    "ApproveMessage",
    "ClientMessage",
    "ErrorMessage",
    "FRAME",
    "HeardMessage",
    "KeyMessage",
    "ObservationMessage",
    "PauseMessage",
    "PointerMessage",
    "PttMessage",
    "ResumeMessage",
    "SPEECH",
    "SpeechMessage",
    "StartMessage",
    "StateMessage",
    "StopMessage",
    "TargetMessage",
    "TypeMessage",
    "UserAction",
    "event_to_json",
    "frame_message",
    "parse_client_message",
    "thumbnail",
]

FRAME = 1
AUDIO_IN = 2
SPEECH = 3
THUMB_WIDTH = 480
"""Width of the screenshots the timeline shows (the model's own images are larger)."""


class StartMessage(BaseModel):
    type: Literal["start"]
    instruction: str = Field(min_length=1, max_length=20_000)


class StopMessage(BaseModel):
    type: Literal["stop"]


class PauseMessage(BaseModel):
    type: Literal["pause"]


class ResumeMessage(BaseModel):
    type: Literal["resume"]


class ApproveMessage(BaseModel):
    type: Literal["approve"]
    call_id: str
    approve: bool
    arguments: dict[str, Any] | None = None
    """Edited arguments (validated again before the call runs)."""


class PointerMessage(BaseModel):
    """A take-over click or drag on the live screen, in fractions of the frame (0..1)."""

    type: Literal["click", "double_click", "right_click", "drag"]
    fx: float = Field(ge=0, le=1)
    fy: float = Field(ge=0, le=1)
    fx2: float | None = Field(default=None, ge=0, le=1)
    fy2: float | None = Field(default=None, ge=0, le=1)


class TypeMessage(BaseModel):
    type: Literal["type"]
    text: str = Field(min_length=1, max_length=5_000)


class KeyMessage(BaseModel):
    type: Literal["key"]
    keys: list[str] = Field(min_length=1, max_length=5)


class PttMessage(BaseModel):
    """Push-to-talk: ``down`` starts a take (and stops the page's speech), ``up`` sends it."""

    type: Literal["ptt"]
    action: Literal["down", "up"]


ClientMessage = Union[
    StartMessage, StopMessage, PauseMessage, ResumeMessage, ApproveMessage,
    PointerMessage, TypeMessage, KeyMessage, PttMessage,
]  # fmt: skip
_CLIENT = TypeAdapter(ClientMessage)


def parse_client_message(text: str) -> ClientMessage:
    """Validate one JSON message from the page (raises pydantic's ValidationError / ValueError)."""
    return _CLIENT.validate_json(text)


# -- server -> page ----------------------------------------------------------------------------


class _ServerMessage(BaseModel):
    def wire(self) -> str:
        """The JSON text sent to the pages."""
        return self.model_dump_json(by_alias=True)


class StateMessage(_ServerMessage):
    type: Literal["state"] = "state"
    state: Literal["idle", "running", "paused"]
    run_id: str = ""
    step: int = 0
    at_gate: bool = False
    """Paused and waiting between steps (take-over is possible now)."""


class ApprovalRequest(_ServerMessage):
    type: Literal["approval"] = "approval"
    call: ToolCall
    reason: str
    schema_: dict[str, Any] = Field(default_factory=dict, serialization_alias="schema")
    """The tool's JSON Schema, so the page can show what the arguments may be."""


class ApprovalClosed(_ServerMessage):
    type: Literal["approval_closed"] = "approval_closed"
    call_id: str


class TargetMessage(_ServerMessage):
    """Where a model's desktop call acts, in fractions of the screen (a drag also has its start)."""

    type: Literal["target"] = "target"
    action: str | None = None
    fx: float
    fy: float
    fx0: float | None = None
    fy0: float | None = None


class ObservationMessage(_ServerMessage):
    type: Literal["observation"] = "observation"
    step: int
    images: list[str]
    """JPEG data URLs of what an observer showed the model."""


class SpeechMessage(_ServerMessage):
    """Announces the WAV frame that follows (or, as ``speech_stop``, that it was cut off)."""

    type: Literal["speech", "speech_stop"] = "speech"
    id: int
    text: str = ""
    kind: str = ""


class HeardMessage(_ServerMessage):
    type: Literal["heard"] = "heard"
    seconds: float


class ErrorMessage(_ServerMessage):
    type: Literal["error"] = "error"
    message: str


@dataclasses.dataclass(kw_only=True)
class UserAction(ev.AgentEvent):
    """The user acted on the screen while the run was paused (take-over); recorded in the run."""

    type: str = "user_action"
    tool: str = ""
    arguments: dict[str, Any] = dataclasses.field(default_factory=dict)
    result: ToolResult | None = None


def frame_message(captured_at: float, jpeg: bytes) -> bytes:
    """A binary frame: kind byte, capture time, JPEG."""
    return bytes([FRAME]) + struct.pack("<d", captured_at) + jpeg


def thumbnail(part: ImagePart) -> str | None:
    """A small JPEG data URL of an image the model was shown (None if it cannot be read)."""
    try:
        image = part.load() if hasattr(part, "load") else None
    except Exception:  # noqa: BLE001 - a missing file must not break the timeline
        return None
    if image is None:
        return None
    image = image.convert("RGB")
    if image.width > THUMB_WIDTH:
        image = image.resize((THUMB_WIDTH, max(1, image.height * THUMB_WIDTH // image.width)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _result_json(result: ToolResult) -> dict[str, Any]:
    images = [t for t in (thumbnail(p) for p in result.content if isinstance(p, ImagePart)) if t]
    return {"call_id": result.call_id, "name": result.name, "text": result.text, "is_error": result.is_error, "images": images}


def _value(value: Any) -> Any:
    if isinstance(value, ToolResult):
        return _result_json(value)
    if isinstance(value, ToolCall):
        return value.model_dump(mode="json")
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def event_to_json(event: ev.AgentEvent) -> str:
    """One agent event as the page reads it (tool results with their screenshots as thumbnails)."""
    body = {f.name: _value(getattr(event, f.name)) for f in dataclasses.fields(event)}
    return json.dumps({"type": "event", "event": body}, default=str, ensure_ascii=False)
