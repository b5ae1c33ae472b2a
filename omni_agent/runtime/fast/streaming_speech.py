"""Streaming speech for Qwen3-Omni: audio chunks while the Talker is still generating.

``generate(return_audio=True)`` runs the Thinker over the forced text token by token, then the
whole Talker, then Code2Wav over every frame: the first sample arrives after everything. Here:

1. No Thinker pass at all. For a text-only speech turn the Talker reads only the Thinker's
   *input embeddings* of the turn (``_get_talker_user_parts`` / ``_get_talker_assistant_parts``
   use the accept-layer hidden states for image / audio / video positions only), so the text's
   embeddings are looked up and the Talker starts at once.
2. The Talker's frame loop is ours (same maths and sampling as transformers' ``generate``:
   repetition penalty, suppressed tokens, min length, temperature / top-k / top-p; the code
   predictor's 15 inner steps per frame), so every frame is complete as soon as it exists.
3. Code2Wav decodes every ``chunk_frames`` frames with left context (as ``chunked_decode``
   does for its 300-frame chunks), and each chunk is yielded: playable audio after a few frames.
   Code2Wav is causal but its last ~555 samples of a decode need the next frames; those are
   held back and emitted (recomputed with left context) by the next chunk, so the stream is
   gap-free and as long as a one-shot decode (``chunked_decode`` drops them at its 300-frame
   boundaries).

Two engines run the frame loop, with the same maths: ``engine="modules"`` calls the
transformers modules (KV in a ``DynamicCache``; launch-bound on a GPU: ~120 ms per 80 ms frame
on an H200), ``engine="static"`` (default) runs the Talker step and the code predictor's 15
inner steps from their weights over static KV caches (``layers.TextStack``), each captured once
as a CUDA graph on a GPU: one replay for the Talker step, one for all 15 code-predictor steps
(their sampling inside the graph: greedy, or top-k/top-p by Gumbel-max with graph-safe RNG).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from ...exceptions import ModelError, UserError
from .cuda_sync import capture_graph, synchronize

__all__ = ["SpeechChunk", "StreamingSpeaker", "pick_residual_code"]


@dataclass
class SpeechChunk:
    """One playable piece of the waveform (24 kHz float32 mono) and when it was ready."""

    samples: np.ndarray
    frames: int
    seconds_since_start: float
    timings: dict[str, float] = field(default_factory=dict)


def pick_residual_code(scores: Any, sample: Any, uniform: Any = None) -> Any:
    """The code predictor's choice per row of ``scores`` [n, V]: greedy, or top-k 50 / top-p 0.8
    sampling as Gumbel-max (same distribution as multinomial; graph-safe). ``sample`` is a bool
    or a bool tensor [n, 1] (per row: sampled where True, greedy elsewhere); ``uniform`` [n, V]
    are the draws in (0, 1) (from each stream's own generator; ``torch.rand_like`` if None)."""
    import torch

    if sample is False:
        return scores.argmax(dim=-1, keepdim=True)
    greedy = scores.argmax(dim=-1, keepdim=True)
    kth = torch.topk(scores, 50, dim=-1).values[..., -1:]
    scores = scores.masked_fill(scores < kth, float("-inf"))
    ordered, order = torch.sort(scores, descending=False, dim=-1)
    drop = torch.softmax(ordered, dim=-1).cumsum(dim=-1) <= 1 - 0.8
    drop[..., -1:] = False
    scores = scores.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    u = torch.rand_like(scores) if uniform is None else uniform
    noise = -torch.log(-torch.log(u.clamp(1e-10, 1.0)))
    sampled = (torch.log_softmax(scores, dim=-1) + noise).argmax(dim=-1, keepdim=True)
    return sampled if sample is True else torch.where(sample, sampled, greedy)


def residual_uniforms(groups: int, vocab: int, generator: Any, device: Any) -> Any:
    """One frame's draws for the code predictor's residual codes [groups - 1, V], taken from the
    stream's own generator: a stream samples the same codes alone and inside a batch."""
    import torch

    return torch.rand((groups - 1, vocab), generator=generator, device=device)


class _StaticFrameEngine:
    """The Talker decode step and the code predictor's inner loop over static KV caches."""

    def __init__(self, talker: Any, *, max_tokens: int, groups: int, graphs: bool) -> None:
        import torch

        from .kv_cache import StaticKVCache
        from .layers import TextStack
        from .moe_kernels import triton_available

        self.talker = talker
        self.cp = talker.code_predictor
        device = talker.codec_head.weight.device
        dtype = talker.codec_head.weight.dtype
        self.device = device
        self.groups = groups
        self.max_tokens = max_tokens
        self.talker_stack = TextStack(talker.model, talker.codec_head)
        self.cp_stack = TextStack(self.cp.model, None)
        self.talker_stack.use_triton = self.cp_stack.use_triton = triton_available(device)

        def cache(stack: Any, size: int) -> Any:
            return StaticKVCache(
                num_layers=len(stack.layers), num_kv_heads=stack.num_kv_heads, head_dim=stack.head_dim,
                max_tokens=size, dtype=dtype, device=device,
            )  # fmt: skip

        self.talker_cache = cache(self.talker_stack, max_tokens)
        self.cp_cache = cache(self.cp_stack, groups)
        hidden = talker.codec_head.weight.shape[1]
        self.embed_buf = torch.zeros((1, 1, hidden), dtype=dtype, device=device)
        self.pos_buf = torch.zeros((1, 1), dtype=torch.long, device=device)
        self.slot_buf = torch.zeros((1,), dtype=torch.long, device=device)
        self.slots = torch.arange(max_tokens, device=device)
        self.past_hidden_buf = torch.zeros((1, 1, hidden), dtype=dtype, device=device)
        self.code0_buf = torch.zeros((1, 1), dtype=torch.long, device=device)
        self.cp_prefill_pos = torch.arange(2, device=device).view(1, 2)
        self.cp_pos = [torch.tensor([[i]], device=device) for i in range(groups)]
        self.cp_slot = [torch.tensor([i], device=device) for i in range(groups)]
        self.cp_valid = [torch.arange(groups, device=device) <= i for i in range(groups)]
        # Residual codes are sampled when the stream samples (transformers >= 5.23 mirrors the
        # Talker's do_sample onto the code predictor the same way); the draws come from the
        # stream's generator through a buffer, so one graph serves greedy and sampled streams.
        self.cp_vocab = int(self.cp.lm_head[0].weight.shape[0])
        self.cp_sample_buf = torch.zeros((1, 1), dtype=torch.bool, device=device)
        self.cp_uniform_buf = torch.full((groups - 1, 1, self.cp_vocab), 0.5, dtype=torch.float32, device=device)
        self.graphs = bool(graphs and device.type == "cuda")
        self._talker_graph: Any = None
        self._cp_graph: Any = None

    # one Talker step: embed_buf at slot_buf -> (normed hidden [1, 1, H], logits [1, 1, V])
    def _talker_step(self) -> Any:
        valid = self.slots <= self.slot_buf
        return self.talker_stack.decode_step(
            self.embed_buf, self.pos_buf, self.talker_cache, self.slot_buf, valid, self.max_tokens, return_hidden=True
        )


    # the code predictor for one frame: (codes 1..15 [1, 15], summed codec embedding [1, 1, H])
    def _cp_run(self) -> Any:
        import torch
        import torch.nn.functional as F

        embeddings = self.cp.model.get_input_embeddings()
        first = self.talker.get_input_embeddings()(self.code0_buf)
        x = torch.cat((self.past_hidden_buf, first), dim=1)
        h, _ = self.cp_stack.forward(x, self.cp_prefill_pos, self.cp_cache, 0, return_hidden=True)
        hiddens = [first]
        codes = []
        for step in range(self.groups - 1):
            if step > 0:
                h, _ = self.cp_stack.decode_step(
                    hiddens[-1], self.cp_pos[step + 1], self.cp_cache, self.cp_slot[step + 1],
                    self.cp_valid[step + 1], self.groups, return_hidden=True,
                )  # fmt: skip
            scores = F.linear(h[:, -1], self.cp.lm_head[step].weight).float()
            code = pick_residual_code(scores, self.cp_sample_buf, self.cp_uniform_buf[step])
            codes.append(code)
            hiddens.append(embeddings[step](code))
        return torch.cat(codes, dim=1), torch.cat(hiddens, dim=1).sum(1, keepdim=True)

    def _capture(self, fn: Any) -> tuple[Any, Any]:
        return capture_graph(fn)

    def prefill(self, embeds: Any) -> tuple[Any, Any]:
        import torch

        n = embeds.shape[1]
        positions = torch.arange(n, device=self.device).view(1, n)
        hidden, logits = self.talker_stack.forward(embeds, positions, self.talker_cache, 0, return_hidden=True)
        return hidden, logits[:, -1].float()

    def code_predictor(self, past_hidden: Any, code0: Any, *, sample: bool = False, generator: Any = None) -> tuple[Any, Any]:
        self.past_hidden_buf.copy_(past_hidden)
        self.code0_buf.copy_(code0)
        self.cp_sample_buf.fill_(sample)
        if sample:
            self.cp_uniform_buf[:, 0].copy_(residual_uniforms(self.groups, self.cp_vocab, generator, self.device))
        if not self.graphs:
            return self._cp_run()
        if self._cp_graph is None:
            self._cp_graph = self._capture(self._cp_run)
        graph, out = self._cp_graph
        graph.replay()
        return out

    def step(self, embeds: Any, slot: int) -> tuple[Any, Any]:
        """The Talker at ``slot`` (text-only turn: every M-RoPE axis = the slot) -> (hidden, scores)."""
        self.embed_buf.copy_(embeds)
        self.pos_buf.fill_(slot)
        self.slot_buf.fill_(slot)
        if not self.graphs:
            hidden, logits = self._talker_step()
        else:
            if self._talker_graph is None:
                keep = slot
                self.slot_buf.fill_(self.max_tokens - 1)  # warm-up writes land on an unused slot
                self._talker_graph = self._capture(self._talker_step)
                self.slot_buf.fill_(keep)
            graph, (hidden, logits) = self._talker_graph
            graph.replay()
        return hidden.clone(), logits[:, -1].float()


class StreamingSpeaker:
    """Talker + Code2Wav of a Qwen3-Omni model, frame by frame, yielding audio chunks."""

    def __init__(
        self, model: Any, processor: Any, *, engine: str = "static", max_tokens: int = 2048, graphs: bool = True
    ) -> None:
        if getattr(model, "talker", None) is None or getattr(model, "code2wav", None) is None:
            raise UserError("streaming speech needs a Qwen3-Omni model loaded with its Talker (enable_talker=True)")
        self.model = model
        self.processor = processor
        self.config = model.config
        self.talker = model.talker
        self.code2wav = model.code2wav
        self.device = self.talker.codec_head.weight.device
        self.last_codes: Any = None
        """[1, num_code_groups, frames] codec codes of the last stream (for checks and replays)."""
        if engine not in ("static", "modules"):
            raise UserError(f"engine must be 'static' or 'modules', not {engine!r}")
        self.engine = engine
        self._static: _StaticFrameEngine | None = None
        self._static_args = {"max_tokens": max_tokens, "graphs": graphs}
        self._decoder_warm: set[int] = set()

    def warm_up_decoder(self, *, left_context: int = 25, max_chunk_frames: int = 16) -> float:
        """Run Code2Wav once for every input length a stream can give it (1 .. left context +
        largest chunk). On CUDA each new conv input length builds its kernel plans on first use
        (measured on an H100: a 10-word message after a 5-word warm-up ran at 2.4x instead of
        3.4x real time); doing it here keeps that out of the first messages. Returns seconds."""
        import torch

        t0 = time.perf_counter()
        groups = int(self.config.talker_config.num_code_groups)
        with torch.inference_mode():
            for length in range(1, left_context + max_chunk_frames + 1):
                if length not in self._decoder_warm:
                    self.code2wav(torch.zeros((1, groups, length), dtype=torch.long, device=self.device))
                    self._decoder_warm.add(length)
        if self.device.type == "cuda":
            synchronize(self.device)
        return time.perf_counter() - t0

    def _frames_engine(self) -> _StaticFrameEngine:
        if self._static is None:
            groups = int(self.config.talker_config.num_code_groups)
            self._static = _StaticFrameEngine(self.talker, groups=groups, **self._static_args)  # type: ignore[arg-type]
        return self._static

    # -- Talker inputs (transformers' generate() glue, for one text-only turn) --------------------
    def talker_inputs(self, input_ids: Any, sequences: Any, speaker_id: int, stop_ids: Sequence[int]) -> dict[str, Any]:
        """The Talker's prompt embeddings, ids and per-frame text embeddings, exactly as
        ``Qwen3OmniMoeForConditionalGeneration.generate`` builds them (batch 1, no media)."""
        import torch

        model = self.model
        cfg = self.config
        mm_ids = (cfg.thinker_config.audio_token_id, cfg.thinker_config.image_token_id, cfg.thinker_config.video_token_id)
        if any(int((sequences == t).sum()) for t in mm_ids):
            raise UserError("streaming speech takes a text-only turn (no image / audio / video placeholders)")
        thinker_embed = model.thinker.get_input_embeddings()(sequences[:, :-1])  # the tokens generate() fed
        seq_len = input_ids.shape[1]
        positions = torch.arange(seq_len, device=input_ids.device).unsqueeze(0)
        im_start = torch.where(input_ids == cfg.im_start_token_id, positions, positions.new_full((), -1))
        previous = torch.cummax(im_start, dim=-1).values.clamp_min(0)
        roles = input_ids.gather(1, (previous + 1).clamp_max(seq_len - 1))
        user_mask = roles == cfg.user_token_id
        n_user = int(user_mask.sum())
        user_idx = torch.where(user_mask, seq_len + positions, positions).argsort(dim=-1)[:, -n_user:]
        no_mm = torch.zeros_like(sequences, dtype=torch.bool)
        user_embeds = model._get_talker_user_parts(0, seq_len, no_mm, thinker_embed, thinker_embed)
        user_embeds = user_embeds.gather(1, user_idx.unsqueeze(-1).expand(-1, -1, user_embeds.shape[-1]))
        user_ids = sequences[:, :seq_len].gather(1, user_idx)
        start_mask = (input_ids[:, :-1] == cfg.im_start_token_id) & (input_ids[:, 1:] == cfg.assistant_token_id)
        assistant_start = int(torch.nonzero(start_mask[0]).flatten()[-1])
        special = torch.tensor([[cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id]], device=self.device)
        bos, eos, pad = self.talker.text_projection(model.thinker.get_input_embeddings()(special)).chunk(3, dim=1)
        assistant_embeds, assistant_ids, trailing = model._get_talker_assistant_parts(
            assistant_start, sequences.shape[-1], speaker_id, thinker_embed, pad, bos, eos
        )
        generated = sequences[:, seq_len:]
        is_eos = (generated.unsqueeze(-1) == torch.tensor(list(stop_ids), device=generated.device)).any(dim=-1)
        first_eos = torch.where(is_eos, torch.arange(generated.shape[1], device=generated.device), generated.shape[1]).min(dim=-1).values
        cols = torch.arange(trailing.shape[1], device=trailing.device).unsqueeze(0)
        trailing = torch.where((cols > first_eos.unsqueeze(1)).unsqueeze(-1), pad.to(trailing.dtype), trailing)
        trailing = torch.where((cols == first_eos.unsqueeze(1)).unsqueeze(-1), eos.to(trailing.dtype), trailing)
        return {
            "embeds": torch.cat((user_embeds, assistant_embeds), dim=1),
            "ids": torch.cat((user_ids, assistant_ids), dim=1),
            "trailing": trailing,
            "pad": pad,
        }

    # -- sampling (transformers' processors, reused) ----------------------------------------------
    def suppressed_codes(self) -> list[int]:
        """The Talker's control codes it may never pick (the last 1024 ids, but its EOS)."""
        tc = self.config.talker_config
        vocab = tc.text_config.vocab_size
        return [i for i in range(vocab - 1024, vocab) if i != tc.codec_eos_token_id]

    def _talker_processors(self, *, do_sample: bool, temperature: float, top_k: int, top_p: float, repetition_penalty: float, min_new_tokens: int) -> tuple[Any, Any]:
        from transformers import (
            LogitsProcessorList,
            MinNewTokensLengthLogitsProcessor,
            RepetitionPenaltyLogitsProcessor,
            SuppressTokensLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        tc = self.config.talker_config
        suppress = self.suppressed_codes()
        processors = LogitsProcessorList()
        if repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
        processors.append(SuppressTokensLogitsProcessor(suppress, device=self.device))
        if min_new_tokens > 0:
            processors.append(MinNewTokensLengthLogitsProcessor(0, min_new_tokens, tc.codec_eos_token_id, device=self.device))
        warpers = LogitsProcessorList()
        if do_sample:
            if temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(temperature))
            if top_k:
                warpers.append(TopKLogitsWarper(top_k))
            if top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p))
        return processors, warpers

    @staticmethod
    def _pick(scores: Any, do_sample: bool, generator: Any) -> Any:
        import torch

        if not do_sample:
            return scores.argmax(dim=-1, keepdim=True)
        probs = torch.softmax(scores.float(), dim=-1)
        return torch.multinomial(probs, 1, generator=generator)

    def _code_predictor(self, past_hidden: Any, code0: Any, generator: Any, do_sample: bool) -> tuple[Any, Any]:
        """The 15 residual codes of one frame and the frame's summed codec embedding (sampled when
        the stream samples, as transformers' generate() does)."""
        import torch
        from transformers import DynamicCache, LogitsProcessorList, TopKLogitsWarper, TopPLogitsWarper

        cp = self.talker.code_predictor
        warpers = LogitsProcessorList([TopKLogitsWarper(50), TopPLogitsWarper(0.8)]) if do_sample else None
        embeddings = cp.model.get_input_embeddings()
        groups = int(self.config.talker_config.num_code_groups)
        first = self.talker.get_input_embeddings()(code0)  # [1, 1, H]
        cache = DynamicCache(config=cp.config)
        x = torch.cat((past_hidden, first), dim=1)
        hiddens = [first]
        codes = []
        ids = torch.zeros((1, 0), dtype=torch.long, device=self.device)
        for step in range(groups - 1):
            out = cp.model(inputs_embeds=x, past_key_values=cache, use_cache=True)
            scores = cp.lm_head[step](out.last_hidden_state[:, -1]).float()
            if warpers is not None:
                scores = warpers(ids, scores)
            code = self._pick(scores, do_sample, generator)  # [1, 1]
            codes.append(code)
            ids = torch.cat((ids, code), dim=1)
            x = embeddings[step](code)  # the next step's input; also this code's embedding
            hiddens.append(x)
        summed = torch.cat(hiddens, dim=1).sum(1, keepdim=True)
        return torch.cat([code0] + codes, dim=1), summed

    # -- the stream ------------------------------------------------------------------------------
    def stream(
        self,
        input_ids: Any,
        text_ids: Sequence[int],
        *,
        speaker_id: int,
        stop_ids: Sequence[int],
        max_frames: int,
        min_frames: int = 2,
        do_sample: bool = True,
        temperature: float = 0.9,
        top_k: int = 50,
        top_p: float = 1.0,
        repetition_penalty: float = 1.05,
        seed: int | None = None,
        chunk_frames: int = 4,
        max_chunk_frames: int = 16,
        left_context: int = 25,
    ) -> Iterator[SpeechChunk]:
        """Yield audio chunks for the forced turn ``input_ids`` (the speech prompt) + ``text_ids``
        + the stop token. The first chunk has ``chunk_frames`` codec frames (first-audio latency);
        later ones double up to ``max_chunk_frames``: each decode re-reads ``left_context`` frames,
        so longer chunks once playback is ahead cost less Code2Wav time per frame."""
        import torch
        from transformers import DynamicCache

        if chunk_frames < 1 or max_chunk_frames < 1:
            raise UserError("chunk_frames and max_chunk_frames must be >= 1")
        if self.device.type == "cuda":  # once per length; a no-op afterwards (CPU has no plan cost)
            self.warm_up_decoder(left_context=left_context, max_chunk_frames=max(max_chunk_frames, chunk_frames))
        t0 = time.perf_counter()
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(seed)) if seed is not None else generator.seed()
        tc = self.config.talker_config
        eos_code = int(tc.codec_eos_token_id)
        with torch.inference_mode():
            input_ids = input_ids.to(self.device)
            forced = torch.tensor([list(text_ids) + [int(stop_ids[0])]], dtype=torch.long, device=self.device)
            sequences = torch.cat((input_ids, forced), dim=1)
            parts = self.talker_inputs(input_ids, sequences, speaker_id, stop_ids)
            processors, warpers = self._talker_processors(
                do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                repetition_penalty=repetition_penalty, min_new_tokens=max(min_frames, 2),
            )  # fmt: skip
            static = self._frames_engine() if self.engine == "static" else None
            slot = parts["embeds"].shape[1]
            if static is not None:
                if slot + max_frames + 1 > static.max_tokens:
                    raise UserError(
                        f"this message needs {slot + max_frames + 1} Talker KV slots; the streaming engine has "
                        f"{static.max_tokens} (StreamingSpeaker(max_tokens=...))"
                    )
                hidden, scores = static.prefill(parts["embeds"])
                past_hidden = hidden[:, -1:]
            else:
                cache = DynamicCache(config=self.talker.config)
                out = self.talker.model(inputs_embeds=parts["embeds"], past_key_values=cache, use_cache=True)
                past_hidden = out.last_hidden_state[:, -1:]
                scores = self.talker.codec_head(past_hidden)[:, -1].float()
            generated = torch.zeros((1, 0), dtype=torch.long, device=self.device)
            frames: list[Any] = []
            decoded = 0
            want = chunk_frames
            self._emitted = 0
            upsample = int(self.code2wav.total_upsample)
            trailing = parts["trailing"]
            for step in range(max_frames):
                scores = processors(generated, scores)
                if do_sample:
                    scores = warpers(generated, scores)
                code0 = self._pick(scores, do_sample, generator)
                generated = torch.cat((generated, code0), dim=1)
                if int(code0) == eos_code:
                    break
                text = trailing[:, step : step + 1] if step < trailing.shape[1] else parts["pad"]
                if static is not None:
                    residual, summed = static.code_predictor(past_hidden, code0, sample=do_sample, generator=generator)
                    frames.append(torch.cat((code0, residual), dim=1))
                    past_hidden, scores = static.step(summed + text, slot)
                    slot += 1
                else:
                    frame_codes, summed = self._code_predictor(past_hidden, code0, generator, do_sample)
                    frames.append(frame_codes)
                    out = self.talker.model(inputs_embeds=summed + text, past_key_values=cache, use_cache=True)
                    past_hidden = out.last_hidden_state[:, -1:]
                    scores = self.talker.codec_head(past_hidden)[:, -1].float()
                if len(frames) - decoded >= want:
                    yield self._decode(frames, decoded, left_context, upsample, t0)
                    decoded = len(frames)
                    want = min(want * 2, max(max_chunk_frames, chunk_frames))
            if not frames:
                raise ModelError("the Talker produced no audio frames")
            self.last_codes = torch.stack(frames, dim=-1)
            if len(frames) > decoded:
                yield self._decode(frames, decoded, left_context, upsample, t0)

    def _decode(self, frames: list[Any], start: int, left_context: int, upsample: int, t0: float) -> SpeechChunk:
        """Samples from the last emitted one up to what frames[:end] determine. A decode of
        frames [first, end) is ~555 samples shorter than (end - first) x upsample: that tail
        needs later frames, so it is not emitted yet; the next chunk starts where this one ended."""
        import torch

        codes = torch.stack(frames, dim=-1)  # [1, 16, T]
        context = min(left_context, start)
        first = start - context
        wav = self.code2wav(codes[..., first:]).float().reshape(-1)
        end = len(frames)
        held_back = end * upsample - (first * upsample + wav.shape[0])  # samples needing later frames
        begin = self._emitted - first * upsample
        if begin < 0:  # pragma: no cover - left context shorter than the held-back tail
            raise ModelError("Code2Wav left context too short for streaming")
        samples = wav[begin:].cpu().numpy().astype(np.float32)
        self._emitted += samples.shape[0]
        return SpeechChunk(
            samples=samples,
            frames=end - start,
            seconds_since_start=time.perf_counter() - t0,
            timings={"held_back_samples": float(held_back)},
        )
