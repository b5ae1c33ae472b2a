"""omni-agent: tool-calling multimodal agents on Qwen-Omni (voice in, speech out, schema-valid calls).

The public API is what ``__all__`` lists (pinned by tests/test_exported_members.py); everything
else is internal and may change. What a script needs is here, as the CLI uses it: models
(:func:`load_model`, :func:`parse_model_spec`), tool sets (:func:`load_toolsets`,
:func:`load_toolsets_with_observers`, the browser and desktop tools and the sessions they drive),
a virtual display (:class:`VirtualDisplay`), spoken progress (:func:`attach_voice_output`), and
trajectories with their HTML page (written by every :class:`Agent` run by default;
:func:`render_trajectory_html` for a page of your own).
"""

from .exceptions import (
    DisplayError,
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
from .html_report import render_trajectory_html
from .models.spec import ModelSpec, load_model, parse_model_spec
from .parsing import StreamParser, parse_output
from .policy import DefaultPolicy, allow_all, deny_all
from .registry import ToolRegistry
from .replay import replay
from .tool import Tool, ToolContext, ToolOutput, tool
from .toolkit import Toolkit
from .toolsets import LoadedToolsets, load_toolsets, load_toolsets_with_observers
from .trajectory import Trajectory, load_trajectory
from .validation import validate_call
from .voice.output import VoiceOutput, attach_voice_output
from .xvfb import VirtualDisplay

# The built-in browser and desktop tools (their heavy libraries load on first use).
from .tools.browser import BrowserConfig, BrowserSession, browser_tools  # noqa: E402
from .tools.desktop import DesktopConfig, DesktopController, desktop_tools  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AssistantMessage",
    "AudioPart",
    "BrowserConfig",
    "BrowserSession",
    "DefaultPolicy",
    "DesktopConfig",
    "DesktopController",
    "DisplayError",
    "GenerationSettings",
    "ImagePart",
    "LoadedToolsets",
    "MissingDependencyError",
    "Model",
    "ModelError",
    "ModelInfo",
    "ModelRequest",
    "ModelResponse",
    "ModelResponseError",
    "ModelSpec",
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
    "Trajectory",
    "TrajectoryError",
    "UserError",
    "UserMessage",
    "VideoPart",
    "VirtualDisplay",
    "VoiceOutput",
    "__version__",
    "allow_all",
    "attach_voice_output",
    "browser_tools",
    "deny_all",
    "desktop_tools",
    "load_model",
    "load_toolsets",
    "load_toolsets_with_observers",
    "load_trajectory",
    "parse_model_spec",
    "parse_output",
    "render_trajectory_html",
    "replay",
    "tool",
    "validate_call",
]
