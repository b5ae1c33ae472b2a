"""Local Qwen-Omni / Qwen3-VL runtime through transformers (install the ``qwen`` extra).

Importing this package is light: torch and transformers load when a model is loaded.
"""

from .backend import QwenOmniModel
from .families import FAMILIES, Family
from .generation import SPEECH_SAMPLE_RATE, GenerationResult
from .loading import SUPPORTED_TRANSFORMERS, check_transformers_version
from .media import ImageSpec
from .speech import SpeechSettings

__all__ = [
    "FAMILIES",
    "Family",
    "GenerationResult",
    "ImageSpec",
    "QwenOmniModel",
    "SPEECH_SAMPLE_RATE",
    "SUPPORTED_TRANSFORMERS",
    "SpeechSettings",
    "check_transformers_version",
]
