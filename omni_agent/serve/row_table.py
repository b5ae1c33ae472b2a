"""Who owns which row of the fast engine's row-static KV cache, and what a kept row holds.

A running request owns one row. When it finishes, a request with a ``session_id`` leaves its
row to the session: the token ids (and media blocks) whose K/V the row holds, so the session's
next turn reuses the longest valid prefix (``kv_sessions.reusable_prefix``) and prefills only
the rest. Idle session rows are reclaimed least recently used first when a request needs a row
and none is free, and when more than ``max_sessions`` are kept.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

from .kv_sessions import MediaBlock, reusable_prefix

__all__ = ["Row", "RowTable"]


@dataclass
class Row:
    """One row: its owner (a running request) or its kept session, and what its K/V holds."""

    index: int
    busy: bool = False
    session_id: str | None = None
    ids: list[int] = field(default_factory=list)
    blocks: list[MediaBlock] = field(default_factory=list)
    used: int = 0
    """Recency stamp (larger: more recently used)."""


class RowTable:
    """Rows 0..rows-1: free, busy (a running request), or kept by a session (idle, LRU)."""

    def __init__(self, rows: int, *, max_sessions: int) -> None:
        self.rows = [Row(i) for i in range(rows)]
        self.max_sessions = max_sessions
        self._clock = itertools.count(1)

    @property
    def kept(self) -> list[Row]:
        """Idle rows that hold a session's prefix, least recently used first."""
        return sorted((r for r in self.rows if not r.busy and r.session_id is not None), key=lambda r: r.used)

    @property
    def busy(self) -> int:
        return sum(r.busy for r in self.rows)

    def acquire(self, session_id: str | None, ids: Sequence[int], blocks: Sequence[MediaBlock]) -> tuple[Row, int] | None:
        """A row for a new request and how many of its leading tokens that row already holds;
        None when every row is busy (the request waits)."""
        if session_id is not None:
            own = next((r for r in self.rows if not r.busy and r.session_id == session_id), None)
            if own is not None:
                reuse = reusable_prefix(own.ids, own.blocks, ids, blocks)
                return self._take(own), reuse
        free = next((r for r in self.rows if not r.busy and r.session_id is None), None)
        if free is None:
            kept = self.kept
            if not kept:
                return None
            free = kept[0]  # the least recently used session gives its row up
        return self._take(free), 0

    def _take(self, row: Row) -> Row:
        row.busy = True
        row.session_id = None
        row.ids = []
        row.blocks = []
        row.used = next(self._clock)
        return row

    def release(self, row: Row, *, session_id: str | None = None, ids: Sequence[int] = (),
                blocks: Sequence[MediaBlock] = ()) -> None:  # fmt: skip
        """The request is done: keep the row for ``session_id`` (holding ``ids``) or free it."""
        row.busy = False
        row.used = next(self._clock)
        if session_id is None or not ids:
            row.session_id, row.ids, row.blocks = None, [], []
            return
        for other in self.rows:  # one kept row per session: the newest
            if other is not row and not other.busy and other.session_id == session_id:
                other.session_id, other.ids, other.blocks = None, [], []
        row.session_id, row.ids, row.blocks = session_id, list(ids), list(blocks)
        for stale in self.kept[: max(0, len(self.kept) - self.max_sessions)]:
            stale.session_id, stale.ids, stale.blocks = None, [], []

    def clear_sessions(self) -> None:
        for row in self.rows:
            if not row.busy:
                row.session_id, row.ids, row.blocks = None, [], []
