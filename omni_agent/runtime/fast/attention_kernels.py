"""Decode attention over the static KV cache as one split-K Triton kernel (flash-decoding) + a
small reduction, reading only the valid slots.

Why: the matmul form (``layers.attention_decode``) reads the whole bucket (12,288 slots at an
11.6k-token context), writes float32 scores, and runs ~5 kernels per layer; measured, decode
time grew ~1 ms from 2.7k to 11.6k tokens of context, ~5x what the extra KV bytes cost. Here
each program takes one KV head and one chunk of slots, keeps the 8 grouped query heads as the
rows of one tile (K/V read once per KV head), runs an online softmax in float32 and skips
chunks past the current slot; the valid length is read from the device (CUDA-graph safe).

With ``k_new`` / ``v_new`` (the decoded token's K/V rows) the kernel also writes them to the
cache slot, in place of two ``index_copy_`` launches per layer: the program whose chunk holds
the slot stores them and uses the rows from registers for that slot (no read-after-write inside
the launch; no other program reads that slot).
"""

from __future__ import annotations

from typing import Any

__all__ = ["decode_attention", "decode_attention_supported"]


def decode_attention_supported(head_dim: int) -> bool:
    """The kernel's tiles need a power-of-two head dim of at least 16 (Qwen3-Omni: 128)."""
    return head_dim >= 16 and head_dim & (head_dim - 1) == 0

_KERNELS: Any = None


