"""One decode step for a batch of sequences over a ``RowKVCache``, one CUDA graph per bucket.

Entry b of a step feeds ``token[b]`` at M-RoPE position ``position[b]`` into row ``row[b]`` at
slot ``slot[b]`` and attends to that row's slots 0..slot[b]. The four values live in ONE
device buffer (one host-to-device copy per step), so a graph captured for a (batch bucket,
length bucket) pair serves every mix of rows and lengths that fits it; unused entries of a
bucket point at the cache's scratch row (slot 0), so padding never touches a real row and
never changes another entry's result (every op is row-wise).

The layer maths is ``TextStack``'s with a batch axis: the same weights, norms and rotary; the
K/V write is one ``index_copy_`` per layer; attention is ``batched_kernels`` (Triton split-K on
CUDA, its torch reference elsewhere); the MoE router runs for all entries at once and the
experts run either per (entry, expert) pair (``moe_kernels.expert_gemv``, reads an expert once
per pair) or as two grouped GEMMs over the pairs sorted by expert (``moe_prefill``, reads each
chosen expert once); ``choose_experts`` times both per batch bucket on CUDA.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from ...exceptions import ModelError
from .cuda_sync import GRAPH_LOCK, capture_graph, synchronize
from .batched_kernels import batched_decode_attention, batched_decode_attention_reference, write_kv
from .layers import LayerWeights, TextStack
from .row_cache import RowKVCache

__all__ = ["BatchedDecoder", "batch_buckets"]


def batch_buckets(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to the first power of two >= ``max_batch``."""
    sizes = [1]
    while sizes[-1] < max_batch:
        sizes.append(sizes[-1] * 2)
    return sizes


