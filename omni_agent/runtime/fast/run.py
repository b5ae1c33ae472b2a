"""The fast path behind ``QwenOmniModel``: same inputs and the same ``GenerationResult`` as the
plain ``run_generate`` (text, stop handling, streamed ``on_text``, timings), other engine."""

from __future__ import annotations

from typing import Any, Callable

from ...models.base import GenerationSettings
from ..generation import GenerationResult, _TimingStreamer, eos_token_ids
from .options import FastOptions
from .thinker import FastThinker

__all__ = ["SUPPORTED_EXTRA", "fast_unsupported", "make_fast_thinker", "run_fast_generate"]

SUPPORTED_EXTRA = frozenset({"min_new_tokens"})
"""``thinker_extra`` keys the fast loop honours; anything else (e.g. a logits processor) takes the plain path."""


def make_fast_thinker(model: Any, fast: FastOptions | bool | None, *, processor: Any = None) -> FastThinker | None:
    """``fast=None/False`` -> None (plain path); ``True`` -> default options; or the given options.
    With ``processor``, its image processor gets the per-image preprocessing cache."""
    if fast is None or fast is False:
        return None
    options = FastOptions() if fast is True else fast
    return FastThinker(model, options=options, processor=processor)


def fast_unsupported(inputs: Any, *, return_audio: bool, thinker_extra: dict[str, Any] | None) -> str | None:
    """Why this call must take the plain path (None when the fast path can run it)."""
    if return_audio:
        return "speech output runs through generate(return_audio=True)"
    extra = set(thinker_extra or {}) - SUPPORTED_EXTRA
    if extra:
        return f"thinker options {sorted(extra)} are only handled by the plain path"
    return FastThinker.unsupported(inputs)


def run_fast_generate(
    fast: FastThinker,
    processor: Any,
    inputs: Any,
    *,
    settings: GenerationSettings,
    on_text: Callable[[str], None] | None = None,
    thinker_extra: dict[str, Any] | None = None,
    preprocess_s: float = 0.0,
) -> GenerationResult:
    tokenizer = processor.tokenizer
    stop_ids = eos_token_ids(tokenizer)
    streamer = _TimingStreamer(tokenizer, stop_ids, on_text)
    streamer.put(inputs["input_ids"])  # the plain streamer expects the prompt first
    min_new = int((thinker_extra or {}).get("min_new_tokens") or 0)
    generated, finish, timings = fast.generate(
        inputs, settings=settings, stop_ids=stop_ids, tokenizer=tokenizer, streamer=streamer, min_new_tokens=min_new
    )
    stop_at = next((i for i, t in enumerate(generated) if t in stop_ids), None)
    text_ids = generated if stop_at is None else generated[:stop_at]
    timings = {"preprocess": preprocess_s, **timings}
    return GenerationResult(
        text=tokenizer.decode(text_ids, skip_special_tokens=False),
        token_ids=text_ids,
        prompt_tokens=int(inputs["input_ids"].shape[-1]),
        completion_tokens=len(generated),
        finish_reason=finish,
        timings=timings,
    )
