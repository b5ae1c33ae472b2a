"""A Realtime conversation: ordered items, their wire form, and the messages the Thinker reads.

Items are what the protocol names (user / assistant messages, function calls, function call
outputs); the Thinker reads provider-neutral messages. One response's visible text and its
calls become one ``AssistantMessage``, and each output becomes a ``ToolMessage`` for the call it
answers, so the prompt is the one the agent loop would build for the same turns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..messages import AssistantMessage, AudioPart, Message, SystemMessage, TextPart, ToolCall, ToolMessage
from ..messages import ToolResult, UserMessage
from ..voice.audio_io import INPUT_RATE
from .realtime_events import ProtocolError, new_id

__all__ = ["Conversation", "Item", "SpokenSegment", "truncate_transcript"]


@dataclass
class SpokenSegment:
    """A piece of the transcript and where its audio lies in the item's audio (ms)."""

    text: str
    start_ms: float
    end_ms: float


@dataclass
class Item:
    """One conversation item, in the server's own terms."""

    type: Literal["message", "function_call", "function_call_output"]
    id: str = field(default_factory=lambda: new_id("item"))
    role: Literal["user", "assistant", "system"] | None = None
    text: str = ""
    """User or system text, or the assistant's visible answer (its transcript when spoken)."""
    audio: np.ndarray | None = None
    """A user turn's audio at 16 kHz."""
    spoken: bool = False
    """An assistant message whose text was voiced (content type ``output_audio``)."""
    segments: list[SpokenSegment] = field(default_factory=list)
    call: ToolCall | None = None
    call_id: str | None = None
    output: str | None = None
    response_id: str | None = None
    status: Literal["completed", "incomplete", "in_progress"] = "completed"

    @property
    def audio_ms(self) -> float:
        return self.segments[-1].end_ms if self.segments else 0.0

    def wire(self) -> dict[str, Any]:
        base: dict[str, Any] = {"id": self.id, "object": "realtime.item", "type": self.type, "status": self.status}
        if self.type == "function_call":
            assert self.call is not None
            return base | {"name": self.call.name, "call_id": self.call.id, "arguments": json.dumps(self.call.arguments)}
        if self.type == "function_call_output":
            return base | {"call_id": self.call_id, "output": self.output}
        return base | {"role": self.role, "content": self._content()}

    def _content(self) -> list[dict[str, Any]]:
        if self.role == "assistant":
            if self.spoken:
                return [{"type": "output_audio", "transcript": self.text}]
            return [{"type": "output_text", "text": self.text}]
        parts: list[dict[str, Any]] = []
        if self.text:
            parts.append({"type": "input_text", "text": self.text})
        if self.audio is not None:
            parts.append({"type": "input_audio", "transcript": None})
        return parts


class Conversation:
    """The session's items in order, with the edits the protocol allows."""

    def __init__(self) -> None:
        self.items: list[Item] = []

    def get(self, item_id: str, *, param: str = "item_id") -> Item:
        for item in self.items:
            if item.id == item_id:
                return item
        raise ProtocolError(f"no conversation item {item_id!r}", code="item_not_found", param=param)

    def add(self, item: Item, *, previous_item_id: str | None = None) -> str | None:
        """Insert ``item`` (at the end, first for ``"root"``, or after the named item); returns
        the id of the item before it."""
        if any(i.id == item.id for i in self.items):
            raise ProtocolError(f"an item with id {item.id!r} already exists", code="duplicate_item_id", param="item.id")
        if item.type == "function_call_output" and self.call(item.call_id or "") is None:
            raise ProtocolError(f"function_call_output for call_id {item.call_id!r}, which no function_call has",
                                code="unknown_call_id", param="item.call_id")  # fmt: skip
        if previous_item_id is None:
            index = len(self.items)
        elif previous_item_id == "root":
            index = 0
        else:
            index = self.items.index(self.get(previous_item_id, param="previous_item_id")) + 1
        self.items.insert(index, item)
        return self.items[index - 1].id if index else None

    def delete(self, item_id: str) -> None:
        self.items.remove(self.get(item_id))

    def call(self, call_id: str) -> ToolCall | None:
        for item in self.items:
            if item.type == "function_call" and item.call is not None and item.call.id == call_id:
                return item.call
        return None

    def messages(self, instructions: str) -> list[Message]:
        """The Thinker's view: instructions, then every item in order."""
        out: list[Message] = [SystemMessage(instructions)] if instructions else []
        turn_of: str | None = None  # the response whose assistant turn is out[-1]
        for item in self.items:
            if item.role == "assistant" and item.type == "message" and not item.text:
                continue  # an answer cut before a word of it was heard
            if item.role == "assistant" or item.type == "function_call":
                # One response's message and calls go into one assistant turn.
                if not (item.response_id and turn_of == item.response_id and isinstance(out[-1], AssistantMessage)):
                    out.append(AssistantMessage())
                    turn_of = item.response_id
                turn = out[-1]
                assert isinstance(turn, AssistantMessage)
                if item.call is not None:
                    turn.tool_calls.append(item.call)
                elif item.text:
                    turn.content.append(TextPart(text=item.text))
                continue
            turn_of = None
            if item.type == "function_call_output":
                call = self.call(item.call_id or "")
                result = ToolResult(call_id=item.call_id or "", name=call.name if call else "unknown",
                                    content=[TextPart(text=item.output or "")])  # fmt: skip
                out.append(ToolMessage(result=result))
                continue
            parts: list[Any] = [TextPart(text=item.text)] if item.text else []
            if item.audio is not None:
                parts.append(AudioPart.from_array(item.audio, INPUT_RATE))
            out.append(SystemMessage(parts) if item.role == "system" else UserMessage(parts))
        return out


def truncate_transcript(segments: list[SpokenSegment], audio_end_ms: float) -> str:
    """The part of a spoken answer the user heard: whole segments played, then the share of the
    next one played, cut back to a word boundary."""
    kept: list[str] = []
    for seg in segments:
        if seg.end_ms <= audio_end_ms:
            kept.append(seg.text)
            continue
        if seg.start_ms < audio_end_ms and seg.end_ms > seg.start_ms:
            share = (audio_end_ms - seg.start_ms) / (seg.end_ms - seg.start_ms)
            cut = seg.text[: int(len(seg.text) * share)]
            kept.append(cut[: cut.rfind(" ")] if " " in cut else "")
        break
    return "".join(kept).strip()
