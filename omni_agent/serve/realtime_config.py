"""One Realtime session's settings: what ``session.update`` changes and ``session.*`` events show.

Kept apart from the wire models so the session has one typed view, whichever spelling (GA or
beta) the client used. Tool schemas are checked here (JSON Schema, Draft 2020-12) so a bad one
is refused at ``session.update`` rather than failing a later response.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..exceptions import UserError
from ..registry import ToolRegistry
from ..tool import Tool
from .realtime_events import (
    AUDIO_RATE,
    FunctionTool,
    Modality,
    ProtocolError,
    ResponseOptions,
    SessionPatch,
    ToolChoice,
    TurnDetection,
)

__all__ = ["SessionConfig", "chat_tools", "check_tools", "tool_registry"]

_AUDIO_FORMATS = {"pcm16", "audio/pcm"}


class SessionConfig(BaseModel):
    """The session as the server runs it."""

    model_config = ConfigDict(extra="forbid")
    instructions: str = ""
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    output_modalities: list[Modality] = Field(default_factory=lambda: ["audio"])
    voice: str | None = None
    turn_detection: TurnDetection | None = Field(default_factory=TurnDetection)
    temperature: float | None = None
    max_output_tokens: int | Literal["inf"] = "inf"

    def updated(self, patch: SessionPatch) -> "SessionConfig":
        """A copy with ``patch`` applied (fields it does not name keep their values)."""
        given = patch.model_fields_set
        changes: dict[str, Any] = {}
        for name in ("instructions", "tool_choice", "temperature"):
            if name in given and getattr(patch, name) is not None:
                changes[name] = getattr(patch, name)
        if "tools" in given:
            changes["tools"] = check_tools(patch.tools or [], param="session.tools")
        modalities = patch.output_modalities or patch.modalities
        if modalities:
            changes["output_modalities"] = _modalities(modalities)
        limit = patch.max_output_tokens or patch.max_response_output_tokens
        if limit is not None:
            changes["max_output_tokens"] = limit
        audio = patch.audio
        voice = patch.voice or (audio.output.voice if audio and audio.output else None)
        if voice:
            changes["voice"] = voice
        if "turn_detection" in given:
            changes["turn_detection"] = patch.turn_detection
        if audio and audio.input and "turn_detection" in audio.input.model_fields_set:
            changes["turn_detection"] = audio.input.turn_detection
        _check_formats(patch)
        return self.model_copy(update=changes)

    def for_response(self, options: ResponseOptions) -> "SessionConfig":
        """The settings one ``response.create`` runs with (its overrides on top of the session)."""
        changes: dict[str, Any] = {}
        if options.instructions is not None:
            changes["instructions"] = options.instructions
        if options.tools is not None:
            changes["tools"] = check_tools(options.tools, param="response.tools")
        if options.tool_choice is not None:
            changes["tool_choice"] = options.tool_choice
        modalities = options.output_modalities or options.modalities
        if modalities:
            changes["output_modalities"] = _modalities(modalities)
        if options.voice:
            changes["voice"] = options.voice
        limit = options.max_output_tokens or options.max_response_output_tokens
        if limit is not None:
            changes["max_output_tokens"] = limit
        return self.model_copy(update=changes)

    @property
    def speaks(self) -> bool:
        return "audio" in self.output_modalities

    def model_tools(self) -> list[dict[str, Any]]:
        """The tools the Thinker sees, in Chat Completions form, after ``tool_choice``.

        ``none`` hides every tool and a named function hides the others; neither forces a call.
        """
        choice = self.tool_choice
        if choice == "none":
            return []
        tools = self.tools
        if isinstance(choice, dict):
            name = choice.get("name") or (choice.get("function") or {}).get("name")
            tools = [t for t in tools if t.name == name]
            if not tools:
                raise ProtocolError(f"tool_choice names {name!r}, which is not among the tools",
                                    param="tool_choice")  # fmt: skip
        return chat_tools(tools)

    def wire(self, *, session_id: str, model: str) -> dict[str, Any]:
        """The ``session`` object of ``session.created`` / ``session.updated`` (GA shape)."""
        pcm = {"type": "audio/pcm", "rate": AUDIO_RATE}
        detection = self.turn_detection.model_dump() if self.turn_detection else None
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "tools": [t.model_dump() for t in self.tools],
            "tool_choice": self.tool_choice,
            "max_output_tokens": self.max_output_tokens,
            "audio": {
                "input": {"format": pcm, "turn_detection": detection, "transcription": None},
                "output": {"format": pcm, "voice": self.voice},
            },
        }


def _modalities(values: list[Modality]) -> list[Modality]:
    """``["audio"]`` and ``["text", "audio"]`` both mean speech with its transcript."""
    return ["audio"] if "audio" in values else ["text"]


def _check_formats(patch: SessionPatch) -> None:
    audio = patch.audio
    formats = [("input_audio_format", patch.input_audio_format), ("output_audio_format", patch.output_audio_format)]
    for side, part in (("input", audio.input if audio else None), ("output", audio.output if audio else None)):
        if part is not None and part.format is not None:
            fmt = part.format
            if fmt.type in _AUDIO_FORMATS and fmt.rate != AUDIO_RATE:
                raise ProtocolError(f"audio.{side}.format.rate must be {AUDIO_RATE}", param=f"session.audio.{side}.format")
            formats.append((f"audio.{side}.format.type", fmt.type))
    for param, value in formats:
        if value is not None and value not in _AUDIO_FORMATS:
            raise ProtocolError(f"{param} {value!r} is not supported: this server takes and sends PCM16 "
                                f"mono at {AUDIO_RATE} Hz ('audio/pcm' or 'pcm16')",
                                code="unsupported_audio_format", param=f"session.{param}")  # fmt: skip


def check_tools(tools: list[FunctionTool], *, param: str) -> list[FunctionTool]:
    """Refuse duplicate names and parameter schemas that are not valid JSON Schema."""
    from jsonschema import Draft202012Validator, SchemaError

    seen: set[str] = set()
    for i, tool in enumerate(tools):
        if tool.name in seen:
            raise ProtocolError(f"two tools are named {tool.name!r}", param=f"{param}[{i}].name")
        seen.add(tool.name)
        try:
            Draft202012Validator.check_schema(tool.parameters)
        except SchemaError as exc:
            raise ProtocolError(f"tool {tool.name!r}: its parameters are not a valid JSON Schema: {exc.message}",
                                code="invalid_tool_schema", param=f"{param}[{i}].parameters") from exc  # fmt: skip
        if tool.parameters.get("type", "object") != "object":
            raise ProtocolError(f"tool {tool.name!r}: parameters must be an object schema",
                                code="invalid_tool_schema", param=f"{param}[{i}].parameters")  # fmt: skip
    return tools


def tool_registry(tools: list[dict[str, Any]]) -> ToolRegistry:
    """The offered tools as a registry for ``validate_call`` (the server never runs them)."""
    return ToolRegistry(Tool.from_schema(schema, _runs_on_the_client) for schema in tools)


def _runs_on_the_client(**arguments: Any) -> None:
    raise UserError("Realtime tools run on the client: the server only validates their calls")


def chat_tools(tools: list[FunctionTool]) -> list[dict[str, Any]]:
    """Realtime's flat function tools -> the Chat Completions form ``ModelRequest`` takes."""
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]
