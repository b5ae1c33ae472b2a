"""Streaming speech for many streams at once: one Talker frame for every active stream.

``StreamingSpeaker`` runs one stream; sixteen spoken answers in sixteen threads then take turns on
the GPU (each frame a Talker step + 15 code-predictor steps at batch 1), so the Talker fell
behind real time under load. Here every frame is ONE batched Talker step and ONE batched
code-predictor run for all active streams:

- The Talker's KV lives in a row-static cache ``[rows + 1]``: each stream owns a row and writes
  at its own slot (= its position; text-only turns put every M-RoPE axis at the slot). The last
  row is scratch: padding entries of a batch bucket write there and are never read.
- The code predictor's 15 inner steps are in lockstep for every stream (same positions), so its
  KV is a plain batch ``[bucket, ...]`` overwritten every frame.
- On CUDA each of the two runs is captured as a CUDA graph per batch bucket (1, 2, 4, 8, ...;
  the Talker step also per attention span 256 .. max_tokens); on CPU the same functions run
  eagerly, padded to the same buckets.
- Streams that join together with prompts of one length are prefilled in one batched pass.
- Sampling the first code of a frame applies transformers' processors for all rows at once
  (each is row-wise; every stream keeps its own history and generator), so a stream's codes
  do not depend on its neighbours; Code2Wav decodes each stream's chunks as
  ``StreamingSpeaker`` does, batching the calls whose inputs have one shape.

The maths is ``StreamingSpeaker``'s static engine, row by row (the tests compare codes and
waveforms of a stream alone and inside a batch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ...exceptions import ModelError, UserError
from .cuda_sync import capture_graph, synchronize
from .row_cache import RowKVCache
from .streaming_speech import SpeechChunk, StreamingSpeaker, pick_residual_code, residual_uniforms

__all__ = [
    "BatchedFrameEngine", "BatchedSpeaker", "RowKVCache", "SpeechJob", "SpeechStreamState", "attention_rows", "bucket_for",
    "speech_job",
]  # fmt: skip


def bucket_for(n: int, largest: int) -> int:
    """The smallest power of two >= n (at most ``largest``): the batch sizes graphs are captured for."""
    if n < 1 or n > largest:
        raise ValueError(f"batch of {n} outside 1..{largest}")
    bucket = 1
    while bucket < n:
        bucket *= 2
    return min(bucket, largest)


def attention_rows(q: Any, k: Any, v: Any, valid: Any, scale: float) -> Any:
    """One query per row and head. q [B, Hq, 1, D]; k/v [B, Hkv, L, D]; valid [B, L] (or [L]).

    ``layers.attention_decode`` with a batch axis: the query heads of a KV group are the rows of
    one product (K/V never repeated), softmax in float32, masked slots at -inf."""
    import torch

    b, hq, _, d = q.shape
    hkv, length = k.shape[1], k.shape[2]
    qg = q.reshape(b, hkv, hq // hkv, d)
    scores = torch.matmul(qg, k.transpose(-1, -2)).float() * scale  # [B, Hkv, G, L]
    scores = scores.masked_fill(~valid.view(-1, 1, 1, length), float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v).reshape(b, hq, 1, d)


class BatchedFrameEngine:
    """The Talker step and the code predictor's 15 steps for a batch of streams at once."""

    def __init__(self, talker: Any, *, rows: int, max_tokens: int, groups: int, graphs: bool) -> None:
        import torch

        from .layers import TextStack
        from .moe_kernels import triton_available

        self.talker = talker
        self.cp = talker.code_predictor
        device = talker.codec_head.weight.device
        dtype = talker.codec_head.weight.dtype
        self.device, self.dtype, self.groups, self.max_tokens = device, dtype, groups, max_tokens
        self.talker_stack = TextStack(talker.model, talker.codec_head)
        self.cp_stack = TextStack(self.cp.model, None)
        self.use_triton = triton_available(device)
        self.buckets = _buckets(rows)
        largest = self.buckets[-1]
        self.cache = RowKVCache(
            num_layers=len(self.talker_stack.layers), num_kv_heads=self.talker_stack.num_kv_heads,
            head_dim=self.talker_stack.head_dim, rows=rows, row_tokens=max_tokens, dtype=dtype, device=device,
            owner="the batched Talker's KV cache", remedy="lower max_streams or max_tokens",
        )  # fmt: skip
        cs = self.cp_stack
        shape = (len(cs.layers), largest, cs.num_kv_heads, groups, cs.head_dim)
        self.cp_k = torch.zeros(shape, dtype=dtype, device=device)
        self.cp_v = torch.zeros(shape, dtype=dtype, device=device)
        hidden = talker.codec_head.weight.shape[1]
        self.embed_buf = torch.zeros((largest, 1, hidden), dtype=dtype, device=device)
        self.row_buf = torch.full((largest,), rows, dtype=torch.long, device=device)
        self.slot_buf = torch.zeros((largest,), dtype=torch.long, device=device)
        self.past_hidden_buf = torch.zeros((largest, 1, hidden), dtype=dtype, device=device)
        self.code0_buf = torch.zeros((largest, 1), dtype=torch.long, device=device)
        self.slots = torch.arange(max_tokens, device=device)
        self.cp_slots = torch.arange(groups, device=device)
        self.cp_prefill_pos = torch.arange(2, device=device).view(1, 2)
        self.cp_pos = [torch.tensor([[i]], device=device) for i in range(groups)]
        # Residual codes sampled per stream when it samples (streaming_speech._StaticFrameEngine):
        # a mask and the stream's own draws, so one graph serves greedy and sampled rows.
        self.cp_vocab = int(self.cp.lm_head[0].weight.shape[0])
        self.cp_sample_buf = torch.zeros((largest, 1), dtype=torch.bool, device=device)
        self.cp_uniform_buf = torch.full((groups - 1, largest, self.cp_vocab), 0.5, dtype=torch.float32, device=device)
        self.graphs = bool(graphs and device.type == "cuda")
        self.lengths = _lengths(max_tokens)
        """Attention spans of the Talker step: a short message does not read the whole row."""
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        """One memory pool for every captured graph: they never run at the same time and their
        outputs are copied right after each replay."""
        self._talker_graphs: dict[Any, tuple[Any, Any]] = {}
        self._cp_graphs: dict[Any, tuple[Any, Any]] = {}

    # -- the batched maths (graph-capturable: static shapes, device-side indices) ----------------
    def _talker_step(self, b: int, length: int) -> tuple[Any, Any]:
        """Rows ``row_buf[:b]`` take ``embed_buf[:b]`` at slots ``slot_buf[:b]`` (all < ``length``),
        attending over their first ``length`` slots -> (hidden, logits)."""
        import torch.nn.functional as F

        from .layers import rms_norm

        stack = self.talker_stack
        x = self.embed_buf[:b]
        rows, slots = self.row_buf[:b], self.slot_buf[:b]
        cos, sin = stack.rope(x, slots.view(b, 1))
        valid = self.slots[:length].view(1, -1) <= slots.view(-1, 1)  # [b, length]
        for i, w in enumerate(stack.layers):
            q, k, v = stack._pre_attention(x, w.ln1, w.q, w.k, w.v, w.q_norm, w.k_norm, cos, sin)
            kc, vc = self.cache.layer(i)
            kc[rows, :, slots] = k[:, :, 0]
            vc[rows, :, slots] = v[:, :, 0]
            keys = kc[:, :, :length].index_select(0, rows)
            a = attention_rows(q, keys, vc[:, :, :length].index_select(0, rows), valid, stack.scale)
            x = x + F.linear(a.transpose(1, 2).reshape(b, 1, -1), w.o)
            h = rms_norm(x, w.ln2, stack.eps)
            x = self._moe(w, x, h) if w.router is not None else stack._mlp_from(w, x, h)
        return stack.head(x, return_hidden=True)

    def _moe(self, w: Any, x: Any, h: Any) -> Any:
        """``TextStack._route`` + ``_moe_decode`` for b tokens: each token's chosen experts read in
        place (``expert_gemv`` over b x top-k slots), plus the gated shared expert."""
        import torch
        import torch.nn.functional as F

        from .moe_kernels import expert_gemv

        stack = self.talker_stack
        b = h.shape[0]
        flat = h.view(b, -1)
        probs = torch.softmax(F.linear(flat, w.router).float(), dim=-1)
        top_w, top_i = torch.topk(probs, stack.top_k, dim=-1)
        if stack.norm_topk:
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        top_w = top_w.to(flat.dtype)
        xs = flat.repeat_interleave(stack.top_k, dim=0)
        ids = top_i.reshape(-1)
        gu = expert_gemv(w.gate_up, xs, ids, use_triton=self.use_triton)
        out = expert_gemv(w.down, stack._expert_act(gu), ids, use_triton=self.use_triton).view(b, stack.top_k, -1)
        out = out * top_w.unsqueeze(-1)
        if w.shared is not None:
            g, u, d, gate = w.shared
            shared = torch.sigmoid(F.linear(flat, gate)) * F.linear(F.silu(F.linear(flat, g)) * F.linear(flat, u), d)
            out = torch.cat((out, shared.unsqueeze(1)), dim=1)
        return x + out.sum(dim=1).view_as(x)

    def _cp_layers(self, x: Any, b: int, position_ids: Any, start: int, valid: Any | None) -> Any:
        """The code predictor's layers over x [b, n, H] written at slots [start, start + n)."""
        import torch.nn.functional as F

        from .layers import attention_prefill, rms_norm

        stack = self.cp_stack
        n = x.shape[1]
        cos, sin = stack.rope(x, position_ids)
        for i, w in enumerate(stack.layers):
            q, k, v = stack._pre_attention(x, w.ln1, w.q, w.k, w.v, w.q_norm, w.k_norm, cos, sin)
            kc, vc = self.cp_k[i, :b], self.cp_v[i, :b]
            kc[:, :, start : start + n] = k
            vc[:, :, start : start + n] = v
            if valid is None:
                a = attention_prefill(q, kc, vc, start, stack.scale)
            else:
                a = attention_rows(q, kc, vc, valid, stack.scale)
            x = x + F.linear(a.transpose(1, 2).reshape(b, n, -1), w.o)
            h = rms_norm(x, w.ln2, stack.eps)
            x = stack._mlp_from(w, x, h)
        return stack.head(x[:, -1:])

    def _cp_run(self, b: int) -> tuple[Any, Any]:
        """The code predictor for ``b`` frames: (codes 1..15 [b, 15], summed codec embedding [b, 1, H])."""
        import torch
        import torch.nn.functional as F

        embeddings = self.cp.model.get_input_embeddings()
        first = self.talker.get_input_embeddings()(self.code0_buf[:b])
        x = torch.cat((self.past_hidden_buf[:b], first), dim=1)
        h = self._cp_layers(x, b, self.cp_prefill_pos, 0, None)
        hiddens, codes = [first], []
        for step in range(self.groups - 1):
            if step > 0:
                slot = step + 1
                h = self._cp_layers(hiddens[-1], b, self.cp_pos[slot], slot, self.cp_slots <= slot)
            scores = F.linear(h[:, -1], self.cp.lm_head[step].weight).float()
            code = pick_residual_code(scores, self.cp_sample_buf[:b], self.cp_uniform_buf[step, :b])
            codes.append(code)
            hiddens.append(embeddings[step](code))
        return torch.cat(codes, dim=1), torch.cat(hiddens, dim=1).sum(1, keepdim=True)

    # -- running it ------------------------------------------------------------------------------
    def _replay(self, graphs: dict[Any, tuple[Any, Any]], fn: Any, *key: int) -> Any:
        if not self.graphs:
            return fn(*key)
        if key not in graphs:
            graphs[key] = self._capture(lambda: fn(*key))
        graph, out = graphs[key]
        graph.replay()
        return out

    def _capture(self, fn: Any) -> tuple[Any, Any]:
        """Capture ``fn`` (``cuda_sync.capture_graph``: the Thinker's thread may be launching work
        at the same time); warm-up and capture write only the scratch row."""
        keep_rows = self.row_buf.clone()
        self.row_buf.fill_(self.cache.scratch)
        try:
            return capture_graph(fn, pool=self._pool)
        finally:
            self.row_buf.copy_(keep_rows)

    def prefill_rows(self, embeds: Any, rows: Sequence[int]) -> tuple[Any, Any]:
        """Joining streams' Talker prompts (one length, embeds [m, n, H]) into their rows at slots
        [0, n), as ``TextStack.forward`` would one by one (eager) -> (last hidden [m, 1, H], scores [m, V])."""
        import torch

        from .layers import attention_prefill

        stack = self.talker_stack
        m, n, _ = embeds.shape
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        x = embeds
        cos, sin = stack.rope(x, torch.arange(n, device=self.device).view(1, n))
        for i, w in enumerate(stack.layers):
            q, k, v = stack._pre_attention(x, w.ln1, w.q, w.k, w.v, w.q_norm, w.k_norm, cos, sin)
            kc, vc = self.cache.layer(i)
            kc[index, :, :n] = k
            vc[index, :, :n] = v
            a = attention_prefill(q, k, v, 0, stack.scale)  # a new row attends to its own prompt only
            x, h = stack._post_attention(x, a.transpose(1, 2).reshape(m, n, -1), w.o, w.ln2)
            x = stack._mlp_from(w, x, h)
        hidden, logits = stack.head(x[:, -1:], return_hidden=True)
        return hidden, logits[:, -1].float()

    def code_predictor(self, past_hidden: Any, code0: Any, *, bucket: int | None = None, samples: Sequence[bool] = (),
                       generators: Sequence[Any] = ()) -> tuple[Any, Any]:  # fmt: skip
        """past_hidden [n, 1, H], code0 [n, 1] -> (residual codes [n, 15], summed embedding [n, 1, H]);
        row i's residuals sampled with ``generators[i]`` where ``samples[i]`` (greedy otherwise)."""
        import torch

        n = past_hidden.shape[0]
        b = bucket or bucket_for(n, self.buckets[-1])
        self.past_hidden_buf[:n].copy_(past_hidden)
        self.code0_buf[:n].copy_(code0)
        flags = list(samples) or [False] * n
        self.cp_sample_buf[:n].copy_(torch.tensor(flags, dtype=torch.bool).view(n, 1), non_blocking=True)
        for i, sample in enumerate(flags):
            if sample:
                self.cp_uniform_buf[:, i].copy_(residual_uniforms(self.groups, self.cp_vocab, generators[i], self.device))
        codes, summed = self._replay(self._cp_graphs, self._cp_run, b)
        return codes[:n].clone(), summed[:n].clone()

    def step(self, embeds: Any, rows: Sequence[int], slots: Sequence[int], *, bucket: int | None = None) -> tuple[Any, Any]:
        """The Talker for n streams: embeds [n, 1, H] into ``rows`` at ``slots`` -> (hidden [n, 1, H], scores [n, V])."""
        import torch

        n = embeds.shape[0]
        b = bucket or bucket_for(n, self.buckets[-1])
        self.embed_buf[:n].copy_(embeds)
        index = torch.tensor([list(rows) + [self.cache.scratch] * (b - n), list(slots) + [0] * (b - n)], dtype=torch.long)
        self.row_buf[:b].copy_(index[0], non_blocking=True)
        self.slot_buf[:b].copy_(index[1], non_blocking=True)
        length = self.length_for(max(slots) + 1)
        hidden, logits = self._replay(self._talker_graphs, self._talker_step, b, length)
        return hidden[:n].clone(), logits[:n, -1].float()

    def warm_up(self) -> None:
        """Capture every bucket's graphs now (on CUDA), not inside the first frames that need them."""
        if not self.graphs:
            return
        for b in self.buckets:
            self._replay(self._cp_graphs, self._cp_run, b)
            for length in self.lengths:
                self.row_buf[:b].fill_(self.cache.scratch)
                self._replay(self._talker_graphs, self._talker_step, b, length)

    def length_for(self, needed: int) -> int:
        """The attention length bucket covering ``needed`` slots (a graph per batch x length)."""
        return next(length for length in self.lengths if length >= needed)


