"""Decode attention for a BATCH of sequences, each in its own row of a row-static KV cache.

The cache of one layer is [R + 1, Hkv, L, D]: R rows (one per running request or kept session)
plus a scratch row that padding entries of a batch bucket point at. Entry b of a decode step
reads row ``rows[b]`` over slots 0..``last[b]``: both are device tensors, so one captured CUDA
graph serves every mix of rows and lengths up to its length bucket.

``batched_decode_attention`` is flash-decoding (``attention_kernels.py``) with a batch axis: one
program per (entry, KV head, chunk of slots) keeps the grouped query heads as the rows of one
tile (K/V read once per KV head), runs an online softmax in float32 and skips chunks past its
entry's last slot, so a short request next to a long one reads only its own slots; a small
kernel then merges the chunks. ``batched_decode_attention_reference`` is the same maths in
torch (CPU, tests, and devices without Triton).
"""

from __future__ import annotations

from typing import Any

__all__ = ["batched_decode_attention", "batched_decode_attention_reference", "write_kv"]

_KERNELS: Any = None


def write_kv(cache: Any, new: Any, flat_index: Any) -> None:
    """Write one decoded token's K (or V) per entry: cache [R+1, Hkv, L, D] (contiguous), new
    [B, Hkv, 1, D], flat_index [B * Hkv] = (row * Hkv + head) * L + slot (graph-safe, in place)."""
    d = cache.shape[-1]
    cache.view(-1, d).index_copy_(0, flat_index, new.reshape(-1, d))