def _kernels() -> Any:
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    import triton
    import triton.language as tl

    @triton.jit
    def split_kernel(
        q_ptr, k_ptr, v_ptr, slot_ptr, acc_ptr, m_ptr, l_ptr, kn_ptr, vn_ptr,
        stride_qh, stride_kh, stride_kn, stride_vh, stride_vn, scale,
        G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS: tl.constexpr,
        IEEE: tl.constexpr, WRITE: tl.constexpr,
    ):  # fmt: skip
        h = tl.program_id(0)
        s = tl.program_id(1)
        last = tl.load(slot_ptr)  # slots 0..last are valid
        offs_g = tl.arange(0, GP)
        offs_d = tl.arange(0, D)
        q = tl.load(q_ptr + h * stride_qh + offs_g[:, None] * D + offs_d[None, :], mask=offs_g[:, None] < G, other=0.0)
        m_i = tl.full([GP], float("-inf"), tl.float32)
        l_i = tl.zeros([GP], tl.float32)
        acc = tl.zeros([GP, D], tl.float32)
        start = s * CHUNK
        if WRITE:  # this token's K/V rows: stored by the chunk that holds the slot, used from registers
            if (last >= start) & (last < start + CHUNK):
                tl.store(k_ptr + h * stride_kh + last.to(tl.int64) * stride_kn + offs_d, tl.load(kn_ptr + h * D + offs_d))
                tl.store(v_ptr + h * stride_vh + last.to(tl.int64) * stride_vn + offs_d, tl.load(vn_ptr + h * D + offs_d))
        for n0 in range(0, CHUNK, BLOCK_N):
            if start + n0 <= last:
                offs_n = start + n0 + tl.arange(0, BLOCK_N)
                valid = offs_n <= last
                k = tl.load(k_ptr + h * stride_kh + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :], mask=valid[:, None], other=0.0)
                if WRITE:  # only the tile that holds the slot swaps in the new row (read from kn, not the cache)
                    if (last >= start + n0) & (last < start + n0 + BLOCK_N):
                        k = tl.where((offs_n == last)[:, None], tl.load(kn_ptr + h * D + offs_d)[None, :].to(k.dtype), k)
                if IEEE:  # float32 caches: no TF32 rounding (the tiny test model)
                    qk = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
                else:
                    qk = tl.dot(q, tl.trans(k)) * scale
                qk = tl.where(valid[None, :], qk, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(qk, 1))
                alpha = tl.exp(m_i - m_new)
                p = tl.exp(qk - m_new[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(v_ptr + h * stride_vh + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :], mask=valid[:, None], other=0.0)
                if WRITE:
                    if (last >= start + n0) & (last < start + n0 + BLOCK_N):
                        v = tl.where((offs_n == last)[:, None], tl.load(vn_ptr + h * D + offs_d)[None, :].to(v.dtype), v)
                if IEEE:
                    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
                else:
                    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
                m_i = m_new
        row = (h * SPLITS + s) * G + offs_g
        tl.store(m_ptr + row, m_i, mask=offs_g < G)
        tl.store(l_ptr + row, l_i, mask=offs_g < G)
        tl.store(acc_ptr + row[:, None] * D + offs_d[None, :], acc, mask=offs_g[:, None] < G)

    @triton.jit
    def reduce_kernel(acc_ptr, m_ptr, l_ptr, out_ptr, G: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr, SP: tl.constexpr):
        h = tl.program_id(0)
        g = tl.program_id(1)
        offs_s = tl.arange(0, SP)
        offs_d = tl.arange(0, D)
        live = offs_s < SPLITS
        rows = (h * SPLITS + offs_s) * G + g
        m = tl.load(m_ptr + rows, mask=live, other=float("-inf"))
        l = tl.load(l_ptr + rows, mask=live, other=0.0)
        m_max = tl.max(m, 0)
        w = tl.where(m > float("-inf"), tl.exp(m - m_max), 0.0)
        acc = tl.load(acc_ptr + rows[:, None] * D + offs_d[None, :], mask=live[:, None], other=0.0)
        out = tl.sum(acc * w[:, None], 0) / tl.sum(w * l, 0)
        tl.store(out_ptr + (h * G + g) * D + offs_d, out.to(out_ptr.dtype.element_ty))

    _KERNELS = (split_kernel, reduce_kernel)
    return _KERNELS


TUNING = {"chunk": 128, "block_n": 128, "num_warps": 8}
"""Defaults of ``decode_attention``'s tiles, from the sweep in ``gpu_step_extras`` (H200, 48
layers, 12,288-slot bucket, run of 2026-12-03 20:25 UTC): 0.58 ms/token at 11.6k context and
0.45 at 2.7k, vs 0.82 / 0.69 for the first choice (chunk 256, 64-slot tiles, 4 warps): more
programs in flight (96 chunks x 4 KV heads) and one 128-slot tile per chunk."""


def decode_attention(
    q: Any,
    k_cache: Any,
    v_cache: Any,
    slot: Any,
    length: int,
    scale: float,
    *,
    chunk: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    k_new: Any = None,
    v_new: Any = None,
) -> Any:
    """One query per head over cache slots 0..slot (``slot`` a device tensor [1]; ``length`` the
    bucket, a static bound). q [1, Hq, 1, D]; caches [1, Hkv, L, D] (last dim contiguous).
    With ``k_new`` / ``v_new`` ([1, Hkv, 1, D]) they are written to the cache at ``slot`` by the
    same launch. Returns [1, Hq, 1, D] in q's dtype."""
    import torch
    import triton

    chunk = chunk or TUNING["chunk"]
    block_n = min(block_n or TUNING["block_n"], chunk)
    num_warps = num_warps or TUNING["num_warps"]
    _, hq, _, d = q.shape
    hkv = k_cache.shape[1]
    group = hq // hkv
    write = k_new is not None and v_new is not None
    kn = k_new.reshape(hkv, d).contiguous() if write else q
    vn = v_new.reshape(hkv, d).contiguous() if write else q
    splits = triton.cdiv(length, chunk)
    qg = q.reshape(hkv, group, d).contiguous()
    acc = torch.empty((hkv, splits, group, d), dtype=torch.float32, device=q.device)
    m = torch.empty((hkv, splits, group), dtype=torch.float32, device=q.device)
    l_sum = torch.empty_like(m)
    out = torch.empty((hkv, group, d), dtype=q.dtype, device=q.device)
    split_kernel, reduce_kernel = _kernels()
    kc, vc = k_cache[0], v_cache[0]
    split_kernel[(hkv, splits)](
        qg, kc, vc, slot, acc, m, l_sum, kn, vn,
        qg.stride(0), kc.stride(0), kc.stride(1), vc.stride(0), vc.stride(1), scale,
        G=group, GP=max(16, triton.next_power_of_2(group)), D=d, CHUNK=chunk, BLOCK_N=block_n, SPLITS=splits,
        IEEE=q.dtype == torch.float32, WRITE=write, num_warps=num_warps,
    )  # fmt: skip
    reduce_kernel[(hkv, group)](acc, m, l_sum, out, G=group, D=d, SPLITS=splits, SP=triton.next_power_of_2(splits))
    return out.reshape(1, hq, 1, d)
