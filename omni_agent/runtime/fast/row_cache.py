"""A row-static KV cache for many sequences: per layer K and V [R + 1, Hkv, L, D].

Each running request (or kept session; or spoken stream, for the batched Talker) owns one of the R rows for all its tokens; row R is
scratch, written and read only by the padding entries of a batch bucket. Fixed shapes and
addresses are what a captured CUDA graph needs; the buffers start zeroed so masked slots can
never inject NaN. ``row(r)`` is a batch-1 view with the ``StaticKVCache`` interface, so the
single-sequence prefill (``TextStack.forward``) writes a request's prompt straight into its row.
"""

from __future__ import annotations

from typing import Any

from ...exceptions import ModelError
from .kv_cache import kv_bytes_per_token

__all__ = ["RowKVCache"]


class RowKVCache:
    """K/V of ``num_layers`` layers for ``rows`` sequences of up to ``row_tokens`` tokens each."""

    def __init__(self, *, num_layers: int, rows: int, num_kv_heads: int, head_dim: int, row_tokens: int,
                 dtype: Any, device: Any, owner: str = "the engine's KV cache", remedy: str = "lower --kv-budget-mb") -> None:  # fmt: skip
        import torch

        self.rows = rows
        self.row_tokens = row_tokens
        self.scratch = rows
        element = torch.empty((), dtype=dtype).element_size()
        need = kv_bytes_per_token(num_layers, num_kv_heads, head_dim, element) * row_tokens * (rows + 1)
        device = torch.device(device)
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            if need > free:
                raise ModelError(
                    f"{owner} ({rows} rows x {row_tokens} tokens) needs {need / 2**30:.2f} GiB but only "
                    f"{free / 2**30:.2f} GiB of {total / 2**30:.1f} GiB is free on {device}: {remedy}"
                )
        shape = (num_layers, rows + 1, num_kv_heads, row_tokens, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.nbytes = need

    def layer(self, index: int) -> tuple[Any, Any]:
        """Every row of one layer: [R + 1, Hkv, L, D] each."""
        return self.k[index], self.v[index]

    def row(self, row: int) -> "RowView":
        return RowView(self, row)


class RowView:
    """One row as a batch-1 cache: ``layer(i)`` -> (K, V) [1, Hkv, L, D] views (writes land in the row)."""

    def __init__(self, cache: RowKVCache, row: int) -> None:
        self.cache = cache
        self.index = row

    def layer(self, index: int) -> tuple[Any, Any]:
        r = self.index
        return self.cache.k[index, r : r + 1], self.cache.v[index, r : r + 1]

    def read(self, length: int) -> list[tuple[Any, Any]]:
        """Per layer (K, V) [1, Hkv, length, D] views of the first ``length`` slots."""
        r = self.index
        return [(self.cache.k[i, r : r + 1, :, :length], self.cache.v[i, r : r + 1, :, :length]) for i in range(self.cache.k.shape[0])]

    def write(self, kv: list[tuple[Any, Any]], start: int) -> None:
        """Copy per-layer (K, V) [1, Hkv, n, D] into slots [start, start + n) (a plain forward's cache)."""
        r = self.index
        for i, (k, v) in enumerate(kv):
            n = k.shape[2]
            self.cache.k[i, r, :, start : start + n] = k[0]
            self.cache.v[i, r, :, start : start + n] = v[0]
