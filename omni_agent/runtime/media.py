"""Media for the local runtime: screenshots resized to the model's grid, audio as 16 kHz mono.

The screenshot size decides three things at once: the pixels the model sees, the number of
image tokens, and the coordinate space the model answers in. Resizing here with explicit
min / max pixels (through ``omni_agent.coords.smart_resize``) makes all three deterministic;
the processor then finds the image already on its grid and leaves it alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..coords import smart_resize
from ..messages import AudioPart, ImagePart

__all__ = ["AUDIO_INPUT_RATE", "ImageSpec", "audio_to_16k", "image_for_model"]

AUDIO_INPUT_RATE = 16_000
"""Whisper-style audio encoders of Qwen-Omni take 16 kHz mono."""


class ImageSpec(BaseModel):
    """How images are sized for the model: sides multiples of ``factor``, area within bounds.

    ``factor`` is patch size x spatial merge (32 for the Qwen3 family, 28 for Qwen2.5): one
    LLM token per ``factor x factor`` pixels. Desktop and browser tools use the same spec to map
    the model's coordinates back to the screen.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    factor: int = Field(32, ge=1)
    min_pixels: int = Field(32 * 32 * 4, ge=1)
    max_pixels: int = Field(32 * 32 * 2048, ge=1)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the model sees for an image of ``width`` x ``height``."""
        h, w = smart_resize(
            height, width, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels
        )
        return w, h

    def tokens_for(self, width: int, height: int) -> int:
        """LLM tokens one image of this size costs."""
        w, h = self.resized_size(width, height)
        return (w // self.factor) * (h // self.factor)


def image_for_model(part: ImagePart, spec: ImageSpec) -> Any:
    """The part's PIL image in RGB, resized (bicubic) to the spec's grid."""
    image = part.load()
    if image.mode != "RGB":
        image = image.convert("RGB")
    size = spec.resized_size(image.width, image.height)
    if size != image.size:
        from PIL import Image

        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def audio_to_16k(part: AudioPart) -> np.ndarray:
    """Any audio part (file or array, any rate, any channel count) -> float32 mono at 16 kHz."""
    samples, rate = part.load()
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim > 1:
        samples = samples.mean(axis=-1)
    if rate != AUDIO_INPUT_RATE:
        import soxr  # soxr: fast, high-quality resampling (better than a hand-written polyphase filter)

        samples = soxr.resample(samples, rate, AUDIO_INPUT_RATE).astype(np.float32)
    if samples.size == 0:
        raise ValueError("audio input is empty")
    if not np.isfinite(samples).all():
        raise ValueError("audio input contains NaN or infinite samples")
    return np.ascontiguousarray(samples)