def _lengths(max_tokens: int, smallest: int = 256) -> list[int]:
    out = [min(smallest, max_tokens)]
    while out[-1] < max_tokens:
        out.append(min(out[-1] * 2, max_tokens))
    return out


def _buckets(rows: int) -> list[int]:
    out = [1]
    while out[-1] < rows:
        out.append(out[-1] * 2)
    return out


@dataclass
class SpeechJob:
    """One text to speak: the forced speech turn and how the Talker samples (``StreamingSpeaker.stream``'s arguments)."""

    input_ids: Any
    text_ids: list[int]
    speaker_id: int
    stop_ids: list[int]
    max_frames: int
    min_frames: int = 2
    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    seed: int | None = None
    chunk_frames: int = 4
    max_chunk_frames: int = 16
    left_context: int = 25

    def stream_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``StreamingSpeaker.stream`` after ``input_ids`` and ``text_ids``."""
        out = dict(self.__dict__)
        out.pop("input_ids")
        out.pop("text_ids")
        return out


def speech_job(model: Any, text: str, *, voice: str | None = None, settings: Any = None, chunk_frames: int = 4, prompt_ids: Any = None) -> SpeechJob:
    """The job ``QwenOmniModel.speak_stream`` runs for ``text`` (one place for both paths, so a
    stream alone and in a batch get the same prompt, frame bounds and sampling). ``prompt_ids``:
    the speech turn's prompt if the caller cached it (it never changes for a model)."""
    from ...models.base import ModelRequest
    from ..generation import eos_token_ids
    from ..speech import resolve_voice, speech_generation_extras, speech_messages

    text = text.strip()
    if not text:
        raise UserError("speak_stream() needs non-empty text")
    settings = settings or model.speech_settings
    voice_name = resolve_voice(model.family, voice)
    tokenizer = model.processor.tokenizer
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if prompt_ids is None:
        prompt_ids = model.prepare(ModelRequest(messages=speech_messages(model.family))).inputs["input_ids"]
    stop = eos_token_ids(tokenizer)
    _, talker = speech_generation_extras(
        model.family, prompt_length=int(prompt_ids.shape[-1]), text_ids=text_ids, stop_id=stop[0], settings=settings
    )
    return SpeechJob(
        input_ids=prompt_ids, text_ids=list(text_ids), speaker_id=int(model.model.config.talker_config.speaker_id[voice_name.lower()]),
        stop_ids=list(stop), max_frames=int(talker["max_new_tokens"]), min_frames=int(talker["min_new_tokens"]), do_sample=True,
        temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty, seed=settings.seed, chunk_frames=chunk_frames,
    )  # fmt: skip


