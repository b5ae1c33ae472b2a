"""The one module that owns coordinates and model-side image sizes.

Three spaces, one direction of travel for a click:

* **model space**: what the model writes. The Qwen3 family answers on a relative 0..1000 grid
  (``"relative_1000"``); the Qwen2.5 family / UI-TARS answer in pixels of the *smart-resized*
  image it was shown (``"absolute_resized"``).
* **image pixels**: the screenshot as captured (continuous: ``0 <= x <= width``).
* **screen points**: where the mouse goes. A :class:`Monitor` places the image on the virtual
  desktop (offset ``left``/``top`` for multi-monitor setups) and says how many image pixels one
  point holds (``scale``, 2.0 on a HiDPI / Retina screen).

Mixing these conventions is the most reported bug class of GUI agents, so every conversion goes
through the pure functions here and nowhere else. All functions clamp to the bounds of the space
they return (a model that answers 1000 on the 0..1000 grid lands on the last pixel, not off it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .models.base import CoordinateSpace

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "QWEN25_SPEC",
    "QWEN3_SPEC",
    "CoordinateSpace",
    "ModelImageSpec",
    "Monitor",
    "ResizeInfo",
    "image_to_model",
    "image_to_screen",
    "image_tokens",
    "model_to_image",
    "model_to_screen",
    "resize_for_model",
    "screen_to_image",
    "screen_to_model",
    "smart_resize",
    "spec_for",
]

Size = tuple[int, int]
"""(width, height) in pixels, PIL's order. Only :func:`smart_resize` uses (height, width)."""


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


# -- model image specs ------------------------------------------------------------------------


class ModelImageSpec(BaseModel):
    """How one model family sees an image: the resize rule and the coordinate space it answers in.

    ``factor`` is the pixel side of one LLM image token (vision patch x spatial merge: 16 x 2 =
    32 for Qwen3, 14 x 2 = 28 for Qwen2.5). Set ``min_pixels`` / ``max_pixels`` explicitly in
    production so the screenshot size, the coordinate space and the token count are deterministic.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str = "qwen3"
    factor: int = Field(default=32, ge=1)
    min_pixels: int = Field(default=64 * 32 * 32, ge=1)
    max_pixels: int = Field(default=16384 * 32 * 32, ge=1)
    coordinate_space: CoordinateSpace = "relative_1000"
    grid: int = Field(default=1000, ge=1)
    """Size of the relative grid (``relative_1000`` only): coordinates run 0..grid."""

    @model_validator(mode="after")
    def _check_bounds(self) -> "ModelImageSpec":
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        if self.max_pixels < self.factor * self.factor:
            raise ValueError(f"max_pixels {self.max_pixels} is below one token ({self.factor}x{self.factor})")
        return self

    def resized_size(self, image_size: Size) -> Size:
        """(width, height) of the image the model actually sees."""
        w, h = image_size
        rh, rw = smart_resize(h, w, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return rw, rh

    def model_extent(self, image_size: Size) -> tuple[float, float]:
        """The largest x and y of model space for an image of ``image_size`` (the smallest is 0)."""
        if self.coordinate_space == "relative_1000":
            return float(self.grid), float(self.grid)
        rw, rh = self.resized_size(image_size)
        return float(rw), float(rh)


QWEN3_SPEC = ModelImageSpec()
"""Qwen3-VL / Qwen3-Omni: 32 px tokens, answers on the relative 0..1000 grid (checkpoint pixel bounds)."""

QWEN25_SPEC = ModelImageSpec(
    family="qwen2.5", factor=28, min_pixels=56 * 56, max_pixels=16384 * 28 * 28, coordinate_space="absolute_resized"
)
"""Qwen2.5-VL / Qwen2.5-Omni / UI-TARS: 28 px tokens, answers in pixels of the resized image."""

_FAMILIES = {"qwen3": QWEN3_SPEC, "qwen3-vl": QWEN3_SPEC, "qwen3-omni": QWEN3_SPEC,
             "qwen2.5": QWEN25_SPEC, "qwen2.5-vl": QWEN25_SPEC, "qwen2.5-omni": QWEN25_SPEC, "ui-tars": QWEN25_SPEC}


def spec_for(family_or_model: str, **overrides: Any) -> ModelImageSpec:
    """The spec of a model family, e.g. ``spec_for("qwen2.5", max_pixels=1280 * 28 * 28)``.

    Accepts a family name or a model name containing one ("Qwen/Qwen3-Omni-30B-A3B-Instruct").
    """
    key = family_or_model.lower().rsplit("/", 1)[-1].replace("qwen2_5", "qwen2.5")
    for name in sorted(_FAMILIES, key=len, reverse=True):
        if key.startswith(name):
            return _FAMILIES[name].model_copy(update=overrides) if overrides else _FAMILIES[name]
    known = ", ".join(sorted(_FAMILIES))
    raise ValueError(f"unknown model family {family_or_model!r}; known: {known} (or build a ModelImageSpec)")


def image_tokens(height: int, width: int, spec: ModelImageSpec = QWEN3_SPEC) -> int:
    """LLM tokens one image of height x width costs after the model-side resize."""
    rw, rh = spec.resized_size((width, height))
    return (rw // spec.factor) * (rh // spec.factor)


# -- monitors ---------------------------------------------------------------------------------


class Monitor(BaseModel):
    """One monitor on the virtual desktop, in screen points.

    ``scale`` is image pixels per screen point: a 1440x900-point Retina screen captures as a
    2880x1800 image with ``scale=2``. X11 and Xvfb report pixels, so ``scale`` is 1 there.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    left: int = 0
    top: int = 0
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    scale: float = Field(default=1.0, gt=0)

    @property
    def pixel_size(self) -> Size:
        """(width, height) of a full-resolution capture of this monitor."""
        return max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale))

    def contains(self, x: float, y: float) -> bool:
        return self.left <= x < self.left + self.width and self.top <= y < self.top + self.height


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def _check_size(image_size: Size) -> Size:
    w, h = image_size
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w}x{h}")
    return w, h


