"""A static KV cache: one preallocated K and V tensor for all layers, written in place.

Static shapes are what CUDA graphs need (a graph replays fixed addresses); slots past the
valid length are masked out, and the buffers start zeroed so a masked slot can never inject
NaN into attention (0 x NaN is NaN even under a zero weight).
"""

from __future__ import annotations

from typing import Any

from ...exceptions import ModelError

__all__ = ["StaticKVCache", "kv_bytes_per_token"]


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, element_size: int) -> int:
    return 2 * num_layers * num_kv_heads * head_dim * element_size


class StaticKVCache:
    """K/V of ``num_layers`` layers for up to ``max_tokens`` tokens (batch 1)."""

    def __init__(
        self, *, num_layers: int, num_kv_heads: int, head_dim: int, max_tokens: int, dtype: Any, device: Any
    ) -> None:
        import torch

        self.max_tokens = max_tokens
        element = torch.empty((), dtype=dtype).element_size()
        need = kv_bytes_per_token(num_layers, num_kv_heads, head_dim, element) * max_tokens
        device = torch.device(device)
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            if need > free:
                raise ModelError(
                    f"the fast path's KV cache for {max_tokens} tokens needs {need / 2**30:.2f} GiB but only "
                    f"{free / 2**30:.2f} GiB of {total / 2**30:.1f} GiB is free on {device}: lower "
                    "FastOptions.max_cache_tokens or free GPU memory (e.g. load without the Talker)"
                )
        shape = (num_layers, 1, num_kv_heads, max_tokens, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.nbytes = need

    def layer(self, index: int) -> tuple[Any, Any]:
        return self.k[index], self.v[index]

    def move_rows(self, src: Any, dst: Any) -> None:
        """Rows (slots) ``src`` of every layer to slots ``dst`` (device index tensors of one length).

        The rows are gathered first, so blocks may overlap their destinations (in-place eviction
        moves surviving blocks left). Keys keep the rotary position they were written with.
        """
        if src.numel() == 0:
            return
        self.k[:, :, :, dst] = self.k[:, :, :, src]
        self.v[:, :, :, dst] = self.v[:, :, :, src]
