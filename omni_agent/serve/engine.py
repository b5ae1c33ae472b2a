"""``BatchedEngine``: one resident Qwen-Omni Thinker shared by many requests (continuous batching).

One engine thread owns the model. Between decode steps it admits waiting requests (each
prefilled alone, batch 1, reusing its session's KV prefix) and drops finished or abandoned
ones; every decode step then runs ONE forward over all running requests. Rows of the batch
are left-padded to a common length and masked, every row has its own M-RoPE positions, so a
request's tokens do not depend on its neighbours (greedy on CPU float32: the same tokens alone
and in a batch; the concurrency test checks it).

Memory: running requests reserve KV for prompt + max new tokens at admission; finished
sessions keep their KV (``kv_sessions``) until the budget needs the room (LRU). A request that
could never fit is refused with a ``CapacityError`` before any work; one that fits once others
finish waits in the queue.

This is the plain transformers path (eager modules, ``DynamicCache``), on CPU and on CUDA.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import numpy as np

from ..exceptions import ModelError, UserError
from ..models.base import GenerationSettings, ModelChunk, ModelRequest, ModelResponse, Usage
from ..runtime.generation import eos_token_ids
from ..runtime.prompt import build_prompt
from .backend import AudioChunk
from .errors import CapacityError
from .kv_sessions import KVBudget, MediaBlock, SessionKV, SessionStore, content_key, reusable_prefix
from .metrics import ServeMetrics

__all__ = ["BatchedEngine"]

_CPU_DEFAULT_BUDGET = 2 * 2**30
_IMAGE_CACHE_ENTRIES = 128
_GPU_FREE_FRACTION = 0.6
"""Of the GPU memory free after loading: the rest is left for activations and the Talker."""


@dataclass(eq=False)
class _Sequence:
    """One request inside the engine."""

    ids: list[int]
    inputs: Any
    settings: GenerationSettings
    session_id: str | None
    prefix_text: str
    blocks: list[MediaBlock]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, Any]]
    started: float = field(default_factory=time.perf_counter)
    reserved: int = 0
    reused: int = 0
    generated: list[int] = field(default_factory=list)
    kv: list[tuple[Any, Any]] | None = None
    """Own KV after prefill, until the sequence joins the batch cache."""
    length: int = 0
    next_pos: int = 0
    emitted: int = 0
    finished: bool = False
    cancelled: bool = False
    finish_reason: str = "length"
    error: Exception | None = None
    generator: Any = None
    timings: dict[str, float] = field(default_factory=dict)

    def post(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:  # the client's event loop is gone: nobody reads any more
            self.cancelled = True


class BatchedEngine:
    """A ``ServeBackend`` over a local ``QwenOmniModel`` (Qwen3-Omni, Qwen2.5-Omni)."""

    accepts_assistant_prefix = True

    def __init__(self, model: Any, *, metrics: ServeMetrics | None = None, max_sessions: int = 64,
                 kv_budget_bytes: int | None = None, max_batch: int = 64) -> None:
        import torch

        thinker = getattr(model.model, "thinker", None)
        if thinker is None or not hasattr(thinker, "get_rope_index"):
            raise UserError(f"the batched engine serves Qwen-Omni Thinkers; {model.family.label} is served serially (--engine serial)")
        self.model = model
        self.info = model.info
        self.thinker = thinker
        self.tokenizer = model.processor.tokenizer
        self.metrics = metrics or ServeMetrics()
        self.max_batch = max_batch
        self.stop_ids = set(eos_token_ids(self.tokenizer))
        cfg = thinker.config
        text = cfg.get_text_config()
        self.text_config = text
        self.device = thinker.lm_head.weight.device
        self.dtype = thinker.lm_head.weight.dtype
        if self.device.type == "cuda":
            # Padded batches and reused prefixes reach sdpa with a mask, and a masked call may pick
            # cuDNN, which builds a plan per new length (0.7-1.1 s each on an H200, docs/perf-gpu.md):
            # every decode step has a new length. The memory-efficient kernel takes masks as well.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.image_token = int(_first_attr(cfg, "image_token_id", "image_token_index"))
        self.audio_token = int(_first_attr(cfg, "audio_token_id", "audio_token_index"))
        self.merge = int(getattr(cfg.vision_config, "spatial_merge_size", 2))
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
        element = torch.empty((), dtype=self.dtype).element_size()
        per_token = 2 * int(text.num_hidden_layers) * int(text.num_key_value_heads) * head_dim * element
        self.budget = KVBudget(kv_budget_bytes or _default_budget(self.device), per_token)
        # Screenshots repeat from step to step of a GUI session: each is preprocessed once
        # (the fast path's cache; its content keys also fingerprint the images for KV reuse).
        from ..runtime.fast.image_preprocess import install_image_cache

        visual = getattr(getattr(thinker, "model", thinker), "visual", None) or getattr(thinker, "visual", None)
        visual_dtype = next(visual.parameters()).dtype if visual is not None else None
        self._images = install_image_cache(model.processor, capacity=_IMAGE_CACHE_ENTRIES, dtype=visual_dtype)
        self._prepare_lock = threading.Lock()
        self.sessions = SessionStore(max_sessions=max_sessions)
        self.metrics.kv_budget.set(self.budget.budget)
        self._cond = threading.Condition()
        self._inbox: list[_Sequence] = []
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []
        self._batch_kv: list[tuple[Any, Any]] | None = None
        self._batch_mask: Any = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._speech_scheduler: Any = None
        if self.device.type == "cuda" and model.family.key == "qwen3_omni" and model.info.can_speak:
            # The batched Talker's CUDA graphs and Code2Wav plans (~40 s on an H200) are made in
            # its own thread now, while the server starts, not inside the first spoken answers.
            self._speech().start()

    # -- the async side (ServeBackend) ---------------------------------------------------------
    async def stream(self, request: ModelRequest, *, session_id: str | None = None,
                     assistant_prefix: str = "") -> AsyncIterator[ModelChunk]:
        if self._closed:
            raise ModelError("the engine is shut down")
        ids, inputs, blocks = await asyncio.to_thread(self._prepare, request, assistant_prefix)
        self.budget.check_possible(len(ids) + request.settings.max_new_tokens)
        seq = _Sequence(ids=ids, inputs=inputs, settings=request.settings, session_id=session_id,
                        prefix_text=assistant_prefix, blocks=blocks, loop=asyncio.get_running_loop(), queue=asyncio.Queue())
        self._submit(seq)
        try:
            if assistant_prefix:
                yield ModelChunk(text=assistant_prefix)
            while True:
                kind, value = await seq.queue.get()
                if kind == "text":
                    yield ModelChunk(text=value)
                elif kind == "error":
                    raise value
                else:
                    yield ModelChunk(response=value)
                    return
        finally:
            if not seq.finished:
                seq.cancelled = True  # the engine drops it before its next step
                with self._cond:
                    self._cond.notify()

    async def speak_stream(self, text: str, *, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        """Speech of ``text`` chunk by chunk (Qwen3-Omni's streaming Talker; whole for others)."""
        model = self.model
        if model.family.key != "qwen3_omni":
            audio = await model.aspeak(text, voice=voice)
            samples, rate = audio.load()
            yield AudioChunk(samples=np.asarray(samples, dtype=np.float32), rate=rate)
            return
        # Every spoken answer joins one batched Talker (one frame for all streams at once).
        async for chunk in self._speech().stream(text, voice=voice):
            yield AudioChunk(samples=np.asarray(chunk.samples, dtype=np.float32), rate=24_000)

    def _speech(self) -> Any:
        """The Talker's scheduler, built on the first spoken answer (its thread and graphs too)."""
        from .speech_scheduler import SpeechScheduler

        with self._prepare_lock:
            if self._speech_scheduler is None:
                self._speech_scheduler = SpeechScheduler(
                    self.model, prepare_lock=self._prepare_lock, warm_up=self.device.type == "cuda"
                )
            return self._speech_scheduler

    async def aclose(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        if self._speech_scheduler is not None:
            await asyncio.to_thread(self._speech_scheduler.close)
        await self.model.aclose()

    # -- requests in -------------------------------------------------------------------------
    def _prepare(self, request: ModelRequest, prefix: str) -> tuple[list[int], Any, list[MediaBlock]]:
        """Render and preprocess the prompt (runs in a worker thread, many at once)."""
        model = self.model
        with self._prepare_lock:  # the image cache is shared; preprocessing is GIL-bound anyway
            prepared = build_prompt(
                model.processor,
                request.messages,
                tools=request.tools,
                family=model.family,
                image_spec=model.image_spec,
                template_renders_tools=model.template_renders_tools,
                assistant_prefix=prefix,
            )
            last = self._images.last_keys
        inputs = prepared.inputs
        ids = [int(t) for t in inputs["input_ids"][0].tolist()]
        keys = last[0] if last is not None and last[1] is inputs.get("pixel_values") else None
        return ids, inputs, self._media_blocks(ids, inputs, image_keys=keys)

    def _media_blocks(self, ids: list[int], inputs: Any, *, image_keys: list[str] | None = None) -> list[MediaBlock]:
        blocks: list[MediaBlock] = []
        grids = inputs.get("image_grid_thw")
        if grids is not None:
            row = 0
            for n, (start, end) in enumerate(_runs(ids, self.image_token)):
                grid = [int(v) for v in grids[n].tolist()]
                rows = grid[0] * grid[1] * grid[2]
                if image_keys is not None and len(image_keys) == len(grids):
                    key = image_keys[n]
                else:
                    key = content_key(inputs["pixel_values"][row : row + rows], grid)
                blocks.append(MediaBlock("image", start - 1, end, n, key))
                row += rows
        features = inputs.get("input_features")
        if features is not None:
            for n, (start, end) in enumerate(_runs(ids, self.audio_token)):
                blocks.append(MediaBlock("audio", start - 1, end, n, content_key(features[n])))
        if inputs.get("pixel_values_videos") is not None:  # videos are never reused: cut at the start
            first = ids.index(int(_first_attr(self.thinker.config, "video_token_id", "video_token_index")))
            blocks.append(MediaBlock("video", max(first - 1, 0), len(ids), 0, "video"))
        return sorted(blocks, key=lambda b: b.start)

    def _submit(self, seq: _Sequence) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="omni-engine", daemon=True)
                self._thread.start()
            self._inbox.append(seq)
            self.metrics.waiting_sequences.inc()
            self._cond.notify()

    # -- the engine thread -----------------------------------------------------------------------
    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._inbox and not self._running and not self._waiting:
                        self._cond.wait()
                    if self._closed:
                        break
                    self._waiting.extend(self._inbox)
                    self._inbox.clear()
                try:
                    self._drop_cancelled()
                    self._admit()
                    if self._running:
                        self._decode_step()
                    elif self._waiting:
                        with self._cond:
                            self._cond.wait(0.05)
                except Exception as exc:  # a failed step fails its requests, never the server
                    self._fail_running(exc)
        self._fail_all(ModelError("the server is shutting down"))

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self.max_batch:
            seq = self._waiting[0]
            if seq.cancelled:
                self._waiting.popleft()
                self.metrics.waiting_sequences.dec()
                continue
            need = self.budget.need(len(seq.ids) + seq.settings.max_new_tokens)
            session = self.sessions.take(seq.session_id)
            while self.budget.reserved + self.sessions.nbytes + need > self.budget.budget and self.sessions.evict_oldest():
                pass
            if self.budget.reserved + self.sessions.nbytes + need > self.budget.budget:
                if session is not None:
                    self.sessions.put(seq.session_id or "", session)
                return  # waits for running requests to finish
            self._waiting.popleft()
            self.metrics.waiting_sequences.dec()
            seq.reserved = need
            self.budget.reserved += need
            self.metrics.active_sequences.inc()
            try:
                self._prefill(seq, session)
            except Exception as exc:
                self._finish(seq, error=_model_error(exc, self.model))
                continue
            if not seq.finished:
                self._running.append(seq)
            elif seq.session_id is not None and seq.kv is not None:
                self._keep_session(seq, seq.kv)
            self._update_kv_gauges()

    def _prefill(self, seq: _Sequence, session: SessionKV | None) -> None:
        import torch
        from transformers import DynamicCache

        t0 = time.perf_counter()
        positions, _ = self._rope_index(seq.inputs)
        k = reusable_prefix(session.ids, session.blocks, seq.ids, seq.blocks) if session is not None else 0
        cache = DynamicCache(ddp_cache_data=[(kk[:, :, :k], vv[:, :, :k]) for kk, vv in session.kv]) if k else DynamicCache()
        ids = torch.tensor([seq.ids[k:]], dtype=torch.long, device=self.device)
        out = self.thinker.model(
            input_ids=ids,
            attention_mask=torch.ones((1, len(seq.ids)), dtype=torch.long, device=self.device),
            position_ids=positions[:, :, k:].to(self.device),
            past_key_values=cache,
            use_cache=True,
            **self._media_after(seq, k),
        )
        logits = self.thinker.lm_head(out.last_hidden_state[:, -1]).float()[0]
        seq.kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        seq.length = len(seq.ids)
        seq.next_pos = int(positions.max()) + 1
        seq.reused = k
        self.metrics.reused_tokens.inc(k)
        seq.timings["prefill"] = time.perf_counter() - t0
        seq.generator = _generator(seq.settings, self.device)
        self._accept(seq, logits)

    def _rope_index(self, inputs: Any) -> tuple[Any, Any]:
        mask = inputs.get("attention_mask")
        features_mask = inputs.get("feature_attention_mask")
        return self.thinker.get_rope_index(
            inputs["input_ids"],
            inputs.get("image_grid_thw"),
            inputs.get("video_grid_thw"),
            mask,
            False,
            features_mask.sum(-1) if features_mask is not None else None,
            inputs.get("video_second_per_grid"),
        )

    def _media_after(self, seq: _Sequence, k: int) -> dict[str, Any]:
        """The processor's media tensors of the blocks at or after slot ``k`` (those not in the
        reused prefix), for the prefill of the new part."""
        inputs = seq.inputs
        out: dict[str, Any] = {}
        images = [b for b in seq.blocks if b.kind == "image" and b.start >= k]
        if images:
            grids = inputs["image_grid_thw"]
            offsets = [0]
            for g in grids.tolist():
                offsets.append(offsets[-1] + g[0] * g[1] * g[2])
            rows = [inputs["pixel_values"][offsets[b.index] : offsets[b.index + 1]] for b in images]
            out["pixel_values"] = _cat(rows).to(self.device, self.dtype)
            out["image_grid_thw"] = grids[[b.index for b in images]].to(self.device)
        audios = [b for b in seq.blocks if b.kind == "audio" and b.start >= k]
        if audios:
            index = [b.index for b in audios]
            out["input_features"] = inputs["input_features"][index].to(self.device, self.dtype)
            out["feature_attention_mask"] = inputs["feature_attention_mask"][index].to(self.device)
        if inputs.get("pixel_values_videos") is not None and k == 0:
            out["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.device, self.dtype)
            out["video_grid_thw"] = inputs["video_grid_thw"].to(self.device)
        return out

    def _decode_step(self) -> None:
        import torch
        from transformers import DynamicCache

        self._join_new()
        batch = self._running
        tokens = torch.tensor([[s.generated[-1]] for s in batch], dtype=torch.long, device=self.device)
        positions = torch.tensor([s.next_pos for s in batch], dtype=torch.long, device=self.device)
        mask = torch.cat([self._batch_mask, torch.ones((len(batch), 1), dtype=torch.long, device=self.device)], dim=1)
        cache = DynamicCache(ddp_cache_data=self._batch_kv)
        out = self.thinker.model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions.view(1, -1, 1).expand(3, -1, 1),
            past_key_values=cache,
            use_cache=True,
        )
        logits = self.thinker.lm_head(out.last_hidden_state[:, -1]).float()
        self._batch_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self._batch_mask = mask
        self.metrics.observe_batch(len(batch))
        for i, seq in enumerate(batch):
            seq.length += 1
            seq.next_pos += 1
            self._accept(seq, logits[i])
        done = [i for i, s in enumerate(batch) if s.finished]
        for i in done:
            if batch[i].session_id is not None and batch[i].error is None:
                self._keep_session(batch[i], self._row_kv(i, batch[i].length))
        if done:
            self._leave(done)
        self._update_kv_gauges()

    # -- the batch cache: rows join and leave between steps ---------------------------------------
    def _join_new(self) -> None:
        """Put prefilled sequences into the batch cache (left-padded to a common length)."""
        import torch

        fresh = [s for s in self._running if s.kv is not None]
        if not fresh:
            return
        old = [s for s in self._running if s.kv is None]
        width = max(s.length for s in self._running)
        rows: list[list[tuple[Any, Any]]] = []
        for seq in self._running:
            rows.append(seq.kv if seq.kv is not None else self._row_kv(old.index(seq), seq.length))
        layers = len(rows[0])
        self._batch_kv = [
            (torch.cat([_left_pad(r[i][0], width) for r in rows]), torch.cat([_left_pad(r[i][1], width) for r in rows]))
            for i in range(layers)
        ]
        self._batch_mask = torch.stack(
            [torch.cat([torch.zeros(width - s.length, dtype=torch.long), torch.ones(s.length, dtype=torch.long)]) for s in self._running]
        ).to(self.device)
        for seq in fresh:
            seq.kv = None

    def _row_kv(self, row: int, length: int) -> list[tuple[Any, Any]]:
        """One batch row's own KV (its last ``length`` slots)."""
        return [(k[row : row + 1, :, k.shape[2] - length :], v[row : row + 1, :, v.shape[2] - length :]) for k, v in self._batch_kv]

    def _leave(self, rows: list[int]) -> None:
        import torch

        gone = set(rows)
        keep = [i for i in range(len(self._running)) if i not in gone]
        self._running = [self._running[i] for i in keep]
        if not keep:
            self._batch_kv = None
            self._batch_mask = None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        width = max(s.length for s in self._running)
        self._batch_kv = [(k.index_select(0, index)[:, :, -width:], v.index_select(0, index)[:, :, -width:]) for k, v in self._batch_kv]
        self._batch_mask = self._batch_mask.index_select(0, index)[:, -width:]

    def _drop_cancelled(self) -> None:
        """Forget requests whose client went away (all running rows are in the batch cache here:
        every decode step joins the newly prefilled ones)."""
        rows = [i for i, s in enumerate(self._running) if s.cancelled]
        if not rows:
            return
        for i in rows:
            self._running[i].finished = True
            self._release(self._running[i])
        self._leave(rows)
        self._update_kv_gauges()

    # -- tokens out --------------------------------------------------------------------------------
    def _accept(self, seq: _Sequence, logits: Any) -> None:
        """Sample the next token, stream its text, and decide whether the request is done."""
        self._take_token(seq, seq.generator(logits))

    def _take_token(self, seq: _Sequence, token: int) -> None:
        """Stream a chosen token's text and decide whether the request is done."""
        if not seq.generated:
            seq.timings["first_token"] = time.perf_counter() - seq.started
        seq.generated.append(token)
        if token in self.stop_ids:
            seq.finish_reason = "stop"
            self._finish(seq)
            return
        text = self._raw_text(seq)
        if seq.settings.stop and any(s in text for s in seq.settings.stop):
            seq.finish_reason = "stop"
            self._finish(seq)
            return
        # Hold back a split multi-byte character, and a tail that may be the start of a stop string.
        held = max((len(s) - 1 for s in seq.settings.stop), default=0)
        ready = len(text) - held
        if ready > seq.emitted and not text[:ready].endswith("\ufffd"):
            seq.post("text", text[seq.emitted : ready])
            seq.emitted = ready
        if len(seq.generated) >= seq.settings.max_new_tokens:
            seq.finish_reason = "length"
            self._finish(seq)

    def _raw_text(self, seq: _Sequence) -> str:
        ids = seq.generated[:-1] if seq.generated and seq.generated[-1] in self.stop_ids else seq.generated
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _text(self, seq: _Sequence) -> str:
        """The answer so far; ends before a stop token or the first stop string (not included)."""
        text = self._raw_text(seq)
        cuts = [text.find(s) for s in seq.settings.stop if s and s in text]
        return text[: min(cuts)] if cuts else text

    def _finish(self, seq: _Sequence, *, error: Exception | None = None) -> None:
        seq.finished = True
        seq.error = error
        if error is not None:
            seq.post("error", error)
            self._release(seq)
            return
        text = self._text(seq)
        if len(text) > seq.emitted:
            seq.post("text", text[seq.emitted :])
            seq.emitted = len(text)
        seq.timings["total"] = time.perf_counter() - seq.started
        response = ModelResponse(
            text=seq.prefix_text + text,
            usage=Usage(prompt_tokens=len(seq.ids), completion_tokens=len(seq.generated), cached_tokens=seq.reused),
            timings=seq.timings,
            finish_reason=seq.finish_reason,
            model=self.info.name,
        )
        seq.post("done", response)
        self._release(seq)

    def _release(self, seq: _Sequence) -> None:
        if seq.reserved:
            self.budget.reserved -= seq.reserved
            seq.reserved = 0
            self.metrics.active_sequences.dec()

    def _keep_session(self, seq: _Sequence, kv: list[tuple[Any, Any]]) -> None:
        ids = (seq.ids + seq.generated)[: seq.length]
        nbytes = self.budget.need(len(ids))
        entry = SessionKV(ids=ids, kv=[(k.clone(), v.clone()) for k, v in kv], blocks=list(seq.blocks), nbytes=nbytes)
        self.sessions.put(seq.session_id or "", entry)

    def _update_kv_gauges(self) -> None:
        live = sum(s.length for s in self._running)
        self.metrics.kv_bytes.set(self.budget.need(live) + self.sessions.nbytes)
        self.metrics.kv_sessions.set(len(self.sessions.items))

    def _fail_running(self, exc: Exception) -> None:
        error = _model_error(exc, self.model)
        for seq in list(self._running):
            if not seq.finished:
                self._finish(seq, error=error)
        self._running = []
        self._batch_kv = None
        self._batch_mask = None
        self._update_kv_gauges()

    def _fail_all(self, error: Exception) -> None:
        self._fail_running(error)
        for seq in [*self._waiting, *self._inbox]:
            seq.finished = True
            seq.post("error", error)
        self._waiting.clear()
        self._inbox.clear()
        self.metrics.waiting_sequences.set(0)


# ------------------------------------------------------------------------------------- helpers


def _first_attr(obj: Any, *names: str) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    raise ModelError(f"{type(obj).__name__} has none of {names}")


def _runs(ids: list[int], token: int) -> list[tuple[int, int]]:
    """[start, end) of each run of ``token`` in ``ids``."""
    runs: list[tuple[int, int]] = []
    i = 0
    n = len(ids)
    while i < n:
        if ids[i] == token:
            j = i
            while j < n and ids[j] == token:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    return runs


def _cat(tensors: list[Any]) -> Any:
    import torch

    return torch.cat(tensors)


def _left_pad(t: Any, width: int) -> Any:
    import torch.nn.functional as F

    missing = width - t.shape[2]
    return F.pad(t, (0, 0, missing, 0)) if missing > 0 else t


def _default_budget(device: Any) -> int:
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * _GPU_FREE_FRACTION)
    return _CPU_DEFAULT_BUDGET


def _generator(settings: GenerationSettings, device: Any) -> Any:
    from ..runtime.fast.thinker import _sampler

    return _sampler(settings, device)


def _model_error(exc: Exception, model: Any) -> Exception:
    if isinstance(exc, (ModelError, CapacityError)):
        return exc
    if "out of memory" in str(exc).lower():
        return CapacityError(f"{model.family.label} ran out of memory serving this batch: {str(exc).splitlines()[0]}", retriable=True)
    return ModelError(f"{model.family.label} generation failed: {type(exc).__name__}: {exc}")
