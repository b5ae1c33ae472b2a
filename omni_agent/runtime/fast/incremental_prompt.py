"""Incremental prompt preparation: an agent step tokenises only what its transcript appended.

``build_prompt`` renders the whole conversation and runs the processor over all of it: at step
10 of a GUI episode that is an 11.6k-token prompt re-tokenised, re-tensorised and re-scanned
for every step (33-62 ms of host time on the device, most of the step's preprocessing). The
transcript is append-only, so nearly all of that work repeats the last step's.

Here the template is still rendered whole (a few ms; the template's logic spans messages, so a
suffix cannot be rendered alone), but the text is cut into chunks at every ``<|im_start|>``.
That special token is split out by the tokenizer before any merging, so each chunk tokenises on
its own and the concatenation equals the full tokenisation (tests check it at every step of an
episode). Chunks equal to the last step's (same text, same image objects) keep their token
ids, image grids, pixel rows and content keys; only the rest is tokenised (image placeholders
expanded to the processor's own ``replace_image_token`` counts) and run through the image cache. The result is the same ``PreparedPrompt`` the processor gives (same ids, mask, pixel
values, grids), plus a ``PromptLayout`` (ids as a list, image spans with keys) the fast Thinker
reads instead of re-scanning the ids.

Images are compared by identity for reuse (an ``ImagePart`` keeps its PIL object): like the image
cache, this treats images as immutable once sent. A new object with the same pixels is matched
by content key. Audio or video in the prompt, or a tokenizer that adds special tokens of its own,
take ``build_prompt`` unchanged.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

from ..prompt import PreparedPrompt, build_prompt, to_template_messages
from .prefix_cache import ImageSpan

__all__ = ["IncrementalPromptBuilder", "PromptLayout"]

CHUNK_TOKEN = "<|im_start|>"
"""Chunk boundary: a special token, so the text on either side tokenises independently."""
_MAX_LAYOUTS = 8
_MARKER = "\U000f0000"
"""transformers' marker of user-supplied control tokens: marked text takes the full processor."""


@dataclass(frozen=True)
class PromptLayout:
    """What the fast Thinker needs from a prepared prompt, known without scanning it."""

    ids: list[int]
    spans: list[ImageSpan]


@dataclass
class _Chunk:
    text: str
    images: tuple[Any, ...]
    ids: list[int]
    keys: tuple[str, ...]
    rows: tuple[Any, ...]  # pixel rows per image (tensors from the image cache)
    grids: tuple[tuple[int, int, int], ...]
    pads: tuple[tuple[int, int], ...]  # (first pad index, pad count) per image, chunk-relative


@dataclass
class _Record:
    chunks: list[_Chunk]
    ids: list[int]
    input_ids: Any  # the [1, n] tensor handed out (prefix views are never written to)


