"""The model interface every backend implements (scripted, OpenAI-compatible, local Qwen-Omni).

A backend gets the conversation and the tool schemas and returns the assistant's raw text (and,
where the server parsed them, native tool calls). Parsing the raw text into calls is the agent's
job (``omni_agent.parsing``), so every backend goes through the same tolerant parser.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..messages import AudioPart, Message, ToolCall

__all__ = [
    "GenerationSettings",
    "Model",
    "ModelChunk",
    "ModelInfo",
    "ModelRequest",
    "ModelResponse",
    "Usage",
]

CoordinateSpace = Literal["relative_1000", "absolute_resized"]


class GenerationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


class ModelRequest(BaseModel):
    """Everything a backend needs for one step."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    """OpenAI-format function schemas (``{"type": "function", "function": {...}}``)."""
    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    speak: bool = False
    """Ask for speech of the answer (only backends with ``info.can_speak``)."""
    voice: str | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ModelResponse(BaseModel):
    """One assistant turn as the backend produced it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    text: str
    """Raw generated text (may contain ``<think>`` and ``<tool_call>`` blocks)."""
    tool_calls: list[ToolCall] | None = None
    """Native tool calls when the server parsed them (OpenAI ``tool_calls``); else None."""
    raw_tool_calls: list[dict[str, Any]] | None = None
    """The server's unparsed ``tool_calls`` structure, for the parser to check."""
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)
    """Seconds per stage, e.g. {"preprocess": .., "prefill": .., "decode": ..}."""
    audio: AudioPart | None = None
    finish_reason: str | None = None
    model: str = ""


@dataclass
class ModelChunk:
    """A piece of a streamed answer: text as it arrives; ``response`` set on the last chunk."""

    text: str = ""
    response: ModelResponse | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What a backend can do; shown wherever results are shown."""

    name: str
    backend: str
    """"scripted", "openai", "qwen-omni", ... ; "scripted" results are never model results."""
    can_see: bool = True
    can_hear: bool = False
    can_speak: bool = False
    coordinate_space: CoordinateSpace = "relative_1000"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_scripted(self) -> bool:
        return self.backend == "scripted"

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.name}" + (" (scripted policy, not a model)" if self.is_scripted else "")


class Model(abc.ABC):
    """Backend interface: implement ``complete``; override ``stream`` to stream text."""

    info: ModelInfo

    @abc.abstractmethod
    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Generate one assistant turn."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Yield text chunks, the last one carrying the full response. Default: no streaming."""
        response = await self.complete(request)
        yield ModelChunk(text=response.text, response=response)

    async def aclose(self) -> None:
        """Release resources (HTTP clients, GPU memory)."""
