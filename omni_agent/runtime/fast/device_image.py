"""Screenshot preprocessing on the GPU: resize, rescale, normalise and patchify in torch.

Qwen's image processor does this in numpy (or per-call torchvision) on one CPU core: 14-45 ms
for one 1280x720 screenshot measured on the device, inside every agent step's latency. The
same maths on the GPU is a 2.7 MB upload and a few element-wise kernels. The output is the
processor's ``pixel_values`` rows and ``image_grid_thw`` for one image (tests compare them):
equal when the image is already on the model's patch grid (the screen capture delivers it so),
within one uint8 level after a resize (PIL resizes in two passes with uint8 rounding between
them; torch's antialiased bicubic is PIL's filter in float).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The processor's resize rule, the one the coordinate mapping uses too (tested against the processor).
from ...coords import smart_resize

__all__ = ["DeviceImageSpec", "device_image_spec", "preprocess_on_device", "smart_resize"]

_DEFAULT_ONLY = {"return_tensors"}
"""Call options the device path honours (anything else goes to the processor itself)."""


@dataclass(frozen=True)
class DeviceImageSpec:
    """The numbers of a Qwen2-VL-style image processor that the device path needs."""

    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float
    do_resize: bool


def _size_limits(processor: Any) -> tuple[int, int] | None:
    size = getattr(processor, "size", None)
    get = (lambda k: size.get(k)) if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    low = get("shortest_edge") or getattr(processor, "min_pixels", None)
    high = get("longest_edge") or getattr(processor, "max_pixels", None)
    return (int(low), int(high)) if low and high else None


def device_image_spec(processor: Any) -> DeviceImageSpec | None:
    """The spec of ``processor`` if the device path reproduces it (Qwen2-VL patchify, bicubic
    resize, rescale + normalise on); None otherwise (the processor keeps running)."""
    names = ("patch_size", "merge_size", "temporal_patch_size", "image_mean", "image_std")
    if any(getattr(processor, n, None) is None for n in names):
        return None
    limits = _size_limits(processor)
    resample = getattr(processor, "resample", 3)
    if limits is None or int(getattr(resample, "value", resample)) != 3:  # PIL bicubic
        return None
    if not getattr(processor, "do_rescale", True) or not getattr(processor, "do_normalize", True):
        return None
    mean, std = processor.image_mean, processor.image_std
    mean = tuple(float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean] * 3))
    std = tuple(float(s) for s in (std if isinstance(std, (list, tuple)) else [std] * 3))
    return DeviceImageSpec(
        patch_size=int(processor.patch_size),
        merge_size=int(processor.merge_size),
        temporal_patch_size=int(processor.temporal_patch_size),
        min_pixels=limits[0],
        max_pixels=limits[1],
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        rescale=float(getattr(processor, "rescale_factor", 1 / 255)),
        do_resize=bool(getattr(processor, "do_resize", True)),
    )


def accepts(kwargs: dict[str, Any]) -> bool:
    """True when a processor call with ``kwargs`` asks for nothing the device path changes."""
    return set(kwargs) <= _DEFAULT_ONLY


def preprocess_on_device(image: Any, spec: DeviceImageSpec, *, device: Any, dtype: Any) -> tuple[Any, Any]:
    """(pixel rows [grid_t*grid_h*grid_w, C*T*P*P] on ``device`` in ``dtype``, grid [1, 3] on the
    CPU) of one PIL image, as the processor computes them."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    host = torch.from_numpy(np.array(rgb))  # [H, W, 3] uint8 (a writable copy, ~0.3 ms)
    if device.type == "cuda":
        host = host.pin_memory()
    x = host.to(device, non_blocking=True).permute(2, 0, 1).unsqueeze(0).float()  # [1, 3, H, W]
    height, width = x.shape[-2:]
    p, m, t = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    if spec.do_resize:
        rh, rw = smart_resize(height, width, factor=p * m, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
        if (rh, rw) != (height, width):
            x = F.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
            x = x.round_().clamp_(0, 255)  # PIL hands back uint8
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    x = (x * spec.rescale - mean) / std
    _, c, h, w = x.shape
    gh, gw = h // p, w // p
    x = x.reshape(1, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # [1, h/m, w/m, m, m, c, p, p]
    rows = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, t, -1, -1).reshape(gh * gw, c * t * p * p)
    grid = torch.tensor([[1, gh, gw]], dtype=torch.long)
    return rows.to(dtype), grid
