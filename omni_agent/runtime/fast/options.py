"""``FastOptions``: which parts of the GPU fast path are switched on.

Everything is optional. On CPU only the pieces that are plain PyTorch run (static KV cache,
prefix reuse, image-embedding cache): they are what CI tests on the tiny models. CUDA graphs
and ``torch.compile`` need CUDA and are switched off automatically without it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FastOptions"]


class FastOptions(BaseModel):
    """Switches and sizes of the fast Thinker path (``QwenOmniModel.load(..., fast=FastOptions())``)."""

    model_config = ConfigDict(extra="forbid")

    max_cache_tokens: int = Field(16_384, ge=64)
    """Slots of the static KV cache: prompt + generated tokens of the longest step. A step that
    needs more is refused with a clear message (raise it, or let the context evict screenshots)."""
    prefix_reuse: bool = True
    """Keep the KV cache between calls and prefill only what is new (the transcript is append-only)."""
    image_cache_entries: int = Field(32, ge=0)
    """Vision-encoder outputs kept by image hash (0: re-encode every image every step)."""
    incremental_prompt: bool = True
    """Prepare each step's prompt incrementally: keep the last step's token ids, pixel rows and
    image spans for the unchanged turns and tokenise only the appended ones (same tensors as the
    processor; needs the image cache, ``image_cache_entries > 0``)."""
    preprocess_on_device: bool = True
    """Resize, normalise and patchify new screenshots on the GPU (CUDA only; ``device_image.py``):
    the processor's values, without its numpy pass on one CPU core."""
    cuda_graphs: bool = True
    """Capture one decode step in a CUDA graph (CUDA only): one launch per token instead of thousands."""
    compile: bool = True
    """``torch.compile`` the per-layer decode function before graph capture (CUDA only): fuses the
    small element-wise kernels; compiled once for all layers (same shapes, weights as arguments)."""
    compile_prefill: bool = True
    """``torch.compile`` (dynamic shapes) the prefill's per-layer norms, rotary and residual (CUDA
    only): fewer, fused kernels where eager launch overhead dominated. Off: the eager prefill,
    bit-identical to the plain forward."""
    graph_buckets: tuple[int, ...] = (2048, 4096, 8192, 12288)
    """Attention lengths with their own captured graph, so a short context does not read the
    whole static cache; ``max_cache_tokens`` is always added as the last bucket."""
    fuse_qkv: bool = True
    """Decode reads each layer's q/k/v projections as one stacked matrix (the model's parameters
    become views of it: no extra memory, same values)."""
    prefill_experts: Literal["grouped", "module"] = "grouped"
    """How MoE layers run for a prefill: ``grouped`` (``moe_prefill.py``: tokens sorted by expert,
    two grouped GEMMs, no host sync; where no grouped-GEMM kernel exists, the same layout one
    matmul per expert) or ``module`` (the transformers experts module as loaded)."""
    decode_experts: Literal["triton", "gather"] = "triton"
    """How the chosen MoE experts run for one decoded token: ``triton`` (read in place by index,
    CUDA + Triton only; falls back to ``gather`` elsewhere) or ``gather`` (copy the chosen
    experts, one batched matmul). Both are CUDA-graph safe."""

    eviction: Literal["in_place", "reprefill"] = "in_place"
    """When screenshots leave the context: ``in_place`` moves the cached rows of everything that
    survives to their new slots (positions kept) and computes only the placeholder text;
    ``reprefill`` cuts the cache at the first evicted image and prefills the rest again (exact,
    ~2x a normal step). docs/perf-gpu.md gives what in-place changes in the logits."""

    decode_attention: Literal["triton", "matmul"] = "triton"
    """Decode attention: ``triton`` (``attention_kernels.py``: one split-K kernel over the valid
    slots only, CUDA + Triton) or ``matmul`` (two matmuls over the whole bucket, any device)."""

    decode_router: Literal["triton", "torch"] = "triton"
    """With Triton decode attention: the MoE router's softmax + top-k + renormalisation as one
    Triton kernel (``moe_kernels.router_topk``) or torch's ops (softmax, topk, division)."""

    fuse_kv_write: bool = True
    """With Triton decode attention: the attention kernel writes the decoded token's K/V rows to
    the cache (two ``index_copy_`` launches per layer fewer); off: ``index_copy_`` as before."""

    sample_in_graph: bool = True
    """Greedy decoding (temperature 0) with CUDA graphs: the argmax (with the stop tokens banned
    while ``min_new_tokens`` is not reached), the next token, slot and position are computed
    inside the graph, and the host queues the next replay before reading the last token (one
    replay ahead: no host round trip between tokens). Off: one host argmax per token."""

    vision_graphs: bool = True
    """Encode a new screenshot through one CUDA graph of the vision encoder per image grid
    (CUDA only; ``vision_graph.py``): the same kernels as the eager encoder, without its ~1,000
    launches from Python. Off, or for several new images at once: the eager encoder."""

    def buckets(self) -> list[int]:
        """Sorted attention-length buckets, capped by and ending with ``max_cache_tokens``."""
        sizes = {b for b in self.graph_buckets if b < self.max_cache_tokens}
        sizes.add(self.max_cache_tokens)
        return sorted(sizes)