def batched_decode_attention_reference(q: Any, k_cache: Any, v_cache: Any, rows: Any, last: Any, length: int, scale: float) -> Any:
    """q [B, Hq, D]; caches [R+1, Hkv, L, D]; rows, last [B] (device, long); reads slots < ``length``.
    Returns [B, Hq, D]. Softmax in float32, as sdpa does."""
    import torch

    b, hq, d = q.shape
    hkv = k_cache.shape[1]
    k = k_cache.index_select(0, rows)[:, :, :length]  # [B, Hkv, Lb, D]
    v = v_cache.index_select(0, rows)[:, :, :length]
    qg = q.reshape(b, hkv, hq // hkv, d)
    scores = torch.matmul(qg, k.transpose(-1, -2)).float() * scale  # [B, Hkv, G, Lb]
    valid = torch.arange(k.shape[2], device=q.device).view(1, -1) <= last.view(-1, 1)  # [B, Lb]
    scores = scores.masked_fill(~valid.view(b, 1, 1, -1), float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v).reshape(b, hq, d)


def _kernels() -> Any:
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    import triton
    import triton.language as tl

    @triton.jit
    def split_kernel(
        q_ptr, k_ptr, v_ptr, rows_ptr, last_ptr, acc_ptr, m_ptr, l_ptr,
        stride_qb, stride_kr, stride_kh, stride_kn, stride_vr, stride_vh, stride_vn, scale,
        HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, CHUNK: tl.constexpr,
        BLOCK_N: tl.constexpr, SPLITS: tl.constexpr, IEEE: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(0)
        h = tl.program_id(1)
        s = tl.program_id(2)
        row = tl.load(rows_ptr + b).to(tl.int64)
        last = tl.load(last_ptr + b)  # slots 0..last of this row are valid
        offs_g = tl.arange(0, GP)
        offs_d = tl.arange(0, D)
        q = tl.load(q_ptr + b * stride_qb + (h * G + offs_g[:, None]) * D + offs_d[None, :], mask=offs_g[:, None] < G, other=0.0)
        m_i = tl.full([GP], float("-inf"), tl.float32)
        l_i = tl.zeros([GP], tl.float32)
        acc = tl.zeros([GP, D], tl.float32)
        k_base = k_ptr + row * stride_kr + h * stride_kh
        v_base = v_ptr + row * stride_vr + h * stride_vh
        start = s * CHUNK
        for n0 in range(0, CHUNK, BLOCK_N):
            if start + n0 <= last:
                offs_n = start + n0 + tl.arange(0, BLOCK_N)
                valid = offs_n <= last
                k = tl.load(k_base + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :], mask=valid[:, None], other=0.0)
                if IEEE:  # float32 caches: no TF32 rounding
                    qk = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
                else:
                    qk = tl.dot(q, tl.trans(k)) * scale
                qk = tl.where(valid[None, :], qk, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(qk, 1))
                alpha = tl.exp(m_i - m_new)
                p = tl.exp(qk - m_new[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(v_base + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :], mask=valid[:, None], other=0.0)
                if IEEE:
                    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
                else:
                    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
                m_i = m_new
        out_row = ((b * HKV + h) * SPLITS + s) * G + offs_g
        tl.store(m_ptr + out_row, m_i, mask=offs_g < G)
        tl.store(l_ptr + out_row, l_i, mask=offs_g < G)
        tl.store(acc_ptr + out_row[:, None] * D + offs_d[None, :], acc, mask=offs_g[:, None] < G)

    @triton.jit
    def reduce_kernel(acc_ptr, m_ptr, l_ptr, out_ptr, HKV: tl.constexpr, G: tl.constexpr, D: tl.constexpr,
                      SPLITS: tl.constexpr, SP: tl.constexpr):  # fmt: skip
        b = tl.program_id(0)
        h = tl.program_id(1)
        g = tl.program_id(2)
        offs_s = tl.arange(0, SP)
        offs_d = tl.arange(0, D)
        live = offs_s < SPLITS
        rows = ((b * HKV + h) * SPLITS + offs_s) * G + g
        m = tl.load(m_ptr + rows, mask=live, other=float("-inf"))
        l = tl.load(l_ptr + rows, mask=live, other=0.0)
        m_max = tl.max(m, 0)
        w = tl.where(m > float("-inf"), tl.exp(m - m_max), 0.0)
        acc = tl.load(acc_ptr + rows[:, None] * D + offs_d[None, :], mask=live[:, None], other=0.0)
        out = tl.sum(acc * w[:, None], 0) / tl.sum(w * l, 0)
        tl.store(out_ptr + ((b * HKV + h) * G + g) * D + offs_d, out.to(out_ptr.dtype.element_ty))

    _KERNELS = (split_kernel, reduce_kernel)
    return _KERNELS


def batched_decode_attention(
    q: Any, k_cache: Any, v_cache: Any, rows: Any, last: Any, length: int, scale: float, *,
    chunk: int = 256, block_n: int = 64, num_warps: int = 4,
) -> Any:  # fmt: skip
    """The Triton version of ``batched_decode_attention_reference`` (CUDA; head dim a power of
    two >= 16). ``length`` (the bucket, static) sizes the grid; chunks past an entry's last slot
    exit at once. Returns [B, Hq, D] in q's dtype."""
    import torch
    import triton

    b, hq, d = q.shape
    hkv = k_cache.shape[1]
    group = hq // hkv
    splits = triton.cdiv(length, chunk)
    qc = q.contiguous()
    acc = torch.empty((b, hkv, splits, group, d), dtype=torch.float32, device=q.device)
    m = torch.empty((b, hkv, splits, group), dtype=torch.float32, device=q.device)
    l_sum = torch.empty_like(m)
    out = torch.empty((b, hkv, group, d), dtype=q.dtype, device=q.device)
    split_kernel, reduce_kernel = _kernels()
    split_kernel[(b, hkv, splits)](
        qc, k_cache, v_cache, rows, last, acc, m, l_sum,
        qc.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), scale,
        HKV=hkv, G=group, GP=max(16, triton.next_power_of_2(group)), D=d, CHUNK=chunk, BLOCK_N=block_n,
        SPLITS=splits, IEEE=q.dtype == torch.float32, num_warps=num_warps,
    )  # fmt: skip
    reduce_kernel[(b, hkv, group)](acc, m, l_sum, out, HKV=hkv, G=group, D=d, SPLITS=splits, SP=triton.next_power_of_2(splits))
    return out.reshape(b, hq, d)