class BatchedDecoder:
    """Batched decode steps of a ``TextStack`` over a ``RowKVCache`` (graphs on CUDA, eager elsewhere)."""

    def __init__(self, stack: TextStack, cache: RowKVCache, *, max_batch: int, length_buckets: Sequence[int] = (),
                 cuda_graphs: bool = True, compile: bool = True) -> None:  # fmt: skip
        import torch

        self.stack = stack
        self.cache = cache
        self.device = cache.k.device
        cuda = self.device.type == "cuda"
        self.batch_sizes = batch_buckets(max_batch)
        top = cache.row_tokens
        self.length_sizes = sorted({b for b in length_buckets if 0 < b < top} | {top})
        self.graphs_on = bool(cuda_graphs and cuda)
        self.compile_on = bool(compile and cuda)
        self._compiled = False
        # The per-layer element-wise work (norms, rotary, residuals, router, expert activation):
        # eager here, compiled once per batch bucket on CUDA (``_compile``).
        self.pre_attention = stack._pre_attention  # noqa: SLF001 - the stack's layer maths, shared
        self.pre_attention_fused = stack._pre_attention_fused  # noqa: SLF001
        self.post_attention = stack._post_attention  # noqa: SLF001
        self.expert_act = stack._expert_act  # noqa: SLF001
        self.route = self._route
        self.combine = _combine
        from .moe_kernels import triton_available

        self.triton = triton_available(self.device)
        from .attention_kernels import decode_attention_supported

        self.triton_attention = self.triton and decode_attention_supported(stack.head_dim)
        from .moe_prefill import grouped_gemm_available

        self.grouped_ok = cuda and grouped_gemm_available(self.device) and cache.k.dtype == torch.bfloat16
        self.grouped_from: int | None = None
        """Batch buckets of at least this size run the experts as grouped GEMMs (``choose_experts``)."""
        biggest = self.batch_sizes[-1]
        self.packed = torch.zeros((4, biggest), dtype=torch.long, device=self.device)  # token, position, row, slot
        self.head_index = torch.arange(stack.num_kv_heads, device=self.device)
        self._graphs: dict[tuple[int, int], tuple[Any, Any]] = {}
        self._pool: Any = None
        self.graphs_captured = 0

    # -- buckets -------------------------------------------------------------------------------
    def buckets(self, batch: int, max_slot: int) -> tuple[int, int]:
        """The (batch bucket, length bucket) of a step with ``batch`` entries whose largest slot is ``max_slot``."""
        size = next((b for b in self.batch_sizes if b >= batch), None)
        length = next((n for n in self.length_sizes if n > max_slot), None)
        if size is None or length is None:
            raise ModelError(f"a decode step of {batch} entries up to slot {max_slot} exceeds the engine's buckets")
        return size, length

    # -- the step ------------------------------------------------------------------------------
    def step(self, tokens: Sequence[int], positions: Sequence[int], rows: Sequence[int], slots: Sequence[int]) -> Any:
        """Next-token logits [B, V] (float32) of B entries; each writes its token's K/V at (row, slot)."""
        import torch

        batch = len(tokens)
        size, length = self.buckets(batch, max(slots))
        if self.graphs_on and (size, length) not in self._graphs:
            self._capture(size, length)
        pad = size - batch
        host = torch.tensor(
            [list(tokens) + [0] * pad, list(positions) + [0] * pad, list(rows) + [self.cache.scratch] * pad, list(slots) + [0] * pad],
            dtype=torch.long,
        )
        self.packed[:, :size].copy_(host, non_blocking=False)
        if self.graphs_on:
            graph, out = self._graphs[(size, length)]
            graph.replay()
        else:
            out = self._forward(size, length)
        return out[:batch]

    def _forward(self, size: int, length: int) -> Any:
        """The step's maths over the first ``size`` entries of the packed buffer (graph-capturable)."""
        s = self.stack
        tokens, positions, rows, slots = self.packed[:, :size]
        x = s.model.embed_tokens(tokens.view(size, 1))  # [B, 1, H]
        cos, sin = s.rope(x, positions.view(1, size, 1).expand(3, size, 1))
        flat = ((rows.view(-1, 1) * s.num_kv_heads + self.head_index.view(1, -1)) * self.cache.row_tokens + slots.view(-1, 1)).view(-1)
        for i, w in enumerate(s.layers):
            if w.qkv is not None:
                q, k, v = self.pre_attention_fused(x, w.ln1, w.qkv, w.q_norm, w.k_norm, cos, sin)
            else:
                q, k, v = self.pre_attention(x, w.ln1, w.q, w.k, w.v, w.q_norm, w.k_norm, cos, sin)
            kc, vc = self.cache.layer(i)
            write_kv(kc, k, flat)
            write_kv(vc, v, flat)
            qf = q.reshape(size, s.num_heads, s.head_dim)
            if self.triton_attention:
                a = batched_decode_attention(qf, kc, vc, rows, slots, length, s.scale)
            else:
                a = batched_decode_attention_reference(qf, kc, vc, rows, slots, length, s.scale)
            x, h = self.post_attention(x, a.reshape(size, 1, -1), w.o, w.ln2)
            x = self._mlp(w, x, h, grouped=self.grouped_from is not None and size >= self.grouped_from)
        return s.head(x)[:, 0].float()

    def _mlp(self, w: LayerWeights, x: Any, h: Any, *, grouped: bool) -> Any:
        """Residual MLP of B tokens: MoE experts per (token, expert) pair or grouped; dense and
        shared-expert layers through the stack's own code."""
        s = self.stack
        if w.router is None or w.shared is not None:
            return s._mlp_from(w, x, h)  # noqa: SLF001 - the stack's dense / shared-expert maths
        size = h.shape[0]
        flat = h.view(size, -1)
        if grouped:
            from .moe_prefill import moe_prefill

            out = moe_prefill(flat, w.router, w.gate_up, w.down, top_k=s.top_k, norm_topk=s.norm_topk, grouped=True)
            return x + out.view_as(x)
        from .moe_kernels import expert_gemv

        xs, top_w, chosen = self.route(flat, w.router)
        gu = expert_gemv(w.gate_up, xs, chosen, use_triton=self.triton)
        out = expert_gemv(w.down, self.expert_act(gu), chosen, use_triton=self.triton)
        return self.combine(x, out, top_w)

    def _route(self, h: Any, router: Any) -> tuple[Any, Any, Any]:
        """Router of B tokens h [B, H] (softmax in float32, top-k, renormalised): one input row
        per (token, expert) pair [B*k, H], the pairs' weights [B, k] and expert ids [B*k]."""
        import torch
        import torch.nn.functional as F

        s = self.stack
        probs = torch.softmax(F.linear(h, router).float(), dim=-1)
        top_w, top_i = torch.topk(probs, s.top_k, dim=-1)
        if s.norm_topk:
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return h.repeat_interleave(s.top_k, dim=0), top_w.to(h.dtype), top_i.reshape(-1)

    def _compile(self) -> None:
        """Compile the per-layer functions (static shapes: one entry per batch bucket, shared by
        all layers since the weights are arguments)."""
        import torch

        def fast(fn: Any) -> Any:
            return torch.compile(fn, dynamic=False, fullgraph=True)

        self.pre_attention = fast(self.pre_attention)
        self.pre_attention_fused = fast(self.pre_attention_fused)
        self.post_attention = fast(self.post_attention)
        self.expert_act = fast(self.expert_act)
        self.route = fast(self.route)
        self.combine = fast(self.combine)
        self._compiled = True

    # -- CUDA graphs ---------------------------------------------------------------------------
    def _pad_all(self) -> None:
        """Every entry -> the scratch row, slot 0 (warm-up and capture write nowhere real)."""
        self.packed.zero_()
        self.packed[2].fill_(self.cache.scratch)

    def _capture(self, size: int, length: int) -> None:
        import torch

        with GRAPH_LOCK:  # the Talker's thread captures and syncs too (cuda_sync.py); compiling included
            self._pad_all()
            if self.compile_on and not self._compiled:
                self._compile()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph, out = capture_graph(lambda: self._forward(size, length), pool=self._pool)
        self._graphs[(size, length)] = (graph, out)
        self.graphs_captured += 1

    def choose_experts(self, repeats: int = 5) -> dict[int, float]:
        """On CUDA with grouped GEMMs: time both expert paths of one MoE layer per batch bucket
        and run grouped from the first bucket where it is faster. Returns {bucket: grouped/gemv}."""
        import torch

        if not self.grouped_ok:
            return {}
        layer = next((w for w in self.stack.layers if w.router is not None and w.shared is None), None)
        if layer is None:
            return {}
        ratios: dict[int, float] = {}
        hidden = layer.router.shape[1]
        gen = torch.Generator(device=self.device).manual_seed(0)
        for size in self.batch_sizes:
            h = torch.randn((size, 1, hidden), generator=gen, device=self.device, dtype=self.cache.k.dtype)
            times = []
            for grouped in (False, True):
                for _ in range(2):
                    self._mlp(layer, h, h, grouped=grouped)
                synchronize(self.device)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    self._mlp(layer, h, h, grouped=grouped)
                synchronize(self.device)
                times.append(time.perf_counter() - t0)
            ratios[size] = times[1] / times[0]
        self.grouped_from = next((b for b in self.batch_sizes if ratios[b] < 1.0 and all(ratios[c] < 1.0 for c in self.batch_sizes if c > b)), None)
        return ratios

    def warm_up(self, batch_sizes: Sequence[int] | None = None, lengths: Sequence[int] | None = None) -> float:
        """Capture the graphs of these buckets ahead of traffic; returns seconds (0 without graphs)."""
        if not self.graphs_on:
            return 0.0
        import torch

        t0 = time.perf_counter()
        for size in batch_sizes or self.batch_sizes:
            for length in lengths or self.length_sizes:
                key = self.buckets(size, length - 1)
                if key not in self._graphs:
                    self._capture(*key)
        synchronize(self.device)
        return time.perf_counter() - t0


def _combine(x: Any, out: Any, top_w: Any) -> Any:
    """x + each token's expert outputs [B*k, H] weighted by top_w [B, k]."""
    size, k = top_w.shape
    return x + (out.view(size, k, -1) * top_w.unsqueeze(-1)).sum(dim=1).view_as(x)
