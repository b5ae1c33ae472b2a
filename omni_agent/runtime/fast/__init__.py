"""The GPU fast path of the local Qwen-Omni runtime (optional; off unless asked for).

``QwenOmniModel.load(path, fast=True)`` or ``fast=FastOptions(...)``: a static KV cache reused
across agent steps (only new tokens are prefilled, images are encoded once), decode through
CUDA graphs of compiled per-layer functions. See docs/perf-gpu.md for the measured figures.
Importing this package is light (torch loads when a model does).
"""

from .incremental_prompt import IncrementalPromptBuilder, PromptLayout
from .options import FastOptions
from .prefix_cache import ImageEmbeddingCache, ImageSpan, PrefixState, find_image_spans
from .run import fast_unsupported, make_fast_thinker, run_fast_generate
from .thinker import FastStats, FastThinker

__all__ = [
    "FastOptions",
    "FastStats",
    "FastThinker",
    "ImageEmbeddingCache",
    "ImageSpan",
    "IncrementalPromptBuilder",
    "PrefixState",
    "PromptLayout",
    "fast_unsupported",
    "find_image_spans",
    "make_fast_thinker",
    "run_fast_generate",
]
