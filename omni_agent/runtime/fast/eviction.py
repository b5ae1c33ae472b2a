"""Eviction without re-prefill: keep the KV rows of what survives an evicted screenshot.

When the image budget (``omni_agent/context.py``) evicts old screenshots, each evicted image in
the prompt becomes a short placeholder text ("[screenshot removed]") and everything after it is
unchanged. A plain prefix cache cuts at the first evicted image and re-prefills all the rest
(thousands of tokens: the later screenshots, calls and results). Here the new prompt is aligned
against the cached transcript instead: the cached rows of every surviving block are moved in
place to their new slots (their rotary positions are kept: RoPE was applied when the rows were
written), only the placeholder tokens are computed (at positions inside the gap the evicted
image leaves, so what follows keeps its positions), and the step prefills its new tail as usual.

What changes against a full re-prefill: the kept rows after an evicted image were computed while
that image was visible, and positions keep a gap where it was. ``docs/perf-gpu.md`` gives the
measured logit difference (tiny float32 model and the full-size model); ``FastOptions.eviction``
picks ``"in_place"`` (default) or ``"reprefill"`` (exact).

Alignment works on symbols: text tokens as they are, each image as one symbol (its content key),
so an image is kept or dropped whole. After the common prefix, the next cached window of
``window`` symbols found in the new prompt (nearest first, with no image in between) resumes the
match; a gap in the new prompt must be text that fits in the positions of the gap it fills.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Sequence

from .prefix_cache import ImageSpan, PrefixState

__all__ = ["CacheEdit", "Insert", "KeptBlock", "apply_to_state", "plan_cache_edit"]


@dataclass(frozen=True)
class KeptBlock:
    """``length`` cached tokens moved from slot ``src`` to slot ``dst`` (dst <= src)."""

    src: int
    dst: int
    length: int


@dataclass(frozen=True)
class Insert:
    """New-prompt tokens [start, end) computed in the middle (placeholders), first position ``position``."""

    start: int
    end: int
    position: int


@dataclass
class CacheEdit:
    """How to turn the cached transcript into a prefix of the new prompt without re-prefilling it."""

    blocks: list[KeptBlock]
    inserts: list[Insert]
    reuse_end: int
    """New-prompt tokens [0, reuse_end) are in the cache after the edit; the tail is prefilled."""
    dropped_tokens: int = 0
    truncate_reuse: int = 0
    """What a plain prefix cut would have kept (for the counters)."""

    @property
    def kept_tokens(self) -> int:
        return sum(b.length for b in self.blocks)

    @property
    def inserted_tokens(self) -> int:
        return sum(i.end - i.start for i in self.inserts)


def _symbols(ids: Sequence[int], spans: Sequence[ImageSpan]) -> tuple[list[Any], list[int]]:
    """Symbols (text token ids; one ``("img", key, pads)`` per image's pad run) and the token
    index where each symbol starts (plus the total length at the end)."""
    syms: list[Any] = []
    starts: list[int] = []
    at = 0
    for span in spans:
        first = span.start + 1  # ImageSpan.start is <|vision_start|>; pads are [start+1, end)
        syms.extend(ids[at:first])
        starts.extend(range(at, first))
        syms.append(("img", span.key, span.end - first))
        starts.append(first)
        at = span.end
    syms.extend(ids[at:])
    starts.extend(range(at, len(ids)))
    starts.append(len(ids))
    return syms, starts


def _align(c: list[Any], n: list[Any], start: int, window: int) -> list[tuple[int, int, int]]:
    """Matching symbol blocks (c index, n index, length) after a common prefix of ``start`` symbols."""
    blocks = [(0, 0, start)] if start else []
    index: dict[tuple[Any, ...], list[int]] = {}
    for p in range(start, len(n) - window + 1):
        index.setdefault(tuple(n[p : p + window]), []).append(p)
    image_at = [p for p, s in enumerate(n) if isinstance(s, tuple)]
    i = j = start
    while i < len(c):
        found = None
        for d in range(i, len(c) - window + 1):
            hits = index.get(tuple(c[d : d + window]))
            if not hits:
                continue
            p = hits[bisect.bisect_left(hits, j)] if bisect.bisect_left(hits, j) < len(hits) else None
            if p is None:
                continue
            first_image = bisect.bisect_left(image_at, j)
            if first_image < len(image_at) and image_at[first_image] < p:
                continue  # the new prompt would need an image computed in the middle
            found = (d, p)
            break
        if found is None:
            break
        d, p = found
        length = window
        while d + length < len(c) and p + length < len(n) and c[d + length] == n[p + length]:
            length += 1
        blocks.append((d, p, length))
        i, j = d + length, p + length
    return blocks


def plan_cache_edit(
    state: PrefixState,
    new_ids: Sequence[int],
    new_spans: Sequence[ImageSpan],
    *,
    reuse: int,
    window: int = 8,
    min_gain: int = 32,
) -> CacheEdit | None:
    """An in-place edit keeping more of the cache than the plain prefix ``reuse``, or None.

    None when the cache is already a prefix of the prompt, when nothing after the divergence can
    be kept, or when keeping it would save fewer than ``min_gain`` tokens of prefill.
    """
    cached = state.token_ids
    if reuse >= len(cached) or not cached:
        return None
    c_syms, c_starts = _symbols(cached, state.images)
    n_syms, n_starts = _symbols(list(new_ids), new_spans)
    start = bisect.bisect_left(c_starts, reuse)
    if start >= len(c_starts) or c_starts[start] != reuse:
        return None  # the prefix cut is not on a symbol boundary (never inside an image)
    raw = _align(c_syms, n_syms, start, window)
    blocks: list[KeptBlock] = []
    inserts: list[Insert] = []
    limit = len(new_ids) - 1  # the last prompt token is always recomputed (its logits)
    end = 0  # new-prompt tokens settled so far
    for cs, ns, length in raw:
        src, dst = c_starts[cs], n_starts[ns]
        size = n_starts[ns + length] - dst
        if dst > end:  # a gap of new text before this block: does it fit in the positions?
            before = state.position_cummax[blocks[-1].src + blocks[-1].length - 1] if blocks else -1
            first_kept = state.position_min[src]
            if before + (dst - end) >= first_kept:
                break
            inserts.append(Insert(start=end, end=dst, position=before + 1))
        if dst + size > limit:
            size = limit - dst
            while size > 0 and any(s.start < src + size < s.end for s in state.images):
                size -= 1  # never keep part of an image
        if size <= 0:
            break
        blocks.append(KeptBlock(src=src, dst=dst, length=size))
        end = dst + size
        if size < n_starts[ns + length] - dst:
            break
    if inserts and inserts[-1].end > end:
        inserts.pop()
    reuse_end = end
    if reuse_end - reuse < min_gain + sum(i.end - i.start for i in inserts):
        return None
    return CacheEdit(
        blocks=blocks,
        inserts=inserts,
        reuse_end=reuse_end,
        dropped_tokens=len(cached) - sum(b.length for b in blocks),
        truncate_reuse=reuse,
    )


def apply_to_state(state: PrefixState, edit: CacheEdit, new_ids: Sequence[int], new_spans: Sequence[ImageSpan]) -> None:
    """Rewrite ``state`` to describe the cache after ``edit`` (kept rows keep their positions)."""
    cummax = [0] * edit.reuse_end
    minimum = [0] * edit.reuse_end
    for b in edit.blocks:
        cummax[b.dst : b.dst + b.length] = state.position_cummax[b.src : b.src + b.length]
        minimum[b.dst : b.dst + b.length] = state.position_min[b.src : b.src + b.length]
    for ins in edit.inserts:
        values = list(range(ins.position, ins.position + ins.end - ins.start))
        cummax[ins.start : ins.end] = values
        minimum[ins.start : ins.end] = values
    state.token_ids = [int(t) for t in new_ids[: edit.reuse_end]]
    state.position_cummax = cummax
    state.position_min = minimum
    state.images = [s for s in new_spans if s.end <= edit.reuse_end]
