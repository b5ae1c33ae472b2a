"""Keep the prompt within budget without breaking the model server's prefix cache.

Screenshots dominate a GUI agent's prompt (~900 tokens each). Only the most recent ones matter,
so older images are replaced by a short text placeholder. Dropping one image per step would
change the prompt's *beginning* every step and defeat prefix caching (vLLM, SGLang, our own KV
reuse); instead images are evicted in chunks: the set of dropped images only grows at eviction
points, and between two of them every request extends the previous one byte for byte.

The rule (the one Anthropic's computer-use loop uses): with ``T`` evictable images, drop the
oldest ``E = floor((T - N) / chunk) * chunk``. The last ``N`` always stay, plus at most
``chunk - 1`` older ones between evictions. Images the user gave with the instruction (the first
user message) are the task itself: they are never evicted and not counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from .messages import AudioPart, ImagePart, Message, TextPart, ToolMessage, UserMessage, VideoPart

__all__ = [
    "EVICTED_IMAGE_TEXT",
    "ImageBudget",
    "MediaHasher",
    "apply_image_budget",
    "evicted_count",
    "render_prompt",
]

EVICTED_IMAGE_TEXT = "[screenshot removed]"


def evicted_count(total: int, *, max_images: int, chunk: int) -> int:
    """How many of ``total`` evictable images to drop (oldest first); changes only in steps of ``chunk``."""
    if max_images < 0 or chunk < 1:
        raise ValueError("max_images must be >= 0 and chunk >= 1")
    over = total - max_images
    return 0 if over <= 0 else (over // chunk) * chunk


def _evictable_positions(messages: Sequence[Message]) -> list[tuple[int, int]]:
    """(message index, part index) of every image that may be evicted, oldest first."""
    first_user = next((i for i, m in enumerate(messages) if isinstance(m, UserMessage)), None)
    positions: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if i == first_user:
            continue
        for j, part in enumerate(m.content):
            if isinstance(part, ImagePart):
                positions.append((i, j))
    return positions


def apply_image_budget(messages: Sequence[Message], *, max_images: int, chunk: int) -> tuple[list[Message], int]:
    """Return (messages to send, number of images evicted). The input is not modified; messages
    without evicted images are passed through as the same objects."""
    positions = _evictable_positions(messages)
    drop = evicted_count(len(positions), max_images=max_images, chunk=chunk)
    if drop == 0:
        return list(messages), 0
    by_message: dict[int, set[int]] = {}
    for i, j in positions[:drop]:
        by_message.setdefault(i, set()).add(j)
    out: list[Message] = []
    for i, m in enumerate(messages):
        gone = by_message.get(i)
        if not gone:
            out.append(m)
            continue
        parts = [TextPart(text=EVICTED_IMAGE_TEXT) if j in gone else p for j, p in enumerate(m.content)]
        if isinstance(m, ToolMessage):
            out.append(ToolMessage(result=m.result.model_copy(update={"content": parts})))
        else:
            out.append(m.model_copy(update={"content": parts}))
    return out, drop


class ImageBudget:
    """``max_images`` / ``chunk`` bundled, for callers that pass the rule around."""

    def __init__(self, *, max_images: int = 3, chunk: int = 2) -> None:
        evicted_count(0, max_images=max_images, chunk=chunk)  # validates the numbers
        self.max_images = max_images
        self.chunk = chunk

    def apply(self, messages: Sequence[Message]) -> tuple[list[Message], int]:
        return apply_image_budget(messages, max_images=self.max_images, chunk=self.chunk)


class MediaHasher:
    """Content hashes of media parts, cached per part object (a run hashes each screenshot once).

    The cache holds the parts themselves, so ids stay valid for the hasher's lifetime.
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Any, str]] = {}

    def __call__(self, part: Any) -> str:
        hit = self._cache.get(id(part))
        if hit is not None and hit[0] is part:
            return hit[1]
        digest = _media_digest(part)
        self._cache[id(part)] = (part, digest)
        return digest


def _media_digest(part: Any) -> str:
    h = hashlib.sha256()  # SHA-NI makes it faster than blake2b on x86 servers
    if isinstance(part, ImagePart):
        if part._image is not None:
            image = part._image
            h.update(f"{image.mode}{image.size}".encode())
            h.update(image.tobytes())
        elif part.path:
            h.update(_file_bytes(part.path))
    elif isinstance(part, AudioPart):
        if part._samples is not None:
            h.update(str(part.sample_rate).encode())
            h.update(part._samples.tobytes())
        elif part.path:
            h.update(_file_bytes(part.path))
    elif isinstance(part, VideoPart):
        h.update(part.path.encode())
    return h.hexdigest()


def _file_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return path.encode()


def render_prompt(messages: Sequence[Message], hasher: MediaHasher | None = None) -> str:
    """A canonical text of the messages (media as content hashes), one JSON line per message.

    Two requests share a prompt-cache prefix exactly when one rendering starts with the other;
    the trajectory stores a hash of it.
    """
    hasher = hasher or MediaHasher()
    lines = []
    for m in messages:
        parts: list[Any] = []
        for p in m.content:
            if isinstance(p, TextPart):
                parts.append(p.text)
            else:
                parts.append({p.kind: hasher(p)})
        record: dict[str, Any] = {"role": m.role, "content": parts}
        if isinstance(m, ToolMessage):
            record["call_id"] = m.result.call_id
            record["is_error"] = m.result.is_error
        elif m.role == "assistant":
            record["thinking"] = m.thinking  # type: ignore[union-attr]
            record["tool_calls"] = [c.model_dump() for c in m.tool_calls]  # type: ignore[union-attr]
        lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True))
    return "\n".join(lines) + ("\n" if lines else "")
