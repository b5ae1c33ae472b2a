"""One generate() wrapper with one result shape on every supported transformers version.

``Qwen3OmniMoeForConditionalGeneration.generate`` returns a tensor, a ``GenerateOutput`` or a
``(sequences, wav)`` tuple depending on version and on whether audio was produced (4.57: always
a tuple; 5.x: the thinker result alone without audio; wav ``[1, 1, N]`` or a list of 1-D
tensors). Qwen2.5-Omni and Qwen3-VL differ again. Callers get a :class:`GenerationResult`.

Timings come from a streamer: the first ``put()`` after the prompt marks the end of prefill,
``end()`` the end of the Thinker; whatever follows is the Talker and the vocoder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..exceptions import ModelError
from ..models.base import GenerationSettings
from .families import Family
from .workarounds import guard_generate_kwargs

__all__ = ["SPEECH_SAMPLE_RATE", "GenerationResult", "eos_token_ids", "run_generate", "split_generate_output"]

SPEECH_SAMPLE_RATE = 24_000
"""Both Talkers (Qwen3-Omni Code2Wav, Qwen2.5-Omni BigVGAN) produce 24 kHz audio."""


@dataclass
class GenerationResult:
    text: str
    """Generated text up to (not including) the stop token; special tokens kept as text."""
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """"stop" (a stop token or string) or "length" (max new tokens reached)."""
    timings: dict[str, float] = field(default_factory=dict)
    waveform: np.ndarray | None = None
    """float32 mono at ``SPEECH_SAMPLE_RATE`` when speech was asked for."""
    sample_rate: int | None = None


def eos_token_ids(tokenizer: Any) -> list[int]:
    """Stop ids from the tokenizer: ``<|im_end|>`` (end of turn) and its eos / ``<|endoftext|>``."""
    ids: list[int] = []
    for token in ("<|im_end|>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != getattr(tokenizer, "unk_token_id", None):
            ids.append(token_id)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ModelError("the tokenizer defines no end-of-turn token (<|im_end|> or eos)")
    return ids


def split_generate_output(output: Any) -> tuple[Any, Any]:
    """(sequences tensor [batch, len], waveform tensor or None) from any generate() return shape."""
    wav = None
    thinker = output
    if isinstance(output, tuple):
        thinker = output[0]
        wav = output[1] if len(output) > 1 else None
    sequences = getattr(thinker, "sequences", thinker)
    if isinstance(wav, (list, tuple)):
        wav = wav[0] if wav else None
    return sequences, wav


class _TimingStreamer:
    """A transformers streamer that times tokens and forwards decoded text to ``on_text``."""

    def __init__(self, tokenizer: Any, stop_ids: Sequence[int], on_text: Callable[[str], None] | None) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.on_text = on_text
        self.prompt_seen = False
        self.first_token_at: float | None = None
        self.ended_at: float | None = None
        self.ids: list[int] = []
        self.emitted = 0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        new = [int(t) for t in value.reshape(-1).tolist() if int(t) not in self.stop_ids]
        if not new or self.on_text is None:
            self.ids.extend(new)
            return
        self.ids.extend(new)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        # Hold back a trailing replacement char: a multi-byte character split across tokens.
        if text.endswith("\ufffd"):
            return
        if len(text) > self.emitted:
            self.on_text(text[self.emitted :])
            self.emitted = len(text)

    def end(self) -> None:
        self.ended_at = time.perf_counter()
        if self.on_text is not None:
            text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
            if len(text) > self.emitted:
                self.on_text(text[self.emitted :])
                self.emitted = len(text)


def _sampling_kwargs(settings: GenerationSettings) -> dict[str, Any]:
    if settings.temperature <= 0:
        return {"do_sample": False}
    out: dict[str, Any] = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
    if settings.top_k is not None:
        out["top_k"] = settings.top_k
    return out


def run_generate(
    model: Any,
    processor: Any,
    family: Family,
    inputs: Any,
    *,
    settings: GenerationSettings,
    return_audio: bool = False,
    voice: str | None = None,
    on_text: Callable[[str], None] | None = None,
    thinker_extra: dict[str, Any] | None = None,
    talker_extra: dict[str, Any] | None = None,
    preprocess_s: float = 0.0,
) -> GenerationResult:
    """Run one generate() call and return the one result shape.

    ``thinker_extra`` / ``talker_extra``: generate() kwargs for that part (e.g. a logits
    processor, min / max new tokens), prefixed here as the Omni models expect.
    """
    import torch

    tokenizer = processor.tokenizer
    stop_ids = eos_token_ids(tokenizer)
    streamer = _TimingStreamer(tokenizer, stop_ids, on_text)
    thinker: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "eos_token_id": stop_ids,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0],
        "streamer": streamer,
        **_sampling_kwargs(settings),
    }
    if settings.stop:
        thinker["stop_strings"] = list(settings.stop)
        thinker["tokenizer"] = tokenizer
    thinker.update(thinker_extra or {})
    device = model.device if hasattr(model, "device") else torch.device("cpu")
    tensors = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in dict(inputs).items()}
    if "pixel_values" in tensors and tensors["pixel_values"] is not None:
        tensors["pixel_values"] = tensors["pixel_values"].to(model.dtype)
    kwargs: dict[str, Any]
    if family.has_talker_class:
        kwargs = {f"thinker_{k}": v for k, v in thinker.items()}
        if return_audio:
            kwargs["speaker"] = voice
            if family.key == "qwen3_omni":
                kwargs["return_audio"] = True
            kwargs.update({f"talker_{k}": v for k, v in (talker_extra or {}).items()})
        else:
            kwargs.update(dict(family.text_only_kwargs))
    else:
        if return_audio:
            raise ModelError(f"{family.label} has no Talker: it cannot produce speech")
        kwargs = dict(thinker)
    kwargs.update(tensors)
    kwargs = guard_generate_kwargs(family, kwargs, return_audio=return_audio)
    prompt_len = int(tensors["input_ids"].shape[-1])
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**kwargs)
    t_end = time.perf_counter()
    sequences, wav = split_generate_output(output)
    generated = [int(t) for t in sequences[0, prompt_len:].tolist()]
    stop_at = next((i for i, t in enumerate(generated) if t in stop_ids), None)
    text_ids = generated if stop_at is None else generated[:stop_at]
    text = tokenizer.decode(text_ids, skip_special_tokens=False)
    # Fewer tokens than allowed without a stop token means a stop string ended it.
    finish = "stop" if stop_at is not None or len(generated) < int(thinker["max_new_tokens"]) else "length"
    first = streamer.first_token_at or t_end
    thinker_end = streamer.ended_at or t_end
    timings = {
        "preprocess": preprocess_s,
        "prefill": first - t0,
        "decode": max(thinker_end - first, 0.0),
        "generate": t_end - t0,
    }
    if len(generated) > 1:
        timings["decode_per_token"] = timings["decode"] / (len(generated) - 1)
    waveform = None
    if wav is not None:
        timings["talker"] = max(t_end - thinker_end, 0.0)
        waveform = wav.detach().float().reshape(-1).cpu().numpy().astype(np.float32)
    return GenerationResult(
        text=text,
        token_ids=text_ids,
        prompt_tokens=prompt_len,
        completion_tokens=len(generated),
        finish_reason=finish,
        timings=timings,
        waveform=waveform,
        sample_rate=SPEECH_SAMPLE_RATE if waveform is not None else None,
    )
