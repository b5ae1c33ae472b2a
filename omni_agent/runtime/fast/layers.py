"""The Qwen3 text decoder layer as plain functions of tensors (the Thinker's and the Talker's).

Why not call the transformers modules: ``torch.compile`` guards on module identity, so the 48
layer modules would compile 48 times; with the weights passed as arguments one compiled
function serves every layer. The maths is the module code's, line for line (RMSNorm in float32,
q/k norms, M-RoPE through the model's own rotary module, softmax router in float32, top-k
renormalised): the tests compare logits with the plain path.

Attention reads a static KV cache. Decode (one query) folds the query heads of each KV group
into the query-length axis, so grouped K/V are never repeated over the whole cache (the plain
path repeats 4 KV heads to 32 on every step).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["LayerWeights", "TextStack", "attention_at_slots", "attention_decode", "attention_prefill", "rms_norm"]


def rms_norm(x: Any, weight: Any, eps: float) -> Any:
    """transformers' Qwen3 RMSNorm: statistics in float32, weight applied in the input dtype."""
    import torch

    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


@dataclass
class LayerWeights:
    """The tensors of one decoder layer (views of the model's parameters, no copies)."""

    ln1: Any
    ln2: Any
    q: Any
    k: Any
    v: Any
    o: Any
    q_norm: Any
    k_norm: Any
    router: Any | None  # MoE layers: router weight [E, H], experts [E, 2I, H] / [E, H, I]
    gate_up: Any | None
    down: Any | None
    shared: tuple[Any, Any, Any, Any] | None  # Talker: shared expert (gate, up, down) + its gate
    dense: tuple[Any, Any, Any] | None  # dense MLP layers: (gate, up, down)
    module: Any  # the transformers layer (prefill runs its MLP module: grouped experts)
    qkv: Any | None = None  # q, k, v stacked (``TextStack.fuse_qkv``): one GEMV per decoded token


def _layer_weights(layer: Any) -> LayerWeights:
    attn = layer.self_attn
    mlp = layer.mlp
    router = gate_up = down = shared = dense = None
    if hasattr(mlp, "experts"):
        router = mlp.gate.weight
        gate_up = mlp.experts.gate_up_proj
        down = mlp.experts.down_proj
        if getattr(mlp, "shared_expert", None) is not None:
            se = mlp.shared_expert
            shared = (se.gate_proj.weight, se.up_proj.weight, se.down_proj.weight, mlp.shared_expert_gate.weight)
    else:
        dense = (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    return LayerWeights(
        ln1=layer.input_layernorm.weight,
        ln2=layer.post_attention_layernorm.weight,
        q=attn.q_proj.weight,
        k=attn.k_proj.weight,
        v=attn.v_proj.weight,
        o=attn.o_proj.weight,
        q_norm=attn.q_norm.weight,
        k_norm=attn.k_norm.weight,
        router=router,
        gate_up=gate_up,
        down=down,
        shared=shared,
        dense=dense,
        module=layer,
    )


def attention_decode(q: Any, k_cache: Any, v_cache: Any, valid: Any, scale: float) -> Any:
    """One query per head over a static cache. q [1, Hq, 1, D]; caches [1, Hkv, L, D]; valid [L] bool.

    The Hq/Hkv query heads of a group become the rows of one [G, D] x [D, L] product per KV
    head: K/V are read once (no repeat to Hq heads) and the work spreads over L. (A fused
    attention kernel would see only Hkv=4 "heads" of 8 queries and walk L serially: measured
    11 ms/token slower at 16k slots than at 4k on an H200.) Softmax in float32, as sdpa does.
    """
    import torch

    _, hq, _, d = q.shape
    hkv = k_cache.shape[1]
    qg = q.reshape(hkv, hq // hkv, d)
    scores = torch.matmul(qg, k_cache[0].transpose(-1, -2)).float() * scale  # [Hkv, G, L]
    scores = scores.masked_fill(~valid, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v_cache.dtype)
    return torch.matmul(probs, v_cache[0]).reshape(1, hq, 1, d)


def flash_attention() -> Callable[..., Any] | None:
    """``flash_attn_func`` when flash-attn is installed (the optional ``gpu`` extra), else None."""
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def attention_prefill(q: Any, k_cache: Any, v_cache: Any, start: int, scale: float) -> Any:
    """``n`` new queries at cache slots [start, start+n) over slots [0, start+n), causal.

    Grouped K/V are read as they are (flash-attn, or sdpa with ``enable_gqa``): repeating 4 KV
    heads to 32 over an 11.6k-token cache wrote and re-read ~190 MB per layer per step.
    """
    import torch
    import torch.nn.functional as F

    _, hq, n, d = q.shape
    hkv = k_cache.shape[1]
    total = start + n
    k = k_cache[:, :, :total]
    v = v_cache[:, :, :total]
    gqa = hq != hkv
    if q.device.type == "cuda":
        flash = flash_attention() if q.dtype in (torch.float16, torch.bfloat16) else None
        if flash is not None:  # causal is bottom-right aligned when n < total (flash-attn >= 2.1)
            out = flash(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=True)
            return out.transpose(1, 2)
        if start == 0:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        # New queries sit at the END of the keys: lower-right causal, run by the flash /
        # memory-efficient kernels without a mask tensor. (A boolean mask let sdpa pick cuDNN,
        # which built a plan per new length: 0.7-1.1 s per step measured on an H200.)
        from torch.nn.attention.bias import causal_lower_right

        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(n, total), scale=scale, enable_gqa=gqa)
    if start == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    rows = torch.arange(n, device=q.device).view(-1, 1) + start
    cols = torch.arange(total, device=q.device).view(1, -1)
    mask = (cols <= rows).view(1, 1, n, total)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def attention_at_slots(q: Any, k_cache: Any, v_cache: Any, slots: Any, scale: float, total: int | None = None) -> Any:
    """A few queries at scattered cache slots, each over every slot up to its own (in-place
    eviction's placeholders). q [1, Hq, n, D]; slots [n] (device, ascending). Grouped like
    ``attention_decode`` (K/V read once per KV head); the scores are [Hkv, G*n, L]: meant for
    tens of queries, not a prefill. ``total`` (last slot + 1, known on the host) avoids reading
    it from the device: that read waited for the GPU once per layer, and the eager prefill's
    launches then no longer ran ahead of the GPU (measured: eviction-step forwards 145-162 ms
    vs ~95-110 without placeholders)."""
    import torch

    _, hq, n, d = q.shape
    hkv = k_cache.shape[1]
    group = hq // hkv
    if total is None:
        total = int(slots[-1]) + 1
    qg = q[0].reshape(hkv, group * n, d)
    scores = torch.matmul(qg, k_cache[0, :, :total].transpose(-1, -2)).float() * scale  # [Hkv, G*n, L]
    allowed = torch.arange(total, device=q.device).view(1, -1) <= slots.view(-1, 1)  # [n, L]
    scores = scores.view(hkv, group, n, total).masked_fill(~allowed, float("-inf")).view(hkv, group * n, total)
    probs = torch.softmax(scores, dim=-1).to(v_cache.dtype)
    return torch.matmul(probs, v_cache[0, :, :total]).reshape(1, hq, n, d)


def _add_deepstack(x: Any, visual: Any, features: Any) -> Any:
    """x[0, visual] += features (the model's own sum); ``visual`` a bool mask or an index tensor
    (no host sync: a boolean index waits for the GPU to count its True values)."""
    import torch

    if visual.dtype == torch.bool:
        x = x.clone()
        x[0, visual] = x[0, visual] + features.to(x.dtype)
        return x
    summed = x[0].index_select(0, visual) + features.to(x.dtype)
    return x.index_copy(1, visual, summed.unsqueeze(0))


def _with_fallback(compiled: Callable[..., Any], eager: Callable[..., Any]) -> Callable[..., Any]:
    """``compiled`` until it raises, then ``eager`` for good (a backend that cannot compile a
    function must not stop the model; a real error raises again from the eager call)."""
    current = [compiled]

    def call(*args: Any) -> Any:
        try:
            return current[0](*args)
        except Exception:  # noqa: BLE001 - torch.compile raises many types; the eager retry re-raises real errors
            if current[0] is eager:
                raise
            current[0] = eager
            import warnings

            warnings.warn(f"torch.compile failed for {getattr(eager, '__name__', eager)}; running it eagerly", stacklevel=2)
            return eager(*args)

    return call


class TextStack:
    """A Qwen3(-MoE) text decoder (Thinker or Talker) run from its weights over a static KV cache.

    ``text_model`` is the transformers text model (``embed_tokens``, ``layers``, ``norm``,
    ``rotary_emb``); ``lm_head`` its output projection (``None`` to return hidden states).
    """

    def __init__(self, text_model: Any, lm_head: Any | None) -> None:
        cfg = text_model.config
        self.model = text_model
        self.lm_head = lm_head
        self.config = cfg
        self.layers = [_layer_weights(layer) for layer in text_model.layers]
        self.num_heads = int(cfg.num_attention_heads)
        self.num_kv_heads = int(cfg.num_key_value_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self.eps = float(cfg.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        self.top_k = int(getattr(cfg, "num_experts_per_tok", 0) or 0)
        self.norm_topk = bool(getattr(cfg, "norm_topk_prob", True))
        module = sys.modules[type(text_model.layers[0].self_attn).__module__]
        self._rotary: Callable[..., Any] = module.apply_rotary_pos_emb
        act = str(getattr(cfg, "hidden_act", "silu"))
        if act != "silu":
            raise NotImplementedError(f"fast path: activation {act!r} is not supported (only silu)")
        self.use_triton = False  # set by the owner on CUDA (moe_kernels.triton_available)
        self.prefill_experts: str | None = None
        """MoE prefill: None (the transformers module), "grouped" (moe_prefill's grouped GEMM) or
        "reference" (moe_prefill's layout, one matmul per expert). Set by the owner."""
        # Replaced by compiled versions on CUDA (see ``compile_decode``).
        self.pre_attention: Callable[..., Any] = self._pre_attention
        self.pre_attention_fused: Callable[..., Any] = self._pre_attention_fused
        self.prefill_pre_attention: Callable[..., Any] = self._pre_attention  # see ``compile_prefill``
        self.prefill_post_attention: Callable[..., Any] = self._post_attention
        self.attend_route: Callable[..., Any] = self._attend_route
        self.route: Callable[..., Any] = self._route
        self.route_logits: Callable[..., Any] = self._route_logits
        self.triton_attention = False  # set by the owner on CUDA (attention_kernels.decode_attention)
        self.triton_router = False  # with triton_attention: moe_kernels.router_topk for the top-k
        self.fuse_kv_write = False  # with triton_attention: the attention kernel writes the K/V rows
        self.expert_act: Callable[..., Any] = self._expert_act
        self.combine: Callable[..., Any] = self._combine

    # -- the layer maths ---------------------------------------------------------------------
    def _pre_attention(self, x: Any, ln1: Any, wq: Any, wk: Any, wv: Any, qn: Any, kn: Any, cos: Any, sin: Any):
        import torch.nn.functional as F

        b, n, _ = x.shape
        h = rms_norm(x, ln1, self.eps)
        q = rms_norm(F.linear(h, wq).view(b, n, -1, self.head_dim), qn, self.eps).transpose(1, 2)
        k = rms_norm(F.linear(h, wk).view(b, n, -1, self.head_dim), kn, self.eps).transpose(1, 2)
        v = F.linear(h, wv).view(b, n, -1, self.head_dim).transpose(1, 2)
        q, k = self._rotary(q, k, cos, sin)
        return q, k, v

    def _pre_attention_fused(self, x: Any, ln1: Any, wqkv: Any, qn: Any, kn: Any, cos: Any, sin: Any):
        """``_pre_attention`` with q, k, v as one matrix-vector product (decode)."""
        import torch.nn.functional as F

        b, n, _ = x.shape
        h = rms_norm(x, ln1, self.eps)
        d = self.head_dim
        q, k, v = F.linear(h, wqkv).split((self.num_heads * d, self.num_kv_heads * d, self.num_kv_heads * d), dim=-1)
        q = rms_norm(q.view(b, n, -1, d), qn, self.eps).transpose(1, 2)
        k = rms_norm(k.view(b, n, -1, d), kn, self.eps).transpose(1, 2)
        v = v.view(b, n, -1, d).transpose(1, 2)
        q, k = self._rotary(q, k, cos, sin)
        return q, k, v

    def fuse_qkv(self) -> None:
        """Stack each layer's q/k/v weights into one tensor and make the module's parameters views
        of it (no extra memory; same values, so every other user of the model is unaffected):
        decode then reads them with one kernel instead of three."""
        import torch

        for w in self.layers:
            if w.qkv is not None:
                continue
            fused = torch.cat([w.q.data, w.k.data, w.v.data], dim=0)
            nq, nk = w.q.shape[0], w.k.shape[0]
            w.q.data = fused[:nq]
            w.k.data = fused[nq : nq + nk]
            w.v.data = fused[nq + nk :]
            w.qkv = fused

    def _attend_route(self, q: Any, kc: Any, vc: Any, valid: Any, x: Any, wo: Any, ln2: Any, router: Any):
        """Attention of ONE token + o_proj + residual + norm + MoE router (top-k, renormalised)."""
        return self._route(attention_decode(q, kc, vc, valid, self.scale), x, wo, ln2, router)

    def _route_logits(self, a: Any, x: Any, wo: Any, ln2: Any, router: Any):
        """o_proj of one token's attention output + residual + norm + router logits [E] (the top-k
        runs in ``moe_kernels.router_topk``)."""
        import torch.nn.functional as F

        a = a.transpose(1, 2).reshape(1, 1, -1)
        x = x + F.linear(a, wo)
        h = rms_norm(x, ln2, self.eps).view(1, -1)
        return x, h, F.linear(h, router).view(-1)

    def _route(self, a: Any, x: Any, wo: Any, ln2: Any, router: Any):
        """o_proj of one token's attention output a [1, Hq, 1, D] + residual + norm + MoE router."""
        import torch
        import torch.nn.functional as F

        a = a.transpose(1, 2).reshape(1, 1, -1)
        x = x + F.linear(a, wo)
        h = rms_norm(x, ln2, self.eps).view(1, -1)  # [1, H]
        probs = torch.softmax(F.linear(h, router).float(), dim=-1)
        top_w, top_i = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk:
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return x, h, top_w.to(h.dtype).view(-1), top_i.view(-1)

    @staticmethod
    def _expert_act(gu: Any) -> Any:
        import torch.nn.functional as F

        g, u = gu.chunk(2, dim=-1)
        return F.silu(g) * u

    @staticmethod
    def _combine(x: Any, out: Any, top_w: Any) -> Any:
        return x + (out * top_w.unsqueeze(-1)).sum(dim=0).view_as(x)

    def _moe_decode(self, w: LayerWeights, x: Any, h: Any, top_w: Any, top_i: Any) -> Any:
        """The chosen experts for ONE token, read in place by index (graph-safe, see moe_kernels);
        plus the Talker's gated shared expert."""
        import torch
        import torch.nn.functional as F

        from .moe_kernels import expert_gemv

        gu = expert_gemv(w.gate_up, h, top_i, use_triton=self.use_triton)  # [k, 2I]
        out = expert_gemv(w.down, self.expert_act(gu), top_i, use_triton=self.use_triton)  # [k, H]
        if w.shared is not None:
            g, u, d, gate = w.shared
            shared = torch.sigmoid(F.linear(h, gate)) * F.linear(F.silu(F.linear(h, g)) * F.linear(h, u), d)
            out = torch.cat((out * top_w.unsqueeze(-1), shared), dim=0)
            return x + out.sum(dim=0).view_as(x)
        return self.combine(x, out, top_w)

    def _post_attention(self, x: Any, a: Any, wo: Any, ln2: Any) -> tuple[Any, Any]:
        """o_proj + residual, and the MLP's input norm: (residual stream, normed input)."""
        import torch.nn.functional as F

        x = x + F.linear(a, wo)
        return x, rms_norm(x, ln2, self.eps)

    def _mlp(self, w: LayerWeights, x: Any, *, decode: bool) -> Any:
        """Residual MLP block; decode of MoE without a shared expert uses the graph-safe function."""
        return self._mlp_from(w, x, rms_norm(x, w.ln2, self.eps))

    def _mlp_from(self, w: LayerWeights, x: Any, h: Any) -> Any:
        """Residual MLP block given its normed input ``h``."""
        import torch.nn.functional as F

        if w.dense is not None:
            g, u, d = w.dense
            return x + F.linear(F.silu(F.linear(h, g)) * F.linear(h, u), d)
        if self.prefill_experts is not None and w.shared is None and w.router is not None:
            from .moe_prefill import moe_prefill

            flat = h.view(-1, h.shape[-1])
            out = moe_prefill(
                flat, w.router, w.gate_up, w.down, top_k=self.top_k, norm_topk=self.norm_topk, grouped=self.prefill_experts == "grouped"
            )
            return x + out.view_as(h)
        return x + w.module.mlp(h)

    # -- forward over the cache ---------------------------------------------------------------
    def rope(self, x: Any, position_ids: Any) -> tuple[Any, Any]:
        """cos/sin from the model's own (M-)RoPE module; position_ids [3, 1, n] (or [1, n])."""
        return self.model.rotary_emb(x, position_ids)

    def forward(
        self,
        embeds: Any,
        position_ids: Any,
        cache: Any,
        start: int,
        *,
        visual_mask: Any | None = None,
        deepstack: list[Any] | None = None,
        last_only: bool = True,
        return_hidden: bool = False,
        head_slots: Any | None = None,
        head_end: int | None = None,
    ) -> Any:
        """Prefill ``n`` tokens at cache slots [start, start+n). With ``head_slots`` (a device
        tensor [r]), the first r tokens go to those scattered slots instead, each attending to
        every slot up to its own (in-place eviction's placeholders), and the other n - r to
        [start, start+n-r); ``head_end`` (the last head slot + 1, from the host) spares a device
        read per layer. Returns logits (with ``return_hidden``: (final-normed hidden states,
        logits or None))."""
        import torch

        x = embeds
        r = 0 if head_slots is None else head_slots.shape[0]
        n = x.shape[1] - r
        cos, sin = self.rope(x, position_ids)
        for i, w in enumerate(self.layers):
            q, k, v = self.prefill_pre_attention(x, w.ln1, w.q, w.k, w.v, w.q_norm, w.k_norm, cos, sin)
            kc, vc = cache.layer(i)
            if r:
                kc.index_copy_(2, head_slots, k[:, :, :r])
                vc.index_copy_(2, head_slots, v[:, :, :r])
            kc[:, :, start : start + n] = k[:, :, r:]
            vc[:, :, start : start + n] = v[:, :, r:]
            a = attention_prefill(q[:, :, r:] if r else q, kc, vc, start, self.scale)
            if r:
                a = torch.cat([attention_at_slots(q[:, :, :r], kc, vc, head_slots, self.scale, head_end), a], dim=2)
            a = a.transpose(1, 2).reshape(1, n + r, -1)
            x, h = self.prefill_post_attention(x, a, w.o, w.ln2)
            x = self._mlp_from(w, x, h)
            if deepstack is not None and i < len(deepstack) and visual_mask is not None:
                x = _add_deepstack(x, visual_mask, deepstack[i])
        return self.head(x[:, -1:] if last_only else x, return_hidden=return_hidden)

    def head(self, x: Any, *, return_hidden: bool = False) -> Any:
        x = rms_norm(x, self.model.norm.weight, float(getattr(self.model.norm, "variance_epsilon", self.eps)))
        logits = None if self.lm_head is None else self.lm_head(x)
        if return_hidden:
            return x, logits
        return x if logits is None else logits

    def decode_step(
        self, token_embed: Any, position_ids: Any, cache: Any, slot: Any, valid: Any, length: int, *, return_hidden: bool = False
    ) -> Any:
        """One token: embeds [1, 1, H] at cache slot ``slot`` (device tensor [1]); attention over
        the first ``length`` slots where ``valid`` [length] is True. Graph-capturable."""
        import torch.nn.functional as F

        x = token_embed
        cos, sin = self.rope(x, position_ids)
        for i, w in enumerate(self.layers):
            if w.qkv is not None:
                q, k, v = self.pre_attention_fused(x, w.ln1, w.qkv, w.q_norm, w.k_norm, cos, sin)
            else:
                q, k, v = self.pre_attention(x, w.ln1, w.q, w.k, w.v, w.q_norm, w.k_norm, cos, sin)
            kc, vc = cache.layer(i)
            fused_write = self.fuse_kv_write and w.router is not None and self.triton_attention
            if not fused_write:
                kc.index_copy_(2, slot, k)
                vc.index_copy_(2, slot, v)
            if w.router is not None and self.triton_attention:
                from .attention_kernels import decode_attention

                from .moe_kernels import router_topk

                if fused_write:  # the attention launch writes this token's K/V rows itself
                    a = decode_attention(q, kc, vc, slot, length, self.scale, k_new=k, v_new=v)
                else:
                    a = decode_attention(q, kc, vc, slot, length, self.scale)
                if self.triton_router:
                    x, h, logits = self.route_logits(a, x, w.o, w.ln2, w.router)
                    top_w, top_i = router_topk(logits, self.top_k, normalize=self.norm_topk, dtype=h.dtype)
                else:
                    x, h, top_w, top_i = self.route(a, x, w.o, w.ln2, w.router)
                x = self._moe_decode(w, x, h, top_w, top_i)
            elif w.router is not None:
                x, h, top_w, top_i = self.attend_route(q, kc[:, :, :length], vc[:, :, :length], valid, x, w.o, w.ln2, w.router)
                x = self._moe_decode(w, x, h, top_w, top_i)
            else:
                a = attention_decode(q, kc[:, :, :length], vc[:, :, :length], valid, self.scale)
                x = x + F.linear(a.transpose(1, 2).reshape(1, 1, -1), w.o)
                x = self._mlp(w, x, decode=True)
        return self.head(x, return_hidden=return_hidden)

    def compile_prefill(self) -> None:
        """Compile the prefill's per-layer element-wise work once for every token count
        (``dynamic=True``): the norms, rotary and residual of a ~1k-token prefill run as ~60 eager
        ops per layer, whose launch overhead (~40 ms over 48 layers on the device) exceeded their
        GPU time. Fused kernels round like the eager ops up to reduction order; a compile failure
        falls back to the eager functions."""
        import torch

        self.prefill_pre_attention = _with_fallback(torch.compile(self._pre_attention, dynamic=True), self._pre_attention)
        self.prefill_post_attention = _with_fallback(torch.compile(self._post_attention, dynamic=True), self._post_attention)

    def compile_decode(self) -> None:
        """Compile the per-layer functions once (shapes are the same in every layer)."""
        import torch

        self.pre_attention = torch.compile(self._pre_attention, dynamic=False, fullgraph=True)
        self.pre_attention_fused = torch.compile(self._pre_attention_fused, dynamic=False, fullgraph=True)
        # One entry per attention-length bucket (static shapes; see FastOptions.graph_buckets).
        self.attend_route = torch.compile(self._attend_route, dynamic=False, fullgraph=True)
        self.route = torch.compile(self._route, dynamic=False, fullgraph=True)
        self.route_logits = torch.compile(self._route_logits, dynamic=False, fullgraph=True)
        self.expert_act = torch.compile(self._expert_act, dynamic=False, fullgraph=True)
        self.combine = torch.compile(self._combine, dynamic=False, fullgraph=True)
