"""``FastBatchedEngine``: continuous batching on the fast path (row-static KV cache, one CUDA
graph per batch bucket), the ``BatchedEngine``'s requests, sessions and streaming otherwise.

Why: the plain engine runs the transformers modules eagerly and concatenates the whole batch
KV cache on every decode step; on the GPU a 15-token answer's Thinker part alone took ~1 s.
Here every request owns a ROW of one preallocated cache (``RowKVCache``: per layer
[R + 1, Hkv, L, D]); its prompt is prefilled into its row by ``TextStack.forward`` (images
through the vision encoder, cached by content; requests waiting together in one forward;
audio and video through the plain forward, whose K/V are then copied into the row); each decode step is ONE ``BatchedDecoder`` call over
all running rows (a graph replay on CUDA, the same code eagerly elsewhere). A finished session
keeps its row for its next turn (``RowTable``: longest reusable prefix, LRU), so a GUI session
prefills only its new screenshot and text.

Requests longer than a row (``L`` tokens: prompt + max new tokens) are refused before any work
with a ``CapacityError``; when every row is busy a request waits in the queue.
"""

from __future__ import annotations

import collections
import time
import warnings
from typing import Any, Sequence

from ..exceptions import UserError
from .engine import BatchedEngine, _generator, _model_error, _Sequence
from .errors import CapacityError
from .kv_sessions import KVBudget, MediaBlock
from .metrics import ServeMetrics
from .row_table import RowTable

__all__ = ["FastBatchedEngine", "RowBudget"]

_ROW_TOKENS = {"cuda": 12288, "cpu": 2048}
"""Default tokens per row: a 10-step GUI episode with a 1280x704 screenshot per step (880
tokens each) reaches ~9.4k tokens."""
_LENGTH_BUCKETS = (2048, 4096, 8192)
_IMAGE_EMBEDDINGS = 64
_PROMPT_RECORDS = 48
"""Prompts the incremental builder remembers (the last turns of the most recent sessions)."""
_TOGETHER_TOKENS = 8192
"""New tokens of waiting requests prefilled together in one forward, at most (activations stay small)."""


class RowBudget(KVBudget):
    """The KV budget of a row-static cache: a request must fit ONE row (``row_tokens``)."""

    def __init__(self, budget_bytes: int, bytes_per_token: int, row_tokens: int) -> None:
        super().__init__(budget_bytes, bytes_per_token)
        self.row_tokens = row_tokens

    def check_possible(self, tokens: int) -> None:
        if tokens > self.row_tokens:
            raise CapacityError(
                f"this request needs KV memory for {tokens} tokens ({self.need(tokens) / 2**20:.1f} MiB) but the "
                f"server's KV budget holds at most {self.row_tokens} tokens per request: send a shorter conversation "
                "or fewer max_tokens",
                retriable=False,
            )


