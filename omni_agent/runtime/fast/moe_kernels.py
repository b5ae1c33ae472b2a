"""MoE expert matrix-vector products for one decoded token, reading the chosen experts in place.

Why a kernel of our own: with one token, the 8 chosen experts' weights (75 MB per Thinker
layer in bf16) are the whole cost. transformers' ``batched_mm`` first gathers them into a new
tensor (a 75 MB write + a 75 MB read on top of the read), ``grouped_mm`` is tuned for many tokens.
This Triton kernel takes the expert ids as a device tensor (so it is CUDA-graph safe) and
streams each chosen expert's rows once, accumulating in float32 like cuBLAS.
Without Triton or CUDA, ``expert_gemv`` falls back to gather + batched matmul (same maths).
"""

from __future__ import annotations

from typing import Any

__all__ = ["expert_gemv", "router_topk", "triton_available"]

_KERNEL: Any = None


def triton_available(device: Any) -> bool:
    if getattr(device, "type", str(device)) != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _kernel() -> Any:
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def moe_gemv(
        w_ptr, x_ptr, idx_ptr, out_ptr, N, K, stride_we, stride_wn, stride_xs, stride_os,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        slot = tl.program_id(0)
        pid_n = tl.program_id(1)
        expert = tl.load(idx_ptr + slot).to(tl.int64)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        rows = w_ptr + expert * stride_we + offs_n[:, None].to(tl.int64) * stride_wn
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            w = tl.load(rows + offs_k[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0)
            x = tl.load(x_ptr + slot * stride_xs + offs_k, mask=mask_k, other=0.0)
            acc += tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
        tl.store(out_ptr + slot * stride_os + offs_n, acc.to(out_ptr.dtype.element_ty), mask=mask_n)

    _KERNEL = moe_gemv
    return _KERNEL


def expert_gemv(weights: Any, x: Any, expert_ids: Any, *, use_triton: bool, block_n: int = 16, block_k: int = 256) -> Any:
    """out[s] = weights[expert_ids[s]] @ x[s] for each chosen slot s.

    weights [E, N, K] (last dim contiguous); x [S, K] or [1, K] (one input for every slot);
    expert_ids [S] (device tensor). Returns [S, N] in the weights' dtype.
    """
    import torch

    slots = expert_ids.shape[0]
    if not use_triton:
        xs = x.expand(slots, -1) if x.shape[0] == 1 else x
        return torch.bmm(weights[expert_ids], xs.unsqueeze(-1)).squeeze(-1)
    _, n, k = weights.shape
    if weights.stride(-1) != 1:
        raise ValueError("expert weights must be contiguous along their last dimension")
    out = torch.empty((slots, n), dtype=weights.dtype, device=weights.device)
    stride_xs = 0 if x.shape[0] == 1 else x.stride(0)
    grid = (slots, (n + block_n - 1) // block_n)
    _kernel()[grid](
        weights, x, expert_ids, out, n, k, weights.stride(0), weights.stride(1), stride_xs, out.stride(0),
        BLOCK_N=block_n, BLOCK_K=block_k,
    )  # fmt: skip
    return out


_ROUTER: Any = None


def _router_kernel() -> Any:
    global _ROUTER
    if _ROUTER is not None:
        return _ROUTER
    import triton
    import triton.language as tl

    @triton.jit
    def router_topk(logits_ptr, w_ptr, i_ptr, E: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, NORM: tl.constexpr):
        offs = tl.arange(0, E)
        z = tl.load(logits_ptr + offs).to(tl.float32)
        e = tl.exp(z - tl.max(z, 0))
        p = e / tl.sum(e, 0)
        slots = tl.arange(0, KP)
        picked_w = tl.zeros([KP], tl.float32)
        picked_i = tl.zeros([KP], tl.int64)
        for j in tl.static_range(K):
            best = tl.max(p, 0)
            at = tl.min(tl.where(p == best, offs, E), 0)  # the first index of the maximum
            picked_w = tl.where(slots == j, best, picked_w)
            picked_i = tl.where(slots == j, at.to(tl.int64), picked_i)
            p = tl.where(offs == at, -1.0, p)
        if NORM:
            picked_w = picked_w / tl.sum(picked_w, 0)
        tl.store(w_ptr + slots, picked_w.to(w_ptr.dtype.element_ty), mask=slots < K)
        tl.store(i_ptr + slots, picked_i, mask=slots < K)

    _ROUTER = router_topk
    return _ROUTER


def router_topk(logits: Any, top_k: int, *, normalize: bool, dtype: Any) -> tuple[Any, Any]:
    """Softmax (float32) over one token's router logits [E] (E a power of two), the top-k experts
    and their weights, renormalised if asked: one kernel instead of softmax + topk (a radix
    select and a sort) + division, ~10 us per layer of a decoded token on an H200."""
    import torch
    import triton

    experts = logits.numel()
    weights = torch.empty(top_k, dtype=dtype, device=logits.device)
    ids = torch.empty(top_k, dtype=torch.long, device=logits.device)
    _router_kernel()[(1,)](logits.reshape(-1), weights, ids, E=experts, K=top_k, KP=triton.next_power_of_2(top_k), NORM=normalize)
    return weights, ids
