"""``FastThinker``: the Qwen3-Omni Thinker's text generation without launch overhead.

Per call: find how much of the prompt the KV cache already holds (``prefix_cache``), encode
only images not seen before, prefill only the new tokens with M-RoPE positions computed for
them alone, then decode token by token through one CUDA-graph replay per token (captured per
attention-length bucket, the per-layer functions compiled once). Without CUDA the same code
runs eagerly: the static cache, the prefix reuse and the image cache are what CPU tests cover.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ...exceptions import ModelError, UserError
from ...models.base import GenerationSettings
from .eviction import CacheEdit, apply_to_state, plan_cache_edit
from .incremental_prompt import IncrementalPromptBuilder
from .kv_cache import StaticKVCache
from .layers import TextStack
from .options import FastOptions
from .prefix_cache import ImageEmbeddingCache, ImageSpan, PrefixState, find_image_spans

__all__ = ["FastStats", "FastThinker", "StepPlan"]

_UNSUPPORTED_INPUTS = ("input_features", "pixel_values_videos", "video_grid_thw")


@dataclass
class FastStats:
    """Counters over the life of a FastThinker (tests and benchmarks read them)."""

    calls: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    images_encoded: int = 0
    image_cache_hits: int = 0
    graphs_captured: int = 0
    evictions_in_place: int = 0
    rows_kept_in_place: int = 0
    last: dict[str, float] = field(default_factory=dict)


@dataclass
class StepPlan:
    ids: list[int]
    spans: list[ImageSpan]
    reuse: int
    edit: CacheEdit | None = None
    """In-place eviction: cached rows kept past ``reuse`` (see ``eviction.py``)."""

    @property
    def cached(self) -> int:
        """Prompt tokens in the cache once the edit (if any) is applied."""
        return self.edit.reuse_end if self.edit is not None else self.reuse

    @property
    def to_compute(self) -> int:
        """Prompt tokens the step computes: the tail plus any placeholders of the edit."""
        return len(self.ids) - self.cached + (self.edit.inserted_tokens if self.edit is not None else 0)


class FastThinker:
    """Static-cache, prefix-reusing, graph-replaying generation for a Qwen3-Omni Thinker."""

    def __init__(self, model: Any, *, options: FastOptions | None = None, processor: Any = None) -> None:
        thinker = getattr(model, "thinker", None)
        if thinker is None or not hasattr(getattr(thinker, "model", None), "language_model"):
            raise UserError(
                "the fast path supports Qwen3-Omni checkpoints (a Thinker with a language model); "
                f"got {type(model).__name__}: load it without fast=..."
            )
        import torch

        self.options = options or FastOptions()
        self.thinker = thinker
        self.inner = thinker.model
        self.stack = TextStack(self.inner.language_model, thinker.lm_head)
        cfg = thinker.config
        self.image_token_id = int(cfg.image_token_id)
        self.merge = int(cfg.vision_config.spatial_merge_size)
        weight = thinker.lm_head.weight
        self.device = weight.device
        self.dtype = weight.dtype
        cuda = self.device.type == "cuda"
        self.graphs_on = bool(self.options.cuda_graphs and cuda)
        self.compile_on = bool(self.options.compile and cuda)
        if self.options.compile_prefill and cuda:
            self.stack.compile_prefill()
        from .moe_kernels import triton_available

        self.stack.use_triton = self.options.decode_experts == "triton" and triton_available(self.device)
        if self.options.decode_attention == "triton" and triton_available(self.device):
            from .attention_kernels import decode_attention_supported

            experts = int(getattr(thinker.config.text_config, "num_experts", 0) or 0)
            router_ok = experts > 0 and experts & (experts - 1) == 0  # router_topk's tile
            self.stack.triton_attention = decode_attention_supported(self.stack.head_dim)
            self.stack.triton_router = router_ok and self.options.decode_router == "triton"
        if self.options.fuse_qkv:
            self.stack.fuse_qkv()
        if self.options.prefill_experts == "grouped":
            from .moe_prefill import grouped_gemm_available

            self.stack.prefill_experts = "grouped" if grouped_gemm_available(self.device) else "reference"
        self.vision_graphs = None
        if self.options.vision_graphs and cuda:
            from .vision_graph import VisionGraphs

            self.vision_graphs = VisionGraphs(self.inner.visual, use_graphs=True)
        self.stack.fuse_kv_write = self.options.fuse_kv_write
        self.state = PrefixState()
        self.images = ImageEmbeddingCache(self.options.image_cache_entries)
        self.stats = FastStats()
        self.preprocess_cache = None
        if processor is not None and self.options.image_cache_entries > 0:
            from .image_preprocess import install_image_cache

            visual_dtype = next(self.inner.visual.parameters()).dtype
            on_device = self.device if (self.options.preprocess_on_device and cuda) else None
            self.preprocess_cache = install_image_cache(
                processor, capacity=self.options.image_cache_entries, dtype=visual_dtype, device=on_device
            )
        self.prompts: IncrementalPromptBuilder | None = None
        if self.preprocess_cache is not None and self.options.incremental_prompt:
            self.prompts = IncrementalPromptBuilder(
                processor, image_cache=self.preprocess_cache, image_token_id=self.image_token_id
            )
        self.cache: StaticKVCache | None = None
        self._graphs: dict[int, tuple[Any, Any]] = {}
        self._pool: Any = None
        self._compiled = False
        self.token_buf = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self.pos_buf = torch.zeros((3, 1, 1), dtype=torch.long, device=self.device)
        self.slot_buf = torch.zeros((1,), dtype=torch.long, device=self.device)
        self.slots = torch.arange(self.options.max_cache_tokens, device=self.device)
        self._greedy_graphs: dict[int, Any] = {}
        self.ban_buf: Any = None  # [V] 0 / -inf: stop tokens banned inside the greedy graph

    # -- support checks ------------------------------------------------------------------------
    @staticmethod
    def unsupported(inputs: Any) -> str | None:
        """Why these processor inputs must take the plain path (None: the fast path can run them)."""
        for key in _UNSUPPORTED_INPUTS:
            if inputs.get(key) is not None:
                return f"{key} (audio / video input) is not handled by the fast path"
        if inputs["input_ids"].shape[0] != 1:
            return "batch size > 1"
        return None

    def reset(self, *, forget_images: bool = False) -> None:
        """Forget the cached transcript (the next call prefills everything); with
        ``forget_images`` also the encoded and preprocessed images (a benchmark's cold start)."""
        self.state.clear()
        if forget_images:
            self.images.clear()
            if self.preprocess_cache is not None:
                self.preprocess_cache.clear()
            if self.prompts is not None:
                self.prompts.clear()

    def _ensure_cache(self) -> StaticKVCache:
        if self.cache is None:
            s = self.stack
            self.cache = StaticKVCache(
                num_layers=len(s.layers),
                num_kv_heads=s.num_kv_heads,
                head_dim=s.head_dim,
                max_tokens=self.options.max_cache_tokens,
                dtype=self.dtype,
                device=self.device,
            )
        return self.cache

    # -- prefill -------------------------------------------------------------------------------
    def plan(self, inputs: Any) -> StepPlan:
        layout = self.prompts.layout_for(inputs) if self.prompts is not None else None
        if layout is not None:  # prepared incrementally: ids and image spans already known
            return self._plan(layout.ids, list(layout.spans))
        ids = inputs["input_ids"][0].tolist()
        keys = None
        last = self.preprocess_cache.last_keys if self.preprocess_cache is not None else None
        if last is not None and last[1] is inputs.get("pixel_values"):
            keys = last[0]  # hashed from the images themselves while preprocessing
        spans = find_image_spans(
            ids,
            inputs.get("pixel_values"),
            inputs.get("image_grid_thw"),
            image_token_id=self.image_token_id,
            merge=self.merge,
            keys=keys,
        )
        return self._plan(ids, spans)

    def _plan(self, ids: list[int], spans: list[ImageSpan]) -> StepPlan:
        if not self.options.prefix_reuse:
            return StepPlan(ids=ids, spans=spans, reuse=0)
        reuse = self.state.reusable(ids, spans)
        edit = None
        if self.options.eviction == "in_place" and reuse < len(self.state):
            edit = plan_cache_edit(self.state, ids, spans, reuse=reuse)
        return StepPlan(ids=ids, spans=spans, reuse=reuse, edit=edit)

    def _apply_edit(self, plan: StepPlan, edit: CacheEdit) -> tuple[list[int], list[int], list[int]]:
        """Move the kept rows to their new slots and describe the result in ``self.state``.
        Returns the placeholders still to compute (token ids, slots, positions): they run in the
        same forward as the step's tail (a second forward would cost a prefill's launch overhead)."""
        import torch

        cache = self._ensure_cache()
        moved = [b for b in edit.blocks if b.src != b.dst]
        if moved:
            src = torch.cat([torch.arange(b.src, b.src + b.length) for b in moved]).to(self.device)
            dst = torch.cat([torch.arange(b.dst, b.dst + b.length) for b in moved]).to(self.device)
            cache.move_rows(src, dst)
        slots = [i for ins in edit.inserts for i in range(ins.start, ins.end)]
        positions = [ins.position + j for ins in edit.inserts for j in range(ins.end - ins.start)]
        apply_to_state(self.state, edit, plan.ids, plan.spans)
        self.stats.evictions_in_place += 1
        self.stats.rows_kept_in_place += edit.kept_tokens - edit.truncate_reuse
        return [plan.ids[i] for i in slots], slots, positions

    def positions(self, new_ids: Sequence[int], new_spans: Sequence[ImageSpan], offset: int) -> Any:
        """M-RoPE positions [3, 1, n] of an appended segment, computed for its tokens only."""
        import torch

        ids = torch.tensor([list(new_ids)], dtype=torch.long)
        grids = torch.tensor([list(s.grid) for s in new_spans], dtype=torch.long) if new_spans else None
        mask = torch.ones_like(ids)
        pos, _ = self.inner.get_rope_index(ids, grids, None, mask)
        return pos.long() + offset

    def _vision(self, inputs: Any, spans: Sequence[ImageSpan]) -> tuple[Any, list[Any]] | None:
        """Embeddings + deepstack features of ``spans`` in order; encodes only unseen images."""
        import torch

        if not spans:
            return None
        found: dict[str, tuple[Any, list[Any]]] = {}
        missing: list[ImageSpan] = []
        for span in spans:
            item = self.images.get(span.key) if span.key not in found else found[span.key]
            if item is None:
                if all(m.key != span.key for m in missing):
                    missing.append(span)
            else:
                found[span.key] = item
                self.stats.image_cache_hits += 1
        if missing and self.vision_graphs is not None:  # one graph replay per new image
            pixels = inputs["pixel_values"]
            for span in missing:
                rows = pixels[span.rows[0] : span.rows[1]].to(self.device, self.dtype)
                embeds_one, deep = self.vision_graphs.encode(rows, span.grid)
                found[span.key] = (embeds_one, deep)
                self.images.put(span.key, embeds_one, deep)
            self.stats.images_encoded += len(missing)
            missing = []
        if missing:
            pixels = inputs["pixel_values"]
            rows = torch.cat([pixels[m.rows[0] : m.rows[1]] for m in missing]).to(self.device, self.dtype)
            grid = torch.tensor([list(m.grid) for m in missing], dtype=torch.long, device=self.device)
            out = self.inner.get_image_features(rows, grid, return_dict=True)
            for j, span in enumerate(missing):
                deep = [layer[j] for layer in out.deepstack_features]
                found[span.key] = (out.pooler_output[j], deep)
                self.images.put(span.key, out.pooler_output[j], deep)
            self.stats.images_encoded += len(missing)
        embeds = torch.cat([found[s.key][0] for s in spans])
        depth = len(found[spans[0].key][1])
        deepstack = [torch.cat([found[s.key][1][d] for s in spans]) for d in range(depth)]
        return embeds, deepstack

    def prefill(self, inputs: Any, plan: StepPlan) -> tuple[Any, dict[str, float]]:
        """Run the new part of the prompt; returns the last position's logits and timings."""
        import torch

        with torch.inference_mode():
            return self._prefill(inputs, plan)

    def _prefill(self, inputs: Any, plan: StepPlan) -> tuple[Any, dict[str, float]]:
        import torch

        cache = self._ensure_cache()
        timings: dict[str, float] = {}
        head_ids: list[int] = []
        head_slots: list[int] = []
        head_pos: list[int] = []
        if plan.edit is not None:
            t_edit = time.perf_counter()
            head_ids, head_slots, head_pos = self._apply_edit(plan, plan.edit)
            timings["evict_in_place"] = time.perf_counter() - t_edit
        k = plan.cached
        new_ids = plan.ids[k:]
        new_spans = [s for s in plan.spans if s.start >= k]
        offset = self.state.next_position(k)
        t0 = time.perf_counter()
        vision = self._vision(inputs, new_spans)
        self._sync()
        timings["vision"] = time.perf_counter() - t0
        r = len(head_ids)
        ids_t = torch.tensor([head_ids + new_ids], dtype=torch.long, device=self.device)
        x = self.stack.model.embed_tokens(ids_t)
        visual_mask = None
        deepstack = None
        if vision is not None:
            embeds, deepstack = vision
            at = [r + i for i, t in enumerate(new_ids) if t == self.image_token_id]  # host: no GPU sync
            visual_mask = torch.tensor(at, dtype=torch.long).to(self.device, non_blocking=True)
            x = x.index_copy(1, visual_mask, embeds.to(x.dtype).unsqueeze(0))
        pos = self.positions(new_ids, new_spans, offset)
        pos_all = pos
        slots_t = None
        if r:  # in-place eviction: placeholders at their scattered slots, then the tail
            pos_all = torch.cat([torch.tensor(head_pos, dtype=torch.long).view(1, 1, -1).expand(3, 1, -1), pos], dim=2)
            slots_t = torch.tensor(head_slots, dtype=torch.long).to(self.device, non_blocking=True)
        t1 = time.perf_counter()
        logits = self.stack.forward(
            x, pos_all.to(self.device), cache, k, visual_mask=visual_mask, deepstack=deepstack, head_slots=slots_t,
            head_end=max(head_slots) + 1 if r else None,
        )  # fmt: skip
        self._sync()
        timings["prefill_forward"] = time.perf_counter() - t1
        self.state.truncate(k)
        self.state.append(new_ids, pos.amax(dim=0)[0].tolist(), new_spans, pos.amin(dim=0)[0].tolist())
        self.stats.reused_tokens += k
        self.stats.prefilled_tokens += plan.to_compute
        self.stats.prompt_tokens += len(plan.ids)
        return logits[0, -1].float(), timings

    # -- decode --------------------------------------------------------------------------------
    def _bucket(self, length: int) -> int:
        for size in self.options.buckets():
            if length <= size:
                return size
        raise ModelError(f"{length} tokens exceed the fast path's KV cache ({self.options.max_cache_tokens} slots)")

    def _run_step(self, bucket: int) -> Any:
        cache = self._ensure_cache()
        x = self.stack.model.embed_tokens(self.token_buf)
        valid = self.slots[:bucket] <= self.slot_buf
        return self.stack.decode_step(x, self.pos_buf, cache, self.slot_buf, valid, bucket)

    def _run_greedy_step(self, bucket: int) -> Any:
        """One decode step that also picks the next token (argmax of the logits plus ``ban_buf``)
        and advances the token / slot / position buffers: graph replays then chain on the device."""
        import torch

        logits = self._run_step(bucket)
        scores = logits[0, -1].float() + self.ban_buf
        self.token_buf.copy_(torch.argmax(scores).view(1, 1))
        self.slot_buf.add_(1)
        self.pos_buf.add_(1)
        return logits

    def _greedy_graph(self, bucket: int) -> Any:
        import torch

        graph = self._greedy_graphs.get(bucket)
        if graph is not None:
            return graph
        self._graph(bucket)  # compiled functions, pool and cuBLAS handles first
        saved = (self.token_buf.clone(), self.slot_buf.clone(), self.pos_buf.clone())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._run_greedy_step(bucket)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._run_greedy_step(bucket)
        for buf, value in zip((self.token_buf, self.slot_buf, self.pos_buf), saved):
            buf.copy_(value)
        self._greedy_graphs[bucket] = graph
        self.stats.graphs_captured += 1
        return graph

    def _graph(self, bucket: int) -> tuple[Any, Any]:
        import torch

        entry = self._graphs.get(bucket)
        if entry is not None:
            return entry
        if self.compile_on and not self._compiled:
            self.stack.compile_decode()
            self._compiled = True
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: compilation, cuBLAS handles, allocator
            for _ in range(3):
                self._run_step(bucket)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._run_step(bucket)
        self._graphs[bucket] = (graph, out)
        self.stats.graphs_captured += 1
        return graph, out

    def warm_up(self, lengths: Sequence[int] | None = None) -> float:
        """Capture (and compile) the decode graphs ahead of the first step; returns seconds."""
        if not self.graphs_on:
            return 0.0
        import torch

        t0 = time.perf_counter()
        slot = len(self.state)  # warm-up writes land on a slot the next step overwrites
        with torch.inference_mode():
            self.slot_buf.fill_(slot)
            if self.options.sample_in_graph and self.ban_buf is None:
                self.ban_buf = torch.zeros(int(self.stack.lm_head.weight.shape[0]), dtype=torch.float32, device=self.device)
            for bucket in lengths or self.options.buckets():
                self._graph(self._bucket(bucket))
                if self.options.sample_in_graph:
                    self._greedy_graph(self._bucket(bucket))
        self._sync()
        return time.perf_counter() - t0

    def decode(self, token: int, slot: int, position: int) -> Any:
        """Feed ``token`` at cache ``slot`` with M-RoPE position ``position``; next logits [V]."""
        import torch

        with torch.inference_mode():  # the cache was made in inference mode: keep writes there
            self.token_buf.fill_(token)
            self.pos_buf.fill_(position)
            self.slot_buf.fill_(slot)
            bucket = self._bucket(slot + 1)
            if self.graphs_on:
                graph, out = self._graph(bucket)
                graph.replay()
            else:
                out = self._run_step(bucket)
            return out[0, -1].float()

    def _greedy_on_device(self, settings: GenerationSettings) -> bool:
        return bool(self.options.sample_in_graph and settings.temperature <= 0)

    def _launch_greedy(self, bucket: int) -> None:
        """One greedy decode step: a graph replay on CUDA, the same function eagerly elsewhere."""
        if self.graphs_on:
            self._greedy_graph(bucket).replay()
        else:
            self._run_greedy_step(bucket)

    def _generate_greedy(
        self, logits: Any, slot: int, position: int, *, settings: GenerationSettings, stops: set[int], min_new_tokens: int,
        stop_strings: list[str], tokenizer: Any, emit: Callable[[int], None],
    ) -> tuple[list[int], str, float]:  # fmt: skip
        """Greedy tokens with the argmax inside the decode step, the host one replay ahead: replay
        j feeds token j (at ``slot + j``) and leaves token j+1 in ``token_buf``; replay j+1 is
        queued before token j+1 is read, so the GPU never waits for the host. A replay past a
        stop token writes one cache row beyond the transcript (the next step overwrites it).
        Same tokens as the host loop (the same argmax over the same logits). Returns (tokens,
        finish reason, time of the first token)."""
        import torch

        if self.ban_buf is None:
            self.ban_buf = torch.zeros(logits.shape[-1], dtype=torch.float32, device=self.device)
        stop_t = torch.tensor(sorted(stops), dtype=torch.long, device=self.device) if stops else None
        if min_new_tokens > 0 and stops:
            logits[list(stops)] = float("-inf")
        generated = [int(torch.argmax(logits).item())]
        first_at = time.perf_counter()
        emit(generated[0])
        cuda = self.device.type == "cuda"
        host = torch.zeros(2, dtype=torch.long, pin_memory=cuda)
        events = [torch.cuda.Event() for _ in range(2)] if cuda else []
        banned: list[bool | None] = [None]

        def launch(j: int) -> None:
            ban = stop_t is not None and j + 1 < min_new_tokens
            if ban != banned[0]:
                self.ban_buf.zero_()
                if ban:
                    self.ban_buf.index_fill_(0, stop_t, float("-inf"))
                banned[0] = ban
            self._launch_greedy(self._bucket(slot + j + 1))
            host[j % 2].copy_(self.token_buf[0, 0], non_blocking=cuda)
            if cuda:
                events[j % 2].record()

        finish = self._finished(generated, stops, stop_strings, tokenizer, settings.max_new_tokens)
        if finish is not None:
            return generated, finish, first_at
        self.token_buf.fill_(generated[0])
        self.slot_buf.fill_(slot)
        self.pos_buf.fill_(position)
        launch(0)
        j = 0
        while True:
            if len(generated) + 1 < settings.max_new_tokens:
                launch(j + 1)
            if cuda:
                events[j % 2].synchronize()
            token = int(host[j % 2])
            self.state.append([generated[-1]], [position + j])  # replay j wrote its row
            generated.append(token)
            emit(token)
            finish = self._finished(generated, stops, stop_strings, tokenizer, settings.max_new_tokens)
            if finish is not None:
                return generated, finish, first_at
            j += 1

    @staticmethod
    def _finished(generated: list[int], stops: set[int], stop_strings: list[str], tokenizer: Any, limit: int) -> str | None:
        if generated[-1] in stops:
            return "stop"
        if stop_strings and any(s in tokenizer.decode(generated, skip_special_tokens=False) for s in stop_strings):
            return "stop"
        return "length" if len(generated) >= limit else None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    # -- one generation ------------------------------------------------------------------------
    def generate(
        self,
        inputs: Any,
        *,
        settings: GenerationSettings,
        stop_ids: Sequence[int],
        tokenizer: Any,
        streamer: Any = None,
        min_new_tokens: int = 0,
        on_token: Callable[[int], None] | None = None,
    ) -> tuple[list[int], str, dict[str, float]]:
        """Generate up to ``settings.max_new_tokens``; returns (generated ids incl. the stop
        token if any, finish reason, timings)."""
        import torch

        t0 = time.perf_counter()
        plan = self.plan(inputs)
        t_plan = time.perf_counter() - t0
        total = len(plan.ids) + settings.max_new_tokens
        if total > self.options.max_cache_tokens:
            raise ModelError(
                f"this step needs {total} KV slots ({len(plan.ids)} prompt + {settings.max_new_tokens} new tokens) "
                f"but the fast path's cache has {self.options.max_cache_tokens}: raise FastOptions.max_cache_tokens "
                "or keep fewer screenshots in the context"
            )
        self.stats.calls += 1
        with torch.inference_mode():
            logits, timings = self.prefill(inputs, plan)
            generator = _sampler(settings, self.device)
            stops = set(int(s) for s in stop_ids)
            generated: list[int] = []
            finish = "length"
            slot = len(self.state)
            position = self.state.next_position(slot)
            first_at = None
            stop_strings = list(settings.stop or ())
            on_device = self._greedy_on_device(settings)
            if on_device:
                emit = _emitter(streamer, on_token)
                generated, finish, first_at = self._generate_greedy(
                    logits, slot, position, settings=settings, stops=stops, min_new_tokens=min_new_tokens,
                    stop_strings=stop_strings, tokenizer=tokenizer, emit=emit,
                )  # fmt: skip
            while not on_device:  # the host picks each token (sampling, or sample_in_graph off)
                if len(generated) < min_new_tokens and stops:
                    logits[list(stops)] = float("-inf")
                token = generator(logits)
                if first_at is None:
                    first_at = time.perf_counter()
                generated.append(token)
                if streamer is not None:
                    streamer.put(torch.tensor([token]))
                if on_token is not None:
                    on_token(token)
                if token in stops:
                    finish = "stop"
                    break
                if stop_strings and any(s in tokenizer.decode(generated, skip_special_tokens=False) for s in stop_strings):
                    finish = "stop"
                    break
                if len(generated) >= settings.max_new_tokens:
                    break
                logits = self.decode(token, slot, position)
                self.state.append([token], [position])
                slot += 1
                position += 1
            end = time.perf_counter()
        if streamer is not None:
            streamer.end()
        first_at = first_at or end
        timings.update(
            {
                "plan": t_plan,
                "prefill": first_at - t0,
                "decode": end - first_at,
                "generate": end - t0,
                "reused_tokens": float(plan.cached),
                "prefilled_tokens": float(plan.to_compute),
            }
        )
        if len(generated) > 1:
            timings["decode_per_token"] = timings["decode"] / (len(generated) - 1)
        self.stats.last = dict(timings)
        return generated, finish, timings


def _emitter(streamer: Any, on_token: Callable[[int], None] | None) -> Callable[[int], None]:
    """Hands each new token to the streamer and the callback (either may be None)."""

    def emit(token: int) -> None:
        if streamer is not None:
            import torch

            streamer.put(torch.tensor([token]))
        if on_token is not None:
            on_token(token)

    return emit


def _sampler(settings: GenerationSettings, device: Any) -> Callable[[Any], int]:
    """Greedy for temperature 0; else temperature / top-k / top-p sampling (one host sync per token)."""
    import torch

    if settings.temperature <= 0:
        return lambda logits: int(torch.argmax(logits).item())
    gen = torch.Generator(device=device)
    if settings.seed is not None:
        gen.manual_seed(int(settings.seed))
    else:
        gen.seed()

    def sample(logits: Any) -> int:
        scores = logits / settings.temperature
        if settings.top_k is not None and settings.top_k > 0:
            kth = torch.topk(scores, min(int(settings.top_k), scores.shape[-1])).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if settings.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True)
            cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(-1)
            drop = cumulative - torch.softmax(sorted_scores, dim=-1) > settings.top_p
            scores = scores.scatter(0, order, sorted_scores.masked_fill(drop, float("-inf")))
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=gen).item())

    return sample
