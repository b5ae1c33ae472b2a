"""Image preprocessing once per screenshot: a caching wrapper around the processor's image processor.

An agent prompt carries the last few screenshots and the processor resizes, normalises and
patchifies every one of them again at every step (~20-80 ms each on a CPU core), which alone
can exceed a step's latency budget. Qwen's image processor treats each image independently,
so each image's output is cached by a hash of its pixels and the batch is re-assembled; the
result is identical to processing the batch at once (tests compare them). The keys of the
last call are kept so the prefix cache can fingerprint images without hashing the tensors.

Re-assembling is itself a copy of every image's rows (~11 MB per 1280x704 screenshot in bf16)
at every step. Like the transcript, the image list is append-only between evictions, so the rows
live in one growing buffer: a call whose images extend the previous ones copies only the new
rows and returns a view. Rows already handed out are never overwritten (a diverging list gets a
fresh buffer).

Hashing every screenshot of the context at every step (``tobytes`` + sha1, ~2-3 ms each) is
most of what is left of preprocessing, and the transcript hands the same PIL objects again
(``ImagePart`` keeps its image). So an image object already hashed is recognised by identity
(a weak reference, so a new object at a recycled address is never confused with it), checked
against 64 sampled pixels. Images are treated as immutable once sent: edit a copy, not the
object in the transcript.

With ``device`` (the GPU), a new screenshot is preprocessed there (``device_image.py``: resize,
normalise, patchify in torch) and its rows stay on the device, where the vision encoder reads them.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from typing import Any

__all__ = ["CachingImageProcessor", "install_image_cache"]


def image_key(image: Any, kwargs: dict[str, Any]) -> str:
    """Content hash of a PIL image + the processor options (sha1 of the raw pixels: ~2 ms per screenshot)."""
    digest = hashlib.sha1(image.tobytes())
    digest.update(f"{image.mode}{image.size}".encode())
    digest.update(repr(sorted((k, repr(v)) for k, v in kwargs.items() if k != "return_tensors")).encode())
    return digest.hexdigest()


class CachingImageProcessor:
    """Delegates to ``inner`` image by image, caching each image's (pixel rows, grid) by content."""

    def __init__(self, inner: Any, *, capacity: int = 64, dtype: Any = None, device: Any = None) -> None:
        from .device_image import device_image_spec

        self._inner = inner
        self._device = device
        self._spec = device_image_spec(inner) if device is not None and dtype is not None else None
        self._dtype = dtype  # the vision tower's dtype: it casts to it anyway, bf16 halves the copy
        self._capacity = capacity
        self._cache: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._buffer: Any = None  # rows of the images in ``_buffer_keys``, in order
        self._buffer_keys: list[str] = []
        self._buffer_rows: list[int] = []
        self._by_identity: dict[int, tuple[Any, tuple[Any, ...], str]] = {}
        self.hits = 0
        self.misses = 0
        self.last_kwargs: dict[str, Any] = {"return_tensors": "pt"}  # what the processor passes

    def __getattr__(self, name: str) -> Any:  # merge_size, patch_size, model_input_names, ...
        return getattr(self._inner, name)

    @property
    def last_keys(self) -> tuple[list[str], Any] | None:
        """(keys in order, the pixel_values tensor they describe) of this thread's last call."""
        return getattr(self._local, "last", None)

    def __call__(self, images: Any, **kwargs: Any) -> Any:
        import torch
        from PIL import Image
        from transformers import BatchFeature

        flat = images if isinstance(images, (list, tuple)) else [images]
        if not flat or not all(isinstance(im, Image.Image) for im in flat):
            self._local.last = None
            return self._inner(images, **kwargs)
        self.last_kwargs = dict(kwargs)
        items = self.items(flat, kwargs)
        keys = [key for key, _, _ in items]
        rows = self.assemble(keys, [pixels for _, pixels, _ in items])
        result = BatchFeature({"pixel_values": rows, "image_grid_thw": torch.cat([grid for _, _, grid in items])})
        self._local.last = (keys, result["pixel_values"])
        return result

    def items(self, images: list[Any], kwargs: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        """(content key, pixel rows, grid [1, 3]) of each PIL image, each processed once (cached)."""
        out: list[tuple[str, Any, Any]] = []
        for image in images:
            key = self._key(image, kwargs)
            item = self._cache.get(key)
            if item is None:
                self.misses += 1
                item = self._process(image, kwargs)
                self._cache[key] = item
                while len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
            else:
                self.hits += 1
                self._cache.move_to_end(key)
            out.append((key, item[0], item[1]))
        return out

    def _process(self, image: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """(pixel rows, grid [1, 3]) of one image: on the device when it can, else the processor."""
        from .device_image import accepts, preprocess_on_device

        if self._spec is not None and accepts(kwargs):
            return preprocess_on_device(image, self._spec, device=self._device, dtype=self._dtype)
        processed = self._inner([image], **{**kwargs, "return_tensors": "pt"})
        rows = processed["pixel_values"]
        return (rows.to(self._dtype) if self._dtype is not None else rows, processed["image_grid_thw"])

    def clear(self) -> None:
        """Drop every cached image (keys of image objects stay: they are content hashes)."""
        with self._lock:
            self._cache.clear()
            self._buffer, self._buffer_keys, self._buffer_rows = None, [], []

    def key_of(self, image: Any, kwargs: dict[str, Any]) -> str:
        """The content key ``items`` files ``image`` under (hashes an image object once)."""
        return self._key(image, kwargs)

    def assemble(self, keys: list[str], pixels: list[Any]) -> Any:
        """Rows of ``pixels`` (one tensor per image, keyed by ``keys``) as one tensor: a view of
        the append-only buffer, copying only the rows of images past the last call's list."""
        with self._lock:
            return self._assemble(keys, pixels)

    def _key(self, image: Any, kwargs: dict[str, Any]) -> str:
        opts = repr(sorted((k, repr(v)) for k, v in kwargs.items() if k != "return_tensors"))
        entry = self._by_identity.get(id(image))
        if entry is not None and entry[0]() is image and entry[1] == _probe(image) and entry[2].endswith(opts):
            return entry[2]
        key = image_key(image, kwargs) + opts
        try:
            ref = weakref.ref(image)
        except TypeError:  # pragma: no cover - PIL images support weak references
            return key
        if len(self._by_identity) > 4 * self._capacity:
            self._by_identity = {k: v for k, v in self._by_identity.items() if v[0]() is not None}
        self._by_identity[id(image)] = (ref, _probe(image), key)
        return key

    def _assemble(self, keys: list[str], pixels: list[Any]) -> Any:
        """Rows of ``pixels`` (one tensor per image) as one tensor, copying as little as possible."""
        import torch

        have = self._buffer_keys
        if self._buffer is not None and keys == have[: len(keys)]:
            return self._buffer[: sum(self._buffer_rows[: len(keys)])]
        if (
            self._buffer is None
            or keys[: len(have)] != have
            or pixels[0].dtype != self._buffer.dtype
            or pixels[0].device != self._buffer.device
        ):
            self._buffer, have, self._buffer_rows = None, [], []
        used = sum(self._buffer_rows)
        new = pixels[len(have) :]
        need = used + sum(p.shape[0] for p in new)
        if self._buffer is None or need > self._buffer.shape[0]:
            # Reserve room for a cache-full of images like the largest new one: a regrowth copies
            # every row so far (~120 MB at 11 screenshots: the 62 ms step-10 spike on the device)
            # and untouched pages of a large allocation cost no memory until written (mmap).
            largest = max(p.shape[0] for p in new) if new else 0
            rows_needed = max(2 * need, need + self._capacity * largest)
            grown = torch.empty((rows_needed, pixels[0].shape[1]), dtype=pixels[0].dtype, device=pixels[0].device)
            if used:
                grown[:used] = self._buffer[:used]
            self._buffer = grown  # the old buffer stays intact for views handed out before
        at = used
        for rows in new:
            self._buffer[at : at + rows.shape[0]] = rows
            at += rows.shape[0]
        self._buffer_keys = list(keys)
        self._buffer_rows = self._buffer_rows[: len(have)] + [p.shape[0] for p in new]
        return self._buffer[:need]


def _probe(image: Any) -> tuple[Any, ...]:
    """64 pixels on a fixed grid: a cheap guard against an image edited in place."""
    w, h = image.size
    return (image.mode, image.size) + tuple(image.getpixel(((7 + 61 * i) % w, (3 + 37 * i) % h)) for i in range(64))


def install_image_cache(processor: Any, *, capacity: int = 64, dtype: Any = None, device: Any = None) -> CachingImageProcessor:
    """Wrap ``processor.image_processor`` (idempotent) and return the wrapper; with ``device``,
    new images are preprocessed there."""
    current = processor.image_processor
    if isinstance(current, CachingImageProcessor):
        return current
    wrapper = CachingImageProcessor(current, capacity=capacity, dtype=dtype, device=device)
    processor.image_processor = wrapper
    return wrapper
