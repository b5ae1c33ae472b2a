"""omni-agent: tool-calling multimodal agents on Qwen-Omni (voice in, speech out, schema-valid calls).

The public API is what ``__all__`` lists; everything else is internal and may change.
"""

from .exceptions import (
    MissingDependencyError,
    ModelError,
    ModelResponseError,
    ModelUnavailableError,
    OmniAgentError,
    ToolDefinitionError,
    ToolExecutionError,
    TrajectoryError,
    UserError,
)
from .loop import Agent, RunResult, StopReason
from .messages import (
    AssistantMessage,
    AudioPart,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    ToolResult,
    UserMessage,
    VideoPart,
)
from .models.base import GenerationSettings, Model, ModelInfo, ModelRequest, ModelResponse
from .models.scripted import ScriptedModel
from .models.spec import load_model
from .parsing import StreamParser, parse_output
from .policy import DefaultPolicy, allow_all, deny_all
from .registry import ToolRegistry
from .replay import replay
from .tool import Tool, ToolContext, ToolOutput, tool
from .toolkit import Toolkit
from .trajectory import load_trajectory
from .validation import validate_call

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AssistantMessage",
    "AudioPart",
    "DefaultPolicy",
    "GenerationSettings",
    "ImagePart",
    "MissingDependencyError",
    "Model",
    "ModelError",
    "ModelInfo",
    "ModelRequest",
    "ModelResponse",
    "ModelResponseError",
    "ModelUnavailableError",
    "OmniAgentError",
    "RunResult",
    "ScriptedModel",
    "StopReason",
    "StreamParser",
    "SystemMessage",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolDefinitionError",
    "ToolExecutionError",
    "ToolMessage",
    "ToolOutput",
    "ToolRegistry",
    "ToolResult",
    "Toolkit",
    "TrajectoryError",
    "UserError",
    "UserMessage",
    "VideoPart",
    "__version__",
    "allow_all",
    "deny_all",
    "load_model",
    "load_trajectory",
    "parse_output",
    "replay",
    "tool",
    "validate_call",
]
