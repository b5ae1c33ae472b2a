"""Decoded request images by the hash of their encoded bytes (LRU).

A GUI session sends its whole conversation every step: at step 10 that is 11 screenshots as data
URLs, 10 of them sent before. Decoding each PNG again and hashing the decoded pixels for the
prompt caches cost ~100 ms of host time per request on the CPU box, one request after another.
Here the same encoded bytes give back the same PIL object: its content key is then found by
identity (``image_preprocess``) and the incremental prompt builder sees the very image it kept.
Images are treated as immutable once sent, as the image caches already do.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable

__all__ = ["ImageMemo", "IMAGE_MEMO"]


class ImageMemo:
    """Up to ``capacity`` decoded images keyed by the SHA-1 of their encoded bytes."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._items: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, raw: bytes, decode: Callable[[], Any]) -> Any:
        """The image decoded from ``raw`` (``decode()`` runs only for bytes not seen recently;
        its errors propagate and nothing is kept)."""
        digest = hashlib.sha1(raw).digest()
        with self._lock:
            image = self._items.get(digest)
            if image is not None:
                self._items.move_to_end(digest)
                self.hits += 1
                return image
        image = decode()
        with self._lock:
            self._items[digest] = image
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return image


IMAGE_MEMO = ImageMemo()
"""The server process's memo (``serve/chat.py`` decodes data URLs through it)."""
