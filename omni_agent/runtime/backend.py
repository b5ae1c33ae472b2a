"""``QwenOmniModel``: the local transformers backend (Qwen3-Omni, Qwen2.5-Omni, Qwen3-VL).

One step = render the conversation with the checkpoint's template -> processor -> Thinker
generate() (text only, streamed) -> raw text for the agent's parser. When the request asks for
speech and the step is a final answer, the visible answer is spoken in a separate forced turn
(see ``speech.py``), so tool-call JSON and thinking are never voiced.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, AsyncIterator, Iterator

import numpy as np

from ..exceptions import ModelError, UserError
from ..messages import AudioPart
from ..models.base import GenerationSettings, Model, ModelChunk, ModelInfo, ModelRequest, ModelResponse, Usage
from .chat_template import template_supports_tools
from .fast.options import FastOptions
from .fast.run import fast_unsupported, make_fast_thinker, run_fast_generate
from .families import Family, family_for_model_type
from .generation import SPEECH_SAMPLE_RATE, GenerationResult, eos_token_ids, run_generate
from .loading import LoadedCheckpoint, apply_image_spec, image_factor, load_checkpoint
from .media import ImageSpec
from .prompt import PreparedPrompt, build_prompt, strip_control_tokens
from .speech import SpeechSettings, resolve_voice, speech_generation_extras, speech_messages

__all__ = ["QwenOmniModel"]


class QwenOmniModel(Model):
    """A Qwen-Omni / Qwen3-VL checkpoint run in-process through transformers.

    Build it with :meth:`load` (a checkpoint directory, or a hub id with
    ``local_files_only=False``) or :meth:`from_objects` (a model already in memory).
    """

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        *,
        name: str | None = None,
        speech: SpeechSettings | None = None,
        fast: FastOptions | bool | None = None,
    ):
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.processor = checkpoint.processor
        self.family: Family = checkpoint.family
        self.speech_settings = speech or SpeechSettings()
        template = getattr(self.processor, "chat_template", None)
        if not template:
            raise ModelError(f"{checkpoint.path} has no chat template (chat_template.json)")
        self.template_renders_tools = template_supports_tools(template)
        self._lock = threading.Lock()  # one generate() at a time per model
        # Optional GPU fast path (static KV cache reused across steps, CUDA-graph decode): off
        # unless asked for; text-only Thinker turns use it, everything else the plain path.
        self.fast = make_fast_thinker(self.model, fast, processor=self.processor)
        self.info = ModelInfo(
            name=name or os.path.basename(str(checkpoint.path).rstrip("/")) or self.family.label,
            backend="qwen-omni",
            can_see=True,
            can_hear=self.family.can_hear,
            can_speak=checkpoint.has_talker,
            coordinate_space=self.family.coordinate_space,
            extra={"family": self.family.key, "image_spec": checkpoint.image_spec.model_dump()},
        )

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path_or_id: str | os.PathLike[str],
        *,
        dtype: str = "auto",
        device_map: str | dict[str, Any] | None = "auto",
        attn_implementation: str | None = None,
        enable_talker: bool = False,
        talker: bool | None = None,
        image_spec: ImageSpec | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        local_files_only: bool = True,
        name: str | None = None,
        speech: SpeechSettings | None = None,
        fast: FastOptions | bool | None = None,
    ) -> "QwenOmniModel":
        """Load a checkpoint. ``enable_talker`` loads the Talker (speech out; ~10 GB for
        Qwen3-Omni). ``talker`` is an alias used by ``qwen-omni:PATH?talker=true`` specs.
        ``local_files_only=False`` allows downloading a hub id. ``fast=True`` / ``FastOptions(...)``
        switches on the fast Thinker path (``omni_agent.runtime.fast``; Qwen3-Omni)."""
        if talker is not None:
            enable_talker = _as_bool(talker)
        checkpoint = load_checkpoint(
            path_or_id,
            dtype=dtype,
            device_map=device_map,
            attn_implementation=attn_implementation,
            enable_talker=_as_bool(enable_talker),
            image_spec=image_spec,
            min_pixels=int(min_pixels) if min_pixels is not None else None,
            max_pixels=int(max_pixels) if max_pixels is not None else None,
            local_files_only=_as_bool(local_files_only),
        )
        return cls(checkpoint, name=name, speech=speech, fast=fast)

    @classmethod
    def from_objects(
        cls,
        model: Any,
        processor: Any,
        *,
        name: str,
        image_spec: ImageSpec | None = None,
        speech: SpeechSettings | None = None,
        fast: FastOptions | bool | None = None,
    ) -> "QwenOmniModel":
        """Wrap a model already in memory (e.g. a random full-size build in a benchmark)."""
        family = family_for_model_type(model.config.model_type)
        factor = image_factor(processor)
        spec = image_spec or ImageSpec(factor=factor, min_pixels=factor * factor * 4, max_pixels=factor * factor * 2048)
        apply_image_spec(processor, spec)
        checkpoint = LoadedCheckpoint(
            model=model,
            processor=processor,
            family=family,
            path=name,
            has_talker=bool(getattr(model, "has_talker", False)),
            image_spec=spec,
        )
        return cls(checkpoint, name=name, speech=speech, fast=fast)

    # -- properties ----------------------------------------------------------------------------
    @property
    def image_spec(self) -> ImageSpec:
        """How screenshots are resized for this model (tools map coordinates with it)."""
        return self.checkpoint.image_spec

    @property
    def voices(self) -> tuple[str, ...]:
        return self.family.voices if self.info.can_speak else ()

    # -- prompt ----------------------------------------------------------------------------------
    def prepare(self, request: ModelRequest, *, assistant_prefix: str = "") -> PreparedPrompt:
        """Render the request and run the processor (no generation)."""
        prompts = self.fast.prompts if self.fast is not None else None
        if prompts is not None:  # fast path: the same tensors, only the appended turns tokenised
            return prompts.build(
                request.messages,
                tools=request.tools,
                family=self.family,
                image_spec=self.image_spec,
                template_renders_tools=self.template_renders_tools,
                assistant_prefix=assistant_prefix,
            )
        return build_prompt(
            self.processor,
            request.messages,
            tools=request.tools,
            family=self.family,
            image_spec=self.image_spec,
            template_renders_tools=self.template_renders_tools,
            assistant_prefix=assistant_prefix,
        )

    def render_prompt(self, request: ModelRequest) -> str:
        """The prompt exactly as the model reads it: the decoded input ids (media expanded)."""
        prepared = self.prepare(request)
        return self.processor.tokenizer.decode(prepared.inputs["input_ids"][0], skip_special_tokens=False)

    # -- generation --------------------------------------------------------------------------
    def generate(self, request: ModelRequest, *, on_text: Any = None) -> GenerationResult:
        """Blocking: one text-only Thinker turn for ``request`` (``on_text`` gets streamed text)."""
        t0 = time.perf_counter()
        prepared = self.prepare(request)
        preprocess = time.perf_counter() - t0
        with self._lock:
            return self._generate_locked(prepared, request.settings, on_text=on_text, preprocess_s=preprocess)

    def _generate_locked(
        self, prepared: PreparedPrompt, settings: GenerationSettings, *, on_text: Any, preprocess_s: float, **kw: Any
    ) -> GenerationResult:
        try:
            if self.fast is not None and not fast_unsupported(
                prepared.inputs, return_audio=bool(kw.get("return_audio")), thinker_extra=kw.get("thinker_extra")
            ):
                return run_fast_generate(
                    self.fast,
                    self.processor,
                    prepared.inputs,
                    settings=settings,
                    on_text=on_text,
                    thinker_extra=kw.get("thinker_extra"),
                    preprocess_s=preprocess_s,
                )
            return run_generate(
                self.model,
                self.processor,
                self.family,
                prepared.inputs,
                settings=settings,
                on_text=on_text,
                preprocess_s=preprocess_s,
                **kw,
            )
        except ModelError:
            raise
        except Exception as exc:
            if "out of memory" in str(exc).lower():
                raise ModelError(f"{self.family.label} ran out of memory: {str(exc).splitlines()[0]}") from exc
            raise ModelError(f"{self.family.label} generation failed: {type(exc).__name__}: {exc}") from exc

    def speak(self, text: str, *, voice: str | None = None, settings: SpeechSettings | None = None) -> AudioPart:
        """24 kHz float32 speech of exactly ``text`` (a separate, text-only, forced turn)."""
        if not self.info.can_speak:
            raise UserError(
                f"{self.info.name} cannot speak: load it with enable_talker=True "
                "(Qwen3-Omni Instruct or Qwen2.5-Omni with their Talker weights)"
            )
        # Template control tokens (``<|im_end|>``...) in the text would end or derail the forced
        # turn; they are markup, never words, so they are dropped from what is said.
        text = strip_control_tokens(text).strip()
        if not text:
            raise UserError("speak() needs non-empty text")
        settings = settings or self.speech_settings
        if self.fast is not None and self.family.key == "qwen3_omni":
            # Fast path: no Thinker pass, our frame loop, chunked Code2Wav (same codes as below).
            chunks = [c.samples for c in self.speak_stream(text, voice=voice, settings=settings)]
            return AudioPart.from_array(np.concatenate(chunks), SPEECH_SAMPLE_RATE, transcript=text)
        voice_name = resolve_voice(self.family, voice)
        tokenizer = self.processor.tokenizer
        text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        t0 = time.perf_counter()
        prepared = self.prepare(ModelRequest(messages=speech_messages(self.family)))
        thinker_extra, talker_extra = speech_generation_extras(
            self.family,
            prompt_length=prepared.prompt_tokens,
            text_ids=text_ids,
            stop_id=eos_token_ids(tokenizer)[0],
            settings=settings,
        )
        with self._lock:
            result = self._generate_locked(
                prepared,
                GenerationSettings(max_new_tokens=len(text_ids) + 1, temperature=0.0, seed=settings.seed),
                on_text=None,
                preprocess_s=time.perf_counter() - t0,
                return_audio=True,
                voice=voice_name,
                thinker_extra=thinker_extra,
                talker_extra=talker_extra,
            )
        if result.token_ids != list(text_ids):
            # The Talker voices whatever the Thinker wrote in this turn: anything but exactly the
            # text (a tool call, thinking, other words) must never reach the user's ears.
            raise ModelError(
                f"{self.info.name}: the speech turn wrote {len(result.token_ids)} token(s) other than the "
                f"{len(text_ids)} of the text to speak; nothing was said"
            )
        if result.waveform is None or result.sample_rate is None:
            raise ModelError(f"{self.info.name} produced no audio")
        return AudioPart.from_array(result.waveform, result.sample_rate, transcript=text)

    def speak_stream(
        self, text: str, *, voice: str | None = None, settings: SpeechSettings | None = None, chunk_frames: int = 4
    ) -> Iterator[Any]:
        """Speech of exactly ``text`` as playable ``SpeechChunk``s while the Talker runs
        (Qwen3-Omni; see ``omni_agent.runtime.fast.streaming_speech``)."""
        from .fast.batched_speech import speech_job
        from .fast.streaming_speech import StreamingSpeaker

        if not self.info.can_speak:
            raise UserError(f"{self.info.name} cannot speak: load it with enable_talker=True")
        if self.family.key != "qwen3_omni":
            raise UserError(f"streaming speech supports Qwen3-Omni; {self.family.label} speaks through speak()")
        job = speech_job(self, text, voice=voice, settings=settings, chunk_frames=chunk_frames)
        if getattr(self, "_speaker", None) is None:  # kept: its CUDA graphs are captured once
            self._speaker = StreamingSpeaker(self.model, self.processor)
        speaker = self._speaker
        with self._lock:
            yield from speaker.stream(job.input_ids, job.text_ids, **job.stream_kwargs())

    async def aspeak(self, text: str, *, voice: str | None = None, settings: SpeechSettings | None = None) -> AudioPart:
        return await asyncio.to_thread(self.speak, text, voice=voice, settings=settings)

    def _response(self, result: GenerationResult, audio: AudioPart | None) -> ModelResponse:
        return ModelResponse(
            text=result.text,
            usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens),
            timings=result.timings,
            audio=audio,
            finish_reason=result.finish_reason,
            model=self.info.name,
        )

    async def _maybe_speak(self, request: ModelRequest, result: GenerationResult) -> AudioPart | None:
        if not request.speak or not self.info.can_speak:
            return None
        from ..parsing import parse_output

        parsed = parse_output(result.text)
        if parsed.calls or not parsed.visible_text.strip():
            return None  # only final answers are spoken, never calls or thinking
        t0 = time.perf_counter()
        audio = await self.aspeak(parsed.visible_text, voice=request.voice)
        result.timings["speech"] = time.perf_counter() - t0
        return audio

    async def complete(self, request: ModelRequest) -> ModelResponse:
        result = await asyncio.to_thread(self.generate, request)
        audio = await self._maybe_speak(request, result)
        return self._response(result, audio)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Text chunks as the Thinker produces them (generate() runs in a worker thread)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stopped = threading.Event()  # the consumer went away (Ctrl-C, a cancelled or closed run)

        def post(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody reads any more
                stopped.set()

        def on_text(chunk: str) -> None:
            if stopped.is_set():  # raised inside generate(): it stops at this token
                raise _StreamAbandoned("the caller stopped reading the stream")
            post(("text", chunk))

        def worker() -> None:
            try:
                result = self.generate(request, on_text=on_text)
            except BaseException as exc:  # handed to the consumer, re-raised there
                post(("error", exc))
            else:
                post(("done", result))

        thread = threading.Thread(target=worker, name="qwen-generate", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield ModelChunk(text=value)
                elif kind == "error":
                    raise value
                else:
                    audio = await self._maybe_speak(request, value)
                    yield ModelChunk(response=self._response(value, audio))
                    return
        finally:
            # Left early: stop generate() at its next token and wait for it (bounded), so torch
            # is not still running in a daemon thread while the interpreter exits (which printed
            # a traceback or aborted the process on Ctrl-C).
            stopped.set()
            thread.join(_STOP_WAIT_S)

    async def aclose(self) -> None:
        """Drop the weights and free accelerator memory."""
        self.model = None
        self.fast = None
        self.checkpoint.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


_STOP_WAIT_S = 10.0
"""Longest wait for an abandoned generate() to reach its next token (a prefill cannot be cut)."""


class _StreamAbandoned(Exception):
    """Raised from the streamer callback to end a generate() whose stream nobody reads."""


def _as_bool(value: Any) -> bool:
    """Spec strings (``?talker=false``) arrive as text; ``bool("false")`` would be True."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UserError(f"expected true/false, got {value!r}")
    return bool(value)