@dataclass(eq=False)
class SpeechStreamState:
    """A stream inside the batch: its row, slot, sampling state, frames and what was emitted."""

    job: SpeechJob
    row: int
    slot: int
    past_hidden: Any
    scores: Any
    trailing: Any
    pad: Any
    seen: Any
    """[1, V] bool: the codes this stream has chosen (its repetition penalty)."""
    warpers: Any
    generator: Any
    started: float
    prompt: Any = None
    """The Talker prompt embeddings until the prefill has run."""
    max_frames: int = 0
    """The job's frame cap, or what the row holds (a generous per-token cap can exceed a row:
    that speech ends at the row's end, ~5 minutes at 4096 slots)."""
    frames: list[Any] = field(default_factory=list)
    step: int = 0
    decoded: int = 0
    want: int = 0
    emitted: int = 0
    done: bool = False
    codes: Any = None
    """[1, groups, frames] once the stream is done (checks and replays)."""


@dataclass
class _Decode:
    stream: SpeechStreamState
    start: int
    end: int


class BatchedSpeaker:
    """Streams join (``add``), advance together one codec frame per ``frame()``, and leave."""

    def __init__(self, model: Any, processor: Any, *, max_streams: int = 16, max_tokens: int = 4096, graphs: bool = True) -> None:
        self.single = StreamingSpeaker(model, processor, max_tokens=max_tokens, graphs=False)
        self.device = self.single.device
        self.groups = int(model.config.talker_config.num_code_groups)
        self.eos_code = int(model.config.talker_config.codec_eos_token_id)
        self.engine = BatchedFrameEngine(model.talker, rows=max_streams, max_tokens=max_tokens, groups=self.groups, graphs=graphs)
        self.code2wav = model.code2wav
        self.upsample = int(self.code2wav.total_upsample)
        self.free_rows = list(range(max_streams))
        self.streams: list[SpeechStreamState] = []
        import torch

        vocab = int(model.talker.codec_head.weight.shape[0])
        suppressed = torch.tensor(self.single.suppressed_codes(), dtype=torch.long, device=self.device)
        codes = torch.arange(vocab, device=self.device)
        self.suppress_mask = torch.isin(codes, suppressed)
        self.eos_mask = codes == self.eos_code
        self._no_codes = torch.zeros((1, vocab), dtype=torch.bool, device=self.device)
        self.profile = False
        """Benchmarks: synchronise after each phase of a frame and sum its time in ``phase_seconds``."""
        self.phase_seconds: dict[str, float] = {}

    @property
    def max_streams(self) -> int:
        return self.engine.cache.rows

    def warm_up(self, *, left_context: int = 25, max_chunk_frames: int = 16) -> None:
        """CUDA graphs of every bucket and Code2Wav plans for every (bucket, length) a stream gives it."""
        import torch

        if self.device.type != "cuda":
            return
        self.engine.warm_up()
        with torch.inference_mode():
            for b in self.engine.buckets:
                for length in range(1, left_context + max_chunk_frames + 1):
                    self.code2wav(torch.zeros((b, self.groups, length), dtype=torch.long, device=self.device))
        synchronize(self.device)

    def add(self, job: SpeechJob, *, started: float | None = None) -> SpeechStreamState:
        """Prefill one new stream into a free row (between frames); raises if it cannot start."""
        (result,) = self.add_many([job], started=[started])
        if isinstance(result, Exception):
            raise result
        return result

    def add_many(self, jobs: Sequence[SpeechJob], *, started: Sequence[float | None] | None = None) -> list[SpeechStreamState | Exception]:
        """Prefill new streams into free rows (between frames), those with prompts of one length in
        ONE batched prefill (speech prompts mostly have one length: 16 answers arriving together do
        not prefill one after another). ``started``: when each request came in (``perf_counter``),
        so chunk times include the wait. Per job: its stream, or the error that stopped it alone."""
        import torch

        if len(jobs) > len(self.free_rows):
            raise ModelError(f"{len(jobs)} streams but {len(self.free_rows)} free Talker rows (admit only what fits)")
        times = list(started) if started is not None else [None] * len(jobs)
        results: list[SpeechStreamState | Exception] = []
        groups: dict[int, list[int]] = {}
        with torch.inference_mode():
            for i, job in enumerate(jobs):
                try:
                    results.append(self._new_stream(job, times[i]))
                except Exception as exc:  # noqa: BLE001 - this job cannot start; the others can
                    results.append(exc)
                    continue
                groups.setdefault(results[-1].slot, []).append(i)
            for members in groups.values():
                streams = [results[i] for i in members]
                rows = [self.free_rows.pop(0) for _ in streams]
                try:
                    embeds = torch.cat([s.prompt for s in streams])  # type: ignore[union-attr]
                    hidden, scores = self.engine.prefill_rows(embeds, rows)
                except Exception as exc:  # noqa: BLE001 - these streams cannot start; the others can
                    self.free_rows = sorted(self.free_rows + rows)
                    for i in members:
                        results[i] = exc
                    continue
                for k, (stream, row) in enumerate(zip(streams, rows)):
                    stream.row, stream.past_hidden, stream.scores, stream.prompt = row, hidden[k : k + 1], scores[k : k + 1], None  # type: ignore[union-attr]
                    self.streams.append(stream)  # type: ignore[arg-type]
        return results

    def _new_stream(self, job: SpeechJob, started: float | None) -> SpeechStreamState:
        """A stream's Talker inputs and sampling state (``StreamingSpeaker``'s own functions), not yet prefilled."""
        import torch

        if job.chunk_frames < 1 or job.max_chunk_frames < 1 or job.left_context < 0:
            raise UserError("chunk_frames and max_chunk_frames must be >= 1, left_context >= 0")
        single = self.single
        input_ids = job.input_ids.to(self.device)
        forced = torch.tensor([list(job.text_ids) + [int(job.stop_ids[0])]], dtype=torch.long, device=self.device)
        parts = single.talker_inputs(input_ids, torch.cat((input_ids, forced), dim=1), job.speaker_id, job.stop_ids)
        slot = parts["embeds"].shape[1]
        room = self.engine.max_tokens - slot - 1  # frames a row holds after the prompt
        if room < max(job.min_frames, 2):
            raise UserError(
                f"this message needs at least {slot + max(job.min_frames, 2) + 1} Talker KV slots; the batched "
                f"Talker has {self.engine.max_tokens} per stream (max_tokens)"
            )
        _, warpers = single._talker_processors(
            do_sample=job.do_sample, temperature=job.temperature, top_k=job.top_k, top_p=job.top_p,
            repetition_penalty=job.repetition_penalty, min_new_tokens=max(job.min_frames, 2),
        )  # fmt: skip
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(job.seed)) if job.seed is not None else generator.seed()
        return SpeechStreamState(
            job=job, row=-1, slot=slot, past_hidden=None, scores=None, trailing=parts["trailing"],
            pad=parts["pad"], seen=self._no_codes, warpers=warpers, generator=generator,
            started=time.perf_counter() if started is None else started,
            want=job.chunk_frames,
            max_frames=min(job.max_frames, room), prompt=parts["embeds"],
        )  # fmt: skip

    def remove(self, stream: SpeechStreamState) -> None:
        """The stream leaves (done, cancelled or failed): its row is free for the next one."""
        if stream in self.streams:
            self.streams.remove(stream)
            self.free_rows.append(stream.row)
            self.free_rows.sort()

    def frame(self) -> list[tuple[SpeechStreamState, SpeechChunk | Exception]]:
        """One codec frame for every active stream; returns the chunks that became playable (or a
        stream's error). Streams that finished are marked ``done``; the caller removes them."""
        import torch

        with torch.inference_mode():
            mark = self._phase("", 0.0)
            going = self._first_codes()
            mark = self._phase("sample", mark)
            if going:
                self._advance(going)
            mark = self._phase("talker", mark)
            out = self._decode_due()
            self._phase("code2wav", mark)
            return out

    def _phase(self, name: str, since: float) -> float:
        """With ``profile`` on: wait for the GPU and add the time since ``since`` to ``phase_seconds[name]``."""
        if not self.profile:
            return 0.0
        import torch

        if self.device.type == "cuda":
            synchronize(self.device)
        now = time.perf_counter()
        if name:
            self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + now - since
        return now

    def _first_codes(self) -> list[tuple[SpeechStreamState, Any]]:
        """Each stream's first code of this frame; streams with the same sampling settings in one
        batched pass (``_sample``), each with its own history and generator."""
        import torch

        groups: dict[tuple[Any, ...], list[SpeechStreamState]] = {}
        for s in self.streams:
            j = s.job
            groups.setdefault((j.do_sample, j.temperature, j.top_k, j.top_p, j.repetition_penalty), []).append(s)
        picks: dict[int, Any] = {}
        for members in groups.values():
            codes = self._sample(members)
            for i, s in enumerate(members):
                picks[id(s)] = codes[i : i + 1]
        ordered = [picks[id(s)] for s in self.streams]
        values = torch.cat(ordered).view(-1).tolist() if ordered else []  # the frame's one host sync
        going = []
        for s, code0, value in zip(self.streams, ordered, values):
            if int(value) == self.eos_code:
                s.done = True
            else:
                going.append((s, code0))
        return going

    def _sample(self, streams: list[SpeechStreamState]) -> Any:
        """transformers' processors and warpers as ``StreamingSpeaker`` builds them (repetition
        penalty over each stream's own codes, suppressed control codes, no EOS before the minimum
        length; temperature, top-k, top-p), computed for the rows at once: each is row-wise, so a
        row's scores are the ones it gets alone. Then greedy, or a draw from each stream's generator."""
        import torch

        job = streams[0].job
        scores = torch.cat([s.scores for s in streams])
        penalty = job.repetition_penalty
        if penalty != 1.0:
            seen = torch.cat([s.seen for s in streams])
            scores = torch.where(seen, torch.where(scores < 0, scores * penalty, scores / penalty), scores)
        scores = torch.where(self.suppress_mask, -float("inf"), scores)
        young = [s.step < max(s.job.min_frames, 2) for s in streams]
        if any(young):
            rows = torch.tensor(young, device=self.device).view(-1, 1)
            scores = torch.where(rows & self.eos_mask, -float("inf"), scores)
        if job.do_sample:
            scores = streams[0].warpers(None, scores)
            probs = torch.softmax(scores.float(), dim=-1)
            codes = torch.cat([torch.multinomial(probs[i : i + 1], 1, generator=s.generator) for i, s in enumerate(streams)])
        else:
            codes = scores.argmax(dim=-1, keepdim=True)
        if penalty != 1.0:
            seen = seen.scatter(1, codes, True)
            for i, s in enumerate(streams):
                s.seen = seen[i : i + 1]
        return codes

    def _advance(self, going: list[tuple[SpeechStreamState, Any]]) -> None:
        """The code predictor and the Talker step for the streams that did not stop."""
        import torch

        streams = [s for s, _ in going]
        code0 = torch.cat([c for _, c in going])
        residual, summed = self.engine.code_predictor(torch.cat([s.past_hidden for s in streams]), code0,
                                                      samples=[s.job.do_sample for s in streams], generators=[s.generator for s in streams])  # fmt: skip
        text = torch.cat([s.trailing[:, s.step : s.step + 1] if s.step < s.trailing.shape[1] else s.pad for s in streams])
        hidden, scores = self.engine.step(summed + text.to(summed.dtype), [s.row for s in streams], [s.slot for s in streams])
        for i, s in enumerate(streams):
            s.frames.append(torch.cat((code0[i : i + 1], residual[i : i + 1]), dim=1))
            s.past_hidden = hidden[i : i + 1]
            s.scores = scores[i : i + 1]
            s.slot += 1
            s.step += 1
            if s.step >= s.max_frames:
                s.done = True

    def _decode_due(self) -> list[tuple[SpeechStreamState, SpeechChunk | Exception]]:
        """Chunks due now: ``want`` new frames (doubling up to ``max_chunk_frames``), or the rest
        when the stream is done (EOS or max frames), exactly as ``StreamingSpeaker.stream``."""
        jobs: list[_Decode] = []
        failed: list[tuple[SpeechStreamState, SpeechChunk | Exception]] = []
        for s in self.streams:
            if s.done:
                if not s.frames:
                    failed.append((s, ModelError("the Talker produced no audio frames")))
                    continue
                s.codes = _stack_frames(s.frames)
                if len(s.frames) > s.decoded:
                    jobs.append(_Decode(s, s.decoded, len(s.frames)))
                    s.decoded = len(s.frames)
            elif len(s.frames) - s.decoded >= s.want:
                jobs.append(_Decode(s, s.decoded, len(s.frames)))
                s.decoded = len(s.frames)
                s.want = min(s.want * 2, max(s.job.max_chunk_frames, s.job.chunk_frames))
        return failed + self._decode(jobs)

    def _decode(self, jobs: list[_Decode]) -> list[tuple[SpeechStreamState, SpeechChunk | Exception]]:
        """Code2Wav for every due chunk; windows of one length share a call (padded to a bucket on
        CUDA, so conv plans exist for few shapes). As ``StreamingSpeaker._decode``: each window
        re-reads up to ``left_context`` frames, and the tail that needs later frames is held back."""
        import torch

        by_length: dict[int, list[tuple[_Decode, int]]] = {}
        for job in jobs:
            first = job.start - min(job.stream.job.left_context, job.start)
            by_length.setdefault(job.end - first, []).append((job, first))
        out: list[tuple[SpeechStreamState, SpeechChunk | Exception]] = []
        for group in by_length.values():
            codes = torch.cat([_stack_frames(j.stream.frames[first : j.end]) for j, first in group])
            if self.device.type == "cuda":
                pad = bucket_for(len(group), max(self.engine.buckets[-1], len(group))) - len(group)
                if pad:
                    codes = torch.cat((codes, codes.new_zeros((pad, *codes.shape[1:]))))
            wavs = self.code2wav(codes).float().reshape(codes.shape[0], -1).cpu().numpy()
            for (j, first), wav in zip(group, wavs):
                s = j.stream
                begin = s.emitted - first * self.upsample
                if begin < 0:  # pragma: no cover - left context shorter than the held-back tail
                    out.append((s, ModelError("Code2Wav left context too short for streaming")))
                    continue
                samples = wav[begin:].astype(np.float32)
                s.emitted += samples.shape[0]
                chunk = SpeechChunk(samples=samples, frames=j.end - j.start, seconds_since_start=time.perf_counter() - s.started)
                out.append((s, chunk))
        return out


def _stack_frames(frames: list[Any]) -> Any:
    """[1, groups] frames -> [1, groups, T]."""
    import torch

    return torch.stack(frames, dim=-1)
