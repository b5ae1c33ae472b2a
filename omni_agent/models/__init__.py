"""Model backends: the interface, the scripted policy, OpenAI-compatible servers, spec strings."""

from .base import GenerationSettings, Model, ModelChunk, ModelInfo, ModelRequest, ModelResponse, Usage
from .spec import load_model, parse_model_spec

__all__ = [
    "GenerationSettings",
    "Model",
    "ModelChunk",
    "ModelInfo",
    "ModelRequest",
    "ModelResponse",
    "Usage",
    "load_model",
    "parse_model_spec",
]
