"""MoE prefill as two grouped GEMMs over tokens sorted by expert, with no host synchronisation.

A ~1k-token prefill routes every token to 8 of 128 experts: every expert is hit, so the floor is
reading all expert weights once (59 GB over 48 layers, ~14 ms on an H200). Sorting the
(token, expert) pairs by expert makes each expert's rows contiguous; one grouped GEMM
(``torch.nn.functional.grouped_mm`` / ``torch._grouped_mm``, CUTLASS on Hopper) then runs every
expert's matmul in one launch, with the group ends as a device tensor, so nothing waits for the
GPU to count tokens per expert (transformers' eager expert loop does, once per expert).

The maths is transformers' ``grouped_mm`` experts path op for op (router softmax in float32,
top-k renormalised, sums in the same order), so the fast prefill stays bit-identical to the
plain forward where that path runs. Without a grouped-GEMM kernel (CPU before torch 2.9, old
GPUs), ``_grouped_mm_reference`` runs the same sorted layout as one matmul per expert.
"""

from __future__ import annotations

from typing import Any

__all__ = ["grouped_gemm_available", "moe_prefill"]


def _kernel() -> Any:
    import torch

    fn = getattr(torch.nn.functional, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)
    return fn


def grouped_gemm_available(device: Any) -> bool:
    """True when a grouped-GEMM kernel runs on ``device`` (CUDA sm80+ with torch >= 2.9, or sm90)."""
    import torch

    if _kernel() is None or getattr(device, "type", str(device)) != "cuda":
        return False
    major, minor = torch.cuda.get_device_capability(device)
    return (major, minor) >= (8, 0) if torch.__version__ >= (2, 9) else major == 9


def _grouped_mm_reference(x: Any, w: Any, offs: Any) -> Any:
    """x [S, K] sorted by group, w [G, K, N], offs [G] group ends: one matmul per group (host sync)."""
    import torch

    out = torch.empty((x.shape[0], w.shape[-1]), dtype=x.dtype, device=x.device)
    start = 0
    for g, end in enumerate(offs.tolist()):
        if end > start:
            out[start:end] = x[start:end] @ w[g]
        start = end
    return out


def moe_prefill(h: Any, router: Any, gate_up: Any, down: Any, *, top_k: int, norm_topk: bool, grouped: bool) -> Any:
    """The sparse MoE block of ``n`` tokens: h [n, H]; router [E, H]; gate_up [E, 2I, H];
    down [E, H, I]. Returns [n, H]. ``grouped``: use the grouped-GEMM kernel (else the reference)."""
    import torch
    import torch.nn.functional as F

    n, hidden = h.shape
    experts = router.shape[0]
    probs = torch.softmax(F.linear(h, router), dim=-1, dtype=torch.float)
    top_w, top_i = torch.topk(probs, top_k, dim=-1)
    if norm_topk:
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
    top_w = top_w.to(h.dtype)
    expert_ids, perm = torch.sort(top_i.reshape(-1))
    x = h[perm // top_k]
    counts_in = expert_ids.int() if h.device.type == "cuda" else expert_ids.float()
    counts = torch.histc(counts_in, bins=experts, min=0, max=experts - 1)
    offs = torch.cumsum(counts, dim=0, dtype=torch.int32)
    mm = _kernel() if grouped and (h.device.type != "cuda" or h.dtype == torch.bfloat16) else _grouped_mm_reference
    gu = mm(x, gate_up.transpose(-2, -1), offs=offs)
    gate, up = gu.chunk(2, dim=-1)
    y = mm(F.silu(gate) * up, down.transpose(-2, -1), offs=offs)
    y = y * top_w.reshape(-1)[perm].unsqueeze(-1)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=h.device)
    return y[inv].view(n, top_k, hidden).sum(dim=1).to(h.dtype)