class IncrementalPromptBuilder:
    """``build_prompt`` with per-step work proportional to the appended turns (see module doc)."""

    def __init__(self, processor: Any, *, image_cache: Any, image_token_id: int, records: int = 2) -> None:
        self.processor = processor
        self.image_cache = image_cache
        self.image_token = processor.image_token
        self.image_token_id = int(image_token_id)
        self.tokenizer = processor.tokenizer
        self._records: list[_Record] = []
        self._max_records = records  # e.g. the agent's transcript and a speech prompt in turn
        self._layouts: dict[int, tuple[Any, PromptLayout]] = {}
        self._lock = threading.Lock()
        self.tokenised_chunks = 0
        self.reused_chunks = 0
        self.full_builds = 0
        self.last_timings: dict[str, float] = {}
        """Seconds of the last incremental build: ``render`` (messages + template), ``images``
        (new images through the cache), ``tokenise`` (new chunks), ``assemble`` (tensors, spans)."""
        # A tokenizer that wraps every call in BOS/EOS would break the chunk concatenation.
        self.enabled = self.tokenizer("x", add_special_tokens=True)["input_ids"] == self.tokenizer(
            "x", add_special_tokens=False
        )["input_ids"]

    # -- public ----------------------------------------------------------------------------------
    def build(
        self,
        messages: Sequence[Any],
        *,
        tools: Sequence[dict[str, Any]] = (),
        family: Any,
        image_spec: Any,
        template_renders_tools: bool,
        assistant_prefix: str = "",
    ) -> PreparedPrompt:
        """The ``PreparedPrompt`` of ``build_prompt`` (same tensors), built incrementally."""
        kw = dict(tools=tools, family=family, image_spec=image_spec, template_renders_tools=template_renders_tools)
        if not messages or not self.enabled:
            return self._full(messages, assistant_prefix, kw)
        t0 = time.perf_counter()
        template_messages, media = to_template_messages(messages, **kw)
        if media.audios or media.videos:
            return self._full(messages, assistant_prefix, kw)
        text = self.processor.apply_chat_template(
            template_messages,
            tools=list(tools) if (tools and template_renders_tools) else None,
            tokenize=False,
            add_generation_prompt=True,
        )
        text += assistant_prefix
        if _MARKER in text:
            return self._full(messages, assistant_prefix, kw)
        parts = text.split(CHUNK_TOKEN)
        texts = [parts[0]] + [CHUNK_TOKEN + p for p in parts[1:]]
        counts = [t.count(self.image_token) for t in texts]
        if sum(counts) != len(media.images):
            return self._full(messages, assistant_prefix, kw)  # the processor's own error message
        images: list[tuple[Any, ...]] = []
        at = 0
        for n in counts:
            images.append(tuple(media.images[at : at + n]))
            at += n
        with self._lock:
            self.last_timings = {"render": time.perf_counter() - t0, "images": 0.0, "tokenise": 0.0}
            inputs, layout = self._build_locked(texts, images)
        return PreparedPrompt(text=text, inputs=inputs, image_sizes=[im.size for im in media.images], audio_seconds=[])

    def clear(self) -> None:
        """Forget the prompts built so far (the next build tokenises everything)."""
        with self._lock:
            self._records.clear()
            self._layouts.clear()

    def layout_for(self, inputs: Any) -> PromptLayout | None:
        """The layout of ``inputs`` if this builder made them (else None: scan the ids)."""
        ids = inputs.get("input_ids") if hasattr(inputs, "get") else None
        entry = self._layouts.get(id(ids)) if ids is not None else None
        if entry is None or entry[0]() is not ids:
            return None
        return entry[1]

    # -- internals ---------------------------------------------------------------------------------
    def _full(self, messages: Sequence[Any], assistant_prefix: str, kw: dict[str, Any]) -> PreparedPrompt:
        self.full_builds += 1
        return build_prompt(self.processor, messages, assistant_prefix=assistant_prefix, **kw)

    def _same_images(self, new: tuple[Any, ...], old: _Chunk) -> bool:
        if len(new) != len(old.images):
            return False
        for image, before, key in zip(new, old.images, old.keys):
            if image is not before and self.image_cache.key_of(image, self.image_cache.last_kwargs) != key:
                return False
        return True

    def _best_record(self, texts: list[str], images: list[tuple[Any, ...]]) -> tuple[_Record | None, int]:
        best: tuple[_Record | None, int] = (None, 0)
        for record in self._records:
            k = 0
            limit = min(len(record.chunks), len(texts))
            while k < limit and record.chunks[k].text == texts[k] and self._same_images(images[k], record.chunks[k]):
                k += 1
            if k > best[1]:
                best = (record, k)
        return best

    def _moved_chunk(self, spare: dict[str, _Chunk], text: str, images: tuple[Any, ...]) -> _Chunk | None:
        """An unchanged chunk of the last prompt found again after a change (same text, same images)."""
        chunk = spare.get(text)
        if chunk is None or not self._same_images(images, chunk):
            return None
        self.reused_chunks += 1
        return chunk

    def _new_chunk(self, text: str, images: tuple[Any, ...]) -> _Chunk:
        import torch

        kwargs = self.image_cache.last_kwargs
        t0 = time.perf_counter()
        items = self.image_cache.items(list(images), kwargs) if images else []
        t1 = time.perf_counter()
        self.last_timings["images"] += t1 - t0
        grids = tuple(tuple(int(v) for v in grid[0].tolist()) for _, _, grid in items)
        # Tokenised with one <|image_pad|> per image, then each expanded to its run: the pad is a
        # special token, so this equals tokenising the expanded text (tests compare them), at
        # ~1/30 of the cost (an 880-pad run is 11k characters of special-token matching).
        counts = []
        if items:
            grid_tensor = torch.tensor([list(g) for g in grids], dtype=torch.long)
            width = len(self.image_token)
            counts = [len(self.processor.replace_image_token({"image_grid_thw": grid_tensor}, i)) // width for i in range(len(items))]
        short = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        ids: list[int] = []
        pads = []
        at = 0
        for n in counts:
            first = short.index(self.image_token_id, at)
            ids.extend(short[at:first])
            pads.append((len(ids), n))
            ids.extend([self.image_token_id] * n)
            at = first + 1
        ids.extend(short[at:])
        self.tokenised_chunks += 1
        self.last_timings["tokenise"] += time.perf_counter() - t1
        return _Chunk(
            text=text,
            images=images,
            ids=ids,
            keys=tuple(key for key, _, _ in items),
            rows=tuple(rows for _, rows, _ in items),
            grids=grids,
            pads=tuple(pads),
        )

    def _build_locked(self, texts: list[str], images: list[tuple[Any, ...]]) -> tuple[Any, PromptLayout]:
        import torch
        from transformers import BatchFeature

        record, k = self._best_record(texts, images)
        kept = record.chunks[:k] if record is not None else []
        self.reused_chunks += k
        # Past the first changed chunk (an evicted screenshot), unchanged turns keep their ids.
        spare = {c.text: c for c in record.chunks[k:]} if record is not None else {}
        chunks = kept + [self._moved_chunk(spare, t, im) or self._new_chunk(t, im) for t, im in zip(texts[k:], images[k:])]
        t0 = time.perf_counter()
        kept_tokens = sum(len(c.ids) for c in kept)
        new_ids = [t for c in chunks[k:] for t in c.ids]
        ids = (record.ids[:kept_tokens] if record is not None else []) + new_ids
        fresh = torch.tensor([new_ids], dtype=torch.long)
        input_ids = torch.cat([record.input_ids[:, :kept_tokens], fresh], dim=1) if kept_tokens else fresh
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        spans: list[ImageSpan] = []
        keys: list[str] = []
        rows: list[Any] = []
        grids: list[tuple[int, int, int]] = []
        offset = 0
        row = 0
        for chunk in chunks:
            for key, pixels, grid, (first, n) in zip(chunk.keys, chunk.rows, chunk.grids, chunk.pads):
                count = grid[0] * grid[1] * grid[2]
                spans.append(ImageSpan(start=offset + first - 1, end=offset + first + n, grid=grid, rows=(row, row + count), key=key))
                row += count
            offset += len(chunk.ids)
            keys.extend(chunk.keys)
            rows.extend(chunk.rows)
            grids.extend(chunk.grids)
        if keys:
            data["pixel_values"] = self.image_cache.assemble(keys, rows)
            data["image_grid_thw"] = torch.tensor(grids, dtype=torch.long)
        inputs = BatchFeature(data)
        layout = PromptLayout(ids=ids, spans=spans)
        if record is not None and k == len(record.chunks) == len(chunks):
            self._records.remove(record)  # identical prompt: replaced by the newer tensors
        self._records.insert(0, _Record(chunks=chunks, ids=ids, input_ids=input_ids))
        del self._records[self._max_records :]
        self._layouts = {i: e for i, e in self._layouts.items() if e[0]() is not None}
        while len(self._layouts) >= _MAX_LAYOUTS:
            del self._layouts[next(iter(self._layouts))]  # the oldest (insertion order)
        self._layouts[id(input_ids)] = (weakref.ref(input_ids), layout)
        self.last_timings.update(assemble=time.perf_counter() - t0, reused_chunks=float(k), new_chunks=float(len(chunks) - k))
        return inputs, layout
