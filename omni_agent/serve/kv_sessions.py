"""Per-session KV prefixes under one memory budget (LRU), and how much of a new prompt they cover.

A conversation's next turn starts with its previous prompt and answer, so the KV of that
prefix is kept under the session's id and only the rest is prefilled. Token ids cannot tell two
images (or two audio clips) of the same size apart, so every media block carries a content key
and a changed block cuts the reusable prefix at its start; a cut never lands inside a block.

The budget counts the KV of running requests (reserved for prompt + max new tokens when they
are admitted) and of kept sessions; kept sessions are evicted oldest first to make room, and a
request that cannot fit even in an empty cache is refused.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..runtime.fast.prefix_cache import common_prefix
from .errors import CapacityError

__all__ = ["KVBudget", "MediaBlock", "SessionKV", "SessionStore", "reusable_prefix"]


@dataclass(frozen=True)
class MediaBlock:
    """One image or audio clip in a prompt: token slots [start, end) (``start`` is the block's
    opening token), its index among that kind's inputs, and a content key."""

    kind: str
    start: int
    end: int
    index: int
    key: str


@dataclass
class SessionKV:
    """What a session keeps between turns: the token ids its KV holds and the KV itself
    (per layer ``(k, v)`` tensors ``[1, heads, len, dim]``)."""

    ids: list[int]
    kv: list[tuple[Any, Any]]
    blocks: list[MediaBlock]
    nbytes: int


def content_key(tensor: Any, extra: Sequence[int] = ()) -> str:
    import numpy as np

    array = np.ascontiguousarray(tensor.detach().cpu().float().numpy())
    digest = hashlib.sha1(memoryview(array).cast("B"))
    digest.update(repr(tuple(int(v) for v in extra)).encode())
    return digest.hexdigest()


def reusable_prefix(old_ids: Sequence[int], old_blocks: Sequence[MediaBlock], new_ids: Sequence[int],
                    new_blocks: Sequence[MediaBlock]) -> int:
    """How many leading tokens of ``new_ids`` the old KV already holds (always < len(new_ids):
    the last prompt token is recomputed so that its logits exist)."""
    k = common_prefix(list(old_ids), list(new_ids), min(len(old_ids), len(new_ids) - 1))
    by_start = {(b.kind, b.start): b for b in new_blocks}
    for block in old_blocks:
        if block.start >= k:
            break
        other = by_start.get((block.kind, block.start))
        if other is None or other.key != block.key or other.end != block.end:
            k = block.start
            break
    for block in new_blocks:
        if block.start < k < block.end:
            k = block.start
            break
    return max(k, 0)


class KVBudget:
    """Bytes of KV memory: reserved by running requests, held by kept sessions."""

    def __init__(self, budget_bytes: int, bytes_per_token: int) -> None:
        self.budget = int(budget_bytes)
        self.per_token = int(bytes_per_token)
        self.reserved = 0

    def need(self, tokens: int) -> int:
        return tokens * self.per_token

    def check_possible(self, tokens: int) -> None:
        need = self.need(tokens)
        if need > self.budget:
            raise CapacityError(
                f"this request needs KV memory for {tokens} tokens ({need / 2**20:.1f} MiB) but the server's "
                f"KV budget is {self.budget / 2**20:.1f} MiB: send a shorter conversation or fewer max_tokens",
                retriable=False,
            )


@dataclass
class SessionStore:
    """Kept session prefixes, least recently used first."""

    max_sessions: int
    items: OrderedDict[str, SessionKV] = field(default_factory=OrderedDict)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.items.values())

    def take(self, session_id: str | None) -> SessionKV | None:
        """Remove and return a session's prefix (the request now owns it)."""
        if session_id is None:
            return None
        return self.items.pop(session_id, None)

    def put(self, session_id: str, entry: SessionKV) -> None:
        self.items.pop(session_id, None)
        self.items[session_id] = entry
        while len(self.items) > self.max_sessions:
            self.items.popitem(last=False)

    def evict_oldest(self) -> bool:
        if not self.items:
            return False
        self.items.popitem(last=False)
        return True

    def clear(self) -> None:
        self.items.clear()