class FastBatchedEngine(BatchedEngine):
    """A ``ServeBackend`` over a local Qwen3-Omni on the fast path (CUDA graphs on CUDA, eager elsewhere)."""

    def __init__(self, model: Any, *, metrics: ServeMetrics | None = None, max_sessions: int = 64,
                 kv_budget_bytes: int | None = None, max_batch: int = 64, row_tokens: int | None = None,
                 length_buckets: Sequence[int] = _LENGTH_BUCKETS, cuda_graphs: bool = True,
                 compile_prefill: bool = False) -> None:  # fmt: skip
        import torch

        super().__init__(model, metrics=metrics, max_sessions=max_sessions, kv_budget_bytes=kv_budget_bytes, max_batch=max_batch)
        if model.family.key != "qwen3_omni" or not hasattr(self.thinker.model, "language_model"):
            raise UserError(f"the fast engine serves Qwen3-Omni Thinkers; serve {model.family.label} with --engine batched")
        from ..runtime.fast.batched_decode import BatchedDecoder
        from ..runtime.fast.prefix_cache import ImageEmbeddingCache
        from ..runtime.fast.row_cache import RowKVCache

        self.stack = _text_stack(model, compile_prefill=compile_prefill)
        per_token = self.budget.per_token
        budget = self.budget.budget
        length = int(row_tokens or min(_ROW_TOKENS.get(self.device.type, 2048), max(64, budget // per_token)))
        rows = max(1, min(max_sessions + max_batch, budget // (length * per_token)))
        self.budget = RowBudget(budget, per_token, length)
        with torch.inference_mode():  # written only by the engine thread, in inference mode
            self.cache = RowKVCache(num_layers=len(self.stack.layers), rows=rows, num_kv_heads=self.stack.num_kv_heads,
                                    head_dim=self.stack.head_dim, row_tokens=length, dtype=self.dtype, device=self.device)  # fmt: skip
            self.decoder = BatchedDecoder(self.stack, self.cache, max_batch=max_batch, length_buckets=length_buckets, cuda_graphs=cuda_graphs)
            self.expert_choice = self.decoder.choose_experts()
        self.rows = RowTable(rows, max_sessions=max_sessions)
        self._row_of: dict[_Sequence, Any] = {}
        self._embeddings = ImageEmbeddingCache(_IMAGE_EMBEDDINGS)
        self.prefilled_together = 0
        """Requests prefilled in a shared forward with others (tests and benchmarks read it)."""
        from ..runtime.fast.incremental_prompt import IncrementalPromptBuilder

        # One builder for every session: each prompt continues the record of its own last turn
        # (records keep their images' pixel rows alive: bounded).
        self.prompts = IncrementalPromptBuilder(model.processor, image_cache=self._images, image_token_id=self.image_token,
                                                records=min(max_sessions + max_batch, _PROMPT_RECORDS))  # fmt: skip
        self.prepare_seconds: collections.deque[float] = collections.deque(maxlen=4096)
        """Host time of each request's prompt preparation (benchmarks read it)."""
        self.step_seconds: collections.deque[tuple[int, float]] = collections.deque(maxlen=65536)
        """(batch size, seconds) of each decode step, sampling included (benchmarks read it)."""
        self.prefill_seconds: collections.deque[tuple[int, float]] = collections.deque(maxlen=4096)
        """(requests, seconds) of each prefill forward (one request, or several together)."""
        self.metrics.kv_budget.set(self.cache.nbytes)

    def warm_up(self, batch_sizes: Sequence[int] | None = None, lengths: Sequence[int] | None = None) -> float:
        """Capture the decode graphs of these buckets before traffic (call before serving); seconds."""
        import torch

        with torch.inference_mode():
            return self.decoder.warm_up(batch_sizes, lengths)

    def _prepare(self, request: Any, prefix: str) -> tuple[list[int], Any, list[MediaBlock]]:
        """``BatchedEngine._prepare`` with only the appended turns tokenised (``IncrementalPromptBuilder``:
        the same tensors as ``build_prompt``; audio / video prompts are built whole)."""
        t0 = time.perf_counter()
        model = self.model
        with self._prepare_lock:
            prepared = self.prompts.build(request.messages, tools=request.tools, family=model.family, image_spec=model.image_spec,
                                          template_renders_tools=model.template_renders_tools, assistant_prefix=prefix)  # fmt: skip
            layout = self.prompts.layout_for(prepared.inputs)
            last = self._images.last_keys
        inputs = prepared.inputs
        if layout is not None:
            blocks = [MediaBlock("image", span.start, span.end, n, span.key) for n, span in enumerate(layout.spans)]
            result = (list(layout.ids), inputs, blocks)
        else:
            ids = [int(t) for t in inputs["input_ids"][0].tolist()]
            keys = last[0] if last is not None and last[1] is inputs.get("pixel_values") else None
            result = (ids, inputs, self._media_blocks(ids, inputs, image_keys=keys))
        self.prepare_seconds.append(time.perf_counter() - t0)
        return result

    @property
    def kept_bytes(self) -> int:
        """KV bytes of the prefixes idle session rows hold."""
        return self.budget.need(sum(len(r.ids) for r in self.rows.kept))

    # -- admission and prefill (engine thread) -----------------------------------------------------
    def _admit(self) -> None:
        """Give waiting requests rows (as many as the batch and the rows allow) and prefill them:
        text and image requests together in one forward (up to ``_TOGETHER_TOKENS`` new tokens),
        audio / video ones one by one."""
        admitted: list[tuple[_Sequence, int]] = []
        while self._waiting and len(self._running) + len(admitted) < self.max_batch:
            seq = self._waiting[0]
            if seq.cancelled:
                self._waiting.popleft()
                self.metrics.waiting_sequences.dec()
                continue
            got = self.rows.acquire(seq.session_id, seq.ids, seq.blocks)
            if got is None:
                break  # every row is busy: wait for a running request to finish
            row, reuse = got
            self._waiting.popleft()
            self.metrics.waiting_sequences.dec()
            seq.reserved = self.budget.need(len(seq.ids) + seq.settings.max_new_tokens)
            self.budget.reserved += seq.reserved
            self.metrics.active_sequences.inc()
            self._row_of[seq] = row
            admitted.append((seq, reuse))
        together = self._groups([(s, k) for s, k in admitted if self._joinable(s)])
        for group in together:
            self._guarded(group, together=True)
        grouped = {id(seq) for group in together for seq, _ in group}
        for seq, reuse in admitted:
            if id(seq) not in grouped:
                self._guarded([(seq, reuse)], together=False)
        self._update_kv_gauges()

    def _guarded(self, group: list[tuple[_Sequence, int]], *, together: bool) -> None:
        """Prefill a group; a failure fails its requests only (a shared forward that fails is
        retried one request at a time). Prefilled, unfinished requests join the batch."""
        try:
            if together:
                self._prefill_together(group)
            else:
                self._prefill_row(*group[0])
        except Exception as exc:
            if together:
                warnings.warn(f"prefill of {len(group)} requests together failed ({type(exc).__name__}: {exc}); "
                              "prefilling them one by one", stacklevel=2)  # fmt: skip
                for one in group:
                    self._guarded([one], together=False)
                return
            error = _model_error(exc, self.model)
            for seq, _ in group:
                if not seq.finished:
                    self._finish(seq, error=error)
            return
        self._running.extend(seq for seq, _ in group if not seq.finished)

    @staticmethod
    def _joinable(seq: _Sequence) -> bool:
        """Text and images only (audio / video prompts take the plain forward)."""
        return not any(seq.inputs.get(key) is not None for key in ("input_features", "pixel_values_videos"))

    @staticmethod
    def _groups(candidates: list[tuple[_Sequence, int]]) -> list[list[tuple[_Sequence, int]]]:
        """Consecutive requests whose new tokens add up to at most ``_TOGETHER_TOKENS`` (groups of two or more)."""
        groups: list[list[tuple[_Sequence, int]]] = [[]]
        used = 0
        for seq, reuse in candidates:
            n = len(seq.ids) - reuse
            if groups[-1] and used + n > _TOGETHER_TOKENS:
                groups.append([])
                used = 0
            groups[-1].append((seq, reuse))
            used += n
        return [g for g in groups if len(g) >= 2]

    def _prefill_row(self, seq: _Sequence, reuse: int) -> None:
        t0 = time.perf_counter()
        positions, _ = self._rope_index(seq.inputs)
        view = self.cache.row(self._row_of[seq].index)
        plain = any(seq.inputs.get(key) is not None for key in ("input_features", "pixel_values_videos"))
        if plain:
            logits = self._prefill_plain(seq, view, positions, reuse)
        else:
            logits = self._prefill_fast(seq, view, positions, reuse)
        self.prefill_seconds.append((1, time.perf_counter() - t0))
        self._prefilled(seq, positions, reuse, logits, t0)

    def _prefill_together(self, group: list[tuple[_Sequence, int]]) -> None:
        """Several requests' new tokens in one forward (``multi_prefill``), each into its own row;
        their new images encoded first (each once, by content)."""
        import torch

        from ..runtime.fast.multi_prefill import prefill_many

        t0 = time.perf_counter()
        positions = [self._rope_index(seq.inputs)[0] for seq, _ in group]
        ids: list[int] = []
        visual_at: list[int] = []
        visions = []
        for seq, k in group:
            vision = self._vision(seq, k)
            if vision is not None:
                visual_at += [len(ids) + i for i, t in enumerate(seq.ids[k:]) if t == self.image_token]
                visions.append(vision)
            ids += seq.ids[k:]
        x = self.stack.model.embed_tokens(torch.tensor([ids], dtype=torch.long, device=self.device))
        visual_index = deepstack = None
        if visions:
            visual_index = torch.tensor(visual_at, dtype=torch.long).to(self.device, non_blocking=True)
            embeds = torch.cat([v[0] for v in visions]).to(x.dtype)
            x = x.index_copy(1, visual_index, embeds.unsqueeze(0))
            deepstack = [torch.cat([v[1][d] for v in visions]) for d in range(len(visions[0][1]))]
        pos = torch.cat([p[:, :, k:] for p, (_, k) in zip(positions, group)], dim=2).to(self.device)
        parts = [(self.cache.row(self._row_of[seq].index), k, len(seq.ids) - k) for seq, k in group]
        logits = prefill_many(self.stack, x, pos, parts, visual_index=visual_index, deepstack=deepstack).float()
        self.prefilled_together += len(group)
        self.prefill_seconds.append((len(group), time.perf_counter() - t0))
        for j, (seq, k) in enumerate(group):
            self._prefilled(seq, positions[j], k, logits[j], t0)

    def _prefilled(self, seq: _Sequence, positions: Any, reuse: int, logits: Any, t0: float) -> None:
        seq.length = len(seq.ids)
        seq.next_pos = int(positions.max()) + 1
        seq.reused = reuse
        self.metrics.reused_tokens.inc(reuse)
        seq.timings["prefill"] = time.perf_counter() - t0
        seq.generator = _generator(seq.settings, self.device)
        self._accept(seq, logits)

    def _prefill_fast(self, seq: _Sequence, view: Any, positions: Any, k: int) -> Any:
        """The new part of the prompt through ``TextStack.forward`` into the row."""
        import torch

        new_ids = seq.ids[k:]
        x = self.stack.model.embed_tokens(torch.tensor([new_ids], dtype=torch.long, device=self.device))
        visual_mask = deepstack = None
        vision = self._vision(seq, k)
        if vision is not None:
            embeds, deepstack = vision
            at = [i for i, t in enumerate(new_ids) if t == self.image_token]
            visual_mask = torch.tensor(at, dtype=torch.long).to(self.device, non_blocking=True)
            x = x.index_copy(1, visual_mask, embeds.to(x.dtype).unsqueeze(0))
        logits = self.stack.forward(x, positions[:, :, k:].to(self.device), view, k, visual_mask=visual_mask, deepstack=deepstack)
        return logits[0, -1].float()

    def _vision(self, seq: _Sequence, k: int) -> tuple[Any, list[Any]] | None:
        """Embeddings + deepstack features of the images after slot ``k``, in order; each image
        is encoded once (by content key) across all requests."""
        import torch

        blocks = [b for b in seq.blocks if b.kind == "image" and b.start >= k]
        if not blocks:
            return None
        inputs = seq.inputs
        grids = inputs["image_grid_thw"]
        offsets = [0]
        for g in grids.tolist():
            offsets.append(offsets[-1] + g[0] * g[1] * g[2])
        found = {b.key: self._embeddings.get(b.key) for b in blocks}
        missing = list({b.key: b for b in blocks if found[b.key] is None}.values())
        if missing:
            pixels = torch.cat([inputs["pixel_values"][offsets[b.index] : offsets[b.index + 1]] for b in missing])
            grid = grids[[b.index for b in missing]].to(self.device)
            out = self.thinker.model.get_image_features(pixels.to(self.device, self.dtype), grid, return_dict=True)
            for j, block in enumerate(missing):
                found[block.key] = (out.pooler_output[j], [layer[j] for layer in out.deepstack_features])
                self._embeddings.put(block.key, *found[block.key])
        embeds = torch.cat([found[b.key][0] for b in blocks])
        depth = len(found[blocks[0].key][1])
        return embeds, [torch.cat([found[b.key][1][d] for b in blocks]) for d in range(depth)]

    def _prefill_plain(self, seq: _Sequence, view: Any, positions: Any, k: int) -> Any:
        """Audio / video prompts: the plain engine's forward (the row's prefix as its cache),
        then the new K/V copied into the row."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=view.read(k)) if k else DynamicCache()
        out = self.thinker.model(
            input_ids=torch.tensor([seq.ids[k:]], dtype=torch.long, device=self.device),
            attention_mask=torch.ones((1, len(seq.ids)), dtype=torch.long, device=self.device),
            position_ids=positions[:, :, k:].to(self.device),
            past_key_values=cache,
            use_cache=True,
            **self._media_after(seq, k),
        )
        view.write([(layer.keys[:, :, k:], layer.values[:, :, k:]) for layer in out.past_key_values.layers], k)
        return self.thinker.lm_head(out.last_hidden_state[:, -1]).float()[0]

    # -- decode (engine thread) --------------------------------------------------------------------
    def _decode_step(self) -> None:
        t0 = time.perf_counter()
        batch = self._running
        logits = self.decoder.step(
            [s.generated[-1] for s in batch],
            [s.next_pos for s in batch],
            [self._row_of[s].index for s in batch],
            [s.length for s in batch],
        )
        self.metrics.observe_batch(len(batch))
        greedy = [s.settings.temperature <= 0 for s in batch]
        chosen = logits.argmax(dim=-1).tolist() if any(greedy) else []  # one host sync for every greedy row
        self.step_seconds.append((len(batch), time.perf_counter() - t0))
        for i, seq in enumerate(batch):
            seq.length += 1
            seq.next_pos += 1
            self._take_token(seq, chosen[i] if greedy[i] else seq.generator(logits[i]))
        self._running = [s for s in batch if not s.finished]
        self._update_kv_gauges()

    def _drop_cancelled(self) -> None:
        gone = [s for s in self._running if s.cancelled]
        if not gone:
            return
        for seq in gone:
            seq.finished = True
            self._release(seq)
        self._running = [s for s in self._running if not s.cancelled]
        self._update_kv_gauges()

    # -- rows back -----------------------------------------------------------------------------------
    def _release(self, seq: _Sequence) -> None:
        """A finished request gives its row back: kept for its session (holding its prompt and
        the answer fed so far) or freed (no session, an error, a cancelled request)."""
        super()._release(seq)
        row = self._row_of.pop(seq, None)
        if row is None:
            return
        keep = seq.session_id is not None and seq.error is None and not seq.cancelled and seq.length > 0
        if keep:
            self.rows.release(row, session_id=seq.session_id, ids=(seq.ids + seq.generated)[: seq.length], blocks=seq.blocks)
        else:
            self.rows.release(row)

    def _update_kv_gauges(self) -> None:
        live = sum(s.length for s in self._running)
        self.metrics.kv_bytes.set(self.budget.need(live) + self.kept_bytes)
        self.metrics.kv_sessions.set(len(self.rows.kept))


def _text_stack(model: Any, *, compile_prefill: bool) -> Any:
    """The model's fast ``TextStack`` when it already has one (``QwenOmniModel.fast``), else a
    new one set up like ``FastThinker`` does on CUDA (stacked q/k/v, grouped MoE prefill)."""
    from ..runtime.fast.layers import TextStack

    fast = getattr(model, "fast", None)
    if fast is not None and getattr(fast, "stack", None) is not None:
        return fast.stack
    thinker = model.model.thinker
    stack = TextStack(thinker.model.language_model, thinker.lm_head)
    device = thinker.lm_head.weight.device
    if device.type == "cuda":
        from ..runtime.fast.moe_prefill import grouped_gemm_available

        stack.fuse_qkv()
        stack.prefill_experts = "grouped" if grouped_gemm_available(device) else "reference"
        if compile_prefill:
            stack.compile_prefill()
    return stack