# -- model space <-> image pixels -------------------------------------------------------------


def model_to_image(x: float, y: float, *, image_size: Size, spec: ModelImageSpec = QWEN3_SPEC) -> tuple[float, float]:
    """Model coordinates -> pixels of the captured image (clamped to the image)."""
    w, h = _check_size(image_size)
    mx, my = spec.model_extent(image_size)
    px = _clamp(x, 0.0, mx) * w / mx
    py = _clamp(y, 0.0, my) * h / my
    return px, py


def image_to_model(x: float, y: float, *, image_size: Size, spec: ModelImageSpec = QWEN3_SPEC) -> tuple[float, float]:
    """Pixels of the captured image -> model coordinates (clamped to model space)."""
    w, h = _check_size(image_size)
    mx, my = spec.model_extent(image_size)
    return _clamp(x, 0.0, w) * mx / w, _clamp(y, 0.0, h) * my / h


# -- image pixels <-> screen points -----------------------------------------------------------


def _round(v: float) -> int:
    # Half-up, not banker's rounding: a point exactly between two pixels goes right/down alike.
    return math.floor(v + 0.5)


def image_to_screen(
    x: float, y: float, *, monitor: Monitor, image_size: Size | None = None
) -> tuple[int, int]:
    """Pixels of a capture of ``monitor`` -> integer screen points, clamped to that monitor.

    ``image_size`` defaults to the monitor's full-resolution capture (``monitor.pixel_size``);
    pass it when the capture was taken at another size.
    """
    w, h = _check_size(image_size or monitor.pixel_size)
    sx = monitor.left + _clamp(x, 0.0, w) * monitor.width / w
    sy = monitor.top + _clamp(y, 0.0, h) * monitor.height / h
    return (
        int(_clamp(_round(sx), monitor.left, monitor.left + monitor.width - 1)),
        int(_clamp(_round(sy), monitor.top, monitor.top + monitor.height - 1)),
    )


def screen_to_image(
    x: float, y: float, *, monitor: Monitor, image_size: Size | None = None
) -> tuple[float, float]:
    """Screen points -> pixels of a capture of ``monitor`` (clamped to the image)."""
    w, h = _check_size(image_size or monitor.pixel_size)
    ix = (x - monitor.left) * w / monitor.width
    iy = (y - monitor.top) * h / monitor.height
    return _clamp(ix, 0.0, w), _clamp(iy, 0.0, h)


# -- composed ---------------------------------------------------------------------------------


def model_to_screen(
    x: float,
    y: float,
    *,
    spec: ModelImageSpec = QWEN3_SPEC,
    monitor: Monitor,
    image_size: Size | None = None,
) -> tuple[int, int]:
    """What the model wrote -> where the mouse goes. ``image_size`` is the capture's size
    (before the model-side resize); it defaults to the monitor's full-resolution capture."""
    size = image_size or monitor.pixel_size
    ix, iy = model_to_image(x, y, image_size=size, spec=spec)
    return image_to_screen(ix, iy, monitor=monitor, image_size=size)


def screen_to_model(
    x: float,
    y: float,
    *,
    spec: ModelImageSpec = QWEN3_SPEC,
    monitor: Monitor,
    image_size: Size | None = None,
) -> tuple[int, int]:
    """A screen point -> the integer coordinates a model should write to hit it (scripts, evals)."""
    size = image_size or monitor.pixel_size
    ix, iy = screen_to_image(x, y, monitor=monitor, image_size=size)
    mx, my = image_to_model(ix, iy, image_size=size, spec=spec)
    return _round(mx), _round(my)


# -- model-side resize ------------------------------------------------------------------------


class ResizeInfo(BaseModel):
    """What :func:`resize_for_model` did: sizes before/after and the token count they imply."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    original_size: Size
    resized_size: Size
    tokens: int
    coordinate_space: CoordinateSpace

    @property
    def resized(self) -> bool:
        return self.original_size != self.resized_size


def resize_for_model(image: "Image.Image", spec: ModelImageSpec = QWEN3_SPEC) -> tuple["Image.Image", ResizeInfo]:
    """Resize a screenshot to what the model's processor would feed it (so the processor leaves
    it alone and ``absolute_resized`` coordinates refer to exactly this image).

    Bilinear: on screenshots it is 2x faster than Lanczos and text stays legible. No copy is made
    when the size already fits.
    """
    from PIL import Image

    size = (image.width, image.height)
    target = spec.resized_size(size)
    info = ResizeInfo(
        original_size=size,
        resized_size=target,
        tokens=(target[0] // spec.factor) * (target[1] // spec.factor),
        coordinate_space=spec.coordinate_space,
    )
    if target == size:
        return image, info
    return image.resize(target, Image.Resampling.BILINEAR), info
