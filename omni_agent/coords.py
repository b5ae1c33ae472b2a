"""The one module that owns coordinates and model-side image sizes.

Spaces: *model space* (what the model writes: a relative 0..1000 grid for the Qwen3 family, or
absolute pixels of the resized image for the Qwen2.5 family) -> *image pixels* (the screenshot as
captured) -> *screen points* (where the mouse goes: monitor offset and scale factor applied).
"""

from __future__ import annotations

import math

__all__ = ["smart_resize"]


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = 32,
    min_pixels: int = 32 * 32 * 4,
    max_pixels: int = 32 * 32 * 16384,
) -> tuple[int, int]:
    """Qwen's resize rule: both sides multiples of ``factor``, area within [min, max] pixels,
    aspect ratio kept as closely as possible. Returns (height, width)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio over 200: {width}x{height}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar
