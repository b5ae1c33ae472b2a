"""Prefill several requests' new tokens in ONE forward, each into its own cache row.

Why: 16 spoken answers arriving at once are 16 short prompts, 16 GUI sessions' next steps 16
screenshots with their text; prefilled one by one each pays a whole forward's launches and
reads every MoE expert again (~25 ms for a short prompt, 70-95 ms for a ~1k-token step on an
H200). Here the projections, norms and MoE run once over all their tokens; only attention is per
request (each part attends to its own row's prefix and its own tokens, causally), so a
request's logits do not depend on its neighbours beyond the rounding of larger matrix products.
"""

from __future__ import annotations

from typing import Any, Sequence

from .layers import TextStack, _add_deepstack, attention_prefill

__all__ = ["prefill_many"]


def prefill_many(stack: TextStack, embeds: Any, position_ids: Any, parts: Sequence[tuple[Any, int, int]], *,
                 visual_index: Any | None = None, deepstack: list[Any] | None = None) -> Any:  # fmt: skip
    """embeds [1, T, H] and position_ids [3, 1, T]: the new tokens of every part, concatenated
    (image embeddings already in place); ``parts``: (cache row view with ``layer(i)``, first
    slot, token count) per request, in order; ``visual_index`` / ``deepstack``: the image
    tokens' indices in T and their deepstack features (added after the first layers, as
    ``TextStack.forward`` does). Writes each part's K/V at its slots; returns the logits of each
    part's last token [P, V]."""
    import torch

    x = embeds
    total = x.shape[1]
    cos, sin = stack.rope(x, position_ids)
    for i, w in enumerate(stack.layers):
        q, k, v = stack.prefill_pre_attention(x, w.ln1, w.q, w.k, w.v, w.q_norm, w.k_norm, cos, sin)
        outs = []
        at = 0
        for view, start, n in parts:
            kc, vc = view.layer(i)
            kc[:, :, start : start + n] = k[:, :, at : at + n]
            vc[:, :, start : start + n] = v[:, :, at : at + n]
            outs.append(attention_prefill(q[:, :, at : at + n], kc, vc, start, stack.scale))
            at += n
        a = torch.cat(outs, dim=2).transpose(1, 2).reshape(1, total, -1)
        x, h = stack.prefill_post_attention(x, a, w.o, w.ln2)
        x = stack._mlp_from(w, x, h)  # noqa: SLF001 - the stack's MLP maths over all tokens
        if deepstack is not None and visual_index is not None and i < len(deepstack):
            x = _add_deepstack(x, visual_index, deepstack[i])
    ends = torch.tensor([n for _, _, n in parts]).cumsum(0) - 1
    return stack.head(x[:, ends.to(x.device)])[0]
