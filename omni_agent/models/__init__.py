from .base import GenerationSettings, Model, ModelChunk, ModelInfo, ModelRequest, ModelResponse, Usage

__all__ = ["GenerationSettings", "Model", "ModelChunk", "ModelInfo", "ModelRequest", "ModelResponse", "Usage"]
