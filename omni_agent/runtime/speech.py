"""Talker speech of exactly a given text.

The Talker voices everything the Thinker produced in the last assistant turn, ``<tool_call>``
JSON and ``<think>`` text included (QwenLM/Qwen3-Omni#126). So speech never rides on an agent
step: ``speak(text)`` runs its own text-only turn in which the Thinker is forced, token by token,
to write exactly ``text`` and then end the turn. Forcing (rather than prefilling the assistant
text) keeps the Talker's view identical to a normal answer on both families: Qwen2.5-Omni's
Talker only voices *generated* tokens, and Qwen3-Omni 5.23 moves its end-of-text marker to the
first generated stop token.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field

from ..exceptions import UserError
from ..messages import SystemMessage, UserMessage
from .families import Family

__all__ = ["ForcedTokens", "SpeechSettings", "resolve_voice", "speech_messages", "speech_generation_extras"]

_DEFAULT_SPEECH_SYSTEM = "You are a voice assistant. Read the assistant's text aloud, exactly as written."
_SPEECH_REQUEST = "Read your answer aloud."

# Codec frames per second of each Talker (Qwen3-Omni: 12.5 Hz codec; Qwen2.5-Omni: 50 Hz codes).
_FRAMES_PER_SECOND = {"qwen3_omni": 12.5, "qwen2_5_omni": 50.0}
_SECONDS_PER_TOKEN_MAX = 0.8
"""Generous upper bound of speech per text token (~0.3 s typical), used to cap the Talker."""


class SpeechSettings(BaseModel):
    """How the Talker samples. Frame bounds are per text token so length follows the text."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.9, gt=0)
    top_k: int = Field(50, ge=1)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.05, gt=0)
    min_frames_per_token: float = Field(0.0, ge=0)
    """Lower bound on codec frames per text token (0: let the Talker decide)."""
    max_frames_per_token: float | None = Field(None, gt=0)
    """Upper bound on codec frames per text token (None: the family's generous default)."""
    seed: int | None = None


def resolve_voice(family: Family, voice: str | None) -> str:
    """The voice name as the model expects it; a clear error listing valid ones otherwise."""
    if not family.voices:
        raise UserError(f"{family.label} has no voices: it cannot speak")
    if voice is None:
        return family.voices[0]
    for name in family.voices:
        if name.lower() == voice.strip().lower():
            return name
    raise UserError(f"unknown voice {voice!r} for {family.label}; valid voices: {', '.join(family.voices)}")


def speech_messages(family: Family) -> list[Any]:
    """The text-only turn the spoken text is forced into (no tools, no media, no history)."""
    return [
        SystemMessage(family.speech_system_prompt or _DEFAULT_SPEECH_SYSTEM),
        UserMessage(_SPEECH_REQUEST),
    ]


class ForcedTokens:
    """A logits processor that makes generation emit exactly ``token_ids`` (then nothing else)."""

    def __init__(self, prompt_length: int, token_ids: Sequence[int]) -> None:
        self.prompt_length = prompt_length
        self.token_ids = list(token_ids)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        step = input_ids.shape[-1] - self.prompt_length
        if 0 <= step < len(self.token_ids):
            forced = scores.new_full(scores.shape, float("-inf"))
            forced[:, self.token_ids[step]] = 0.0
            return forced
        return scores


def speech_generation_extras(
    family: Family, *, prompt_length: int, text_ids: Sequence[int], stop_id: int, settings: SpeechSettings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(thinker kwargs, talker kwargs) for one forced speech turn."""
    from transformers import LogitsProcessorList

    forced = list(text_ids) + [stop_id]
    thinker = {
        "logits_processor": LogitsProcessorList([ForcedTokens(prompt_length, forced)]),
        "max_new_tokens": len(forced),
        "do_sample": False,
    }
    thinker.pop("temperature", None)
    n = max(len(text_ids), 1)
    fps = _FRAMES_PER_SECOND[family.key]
    per_token_max = settings.max_frames_per_token or fps * _SECONDS_PER_TOKEN_MAX
    max_frames = math.ceil(per_token_max * n) + (0 if settings.max_frames_per_token else math.ceil(fps))
    min_frames = math.floor(settings.min_frames_per_token * n)
    talker: dict[str, Any] = {
        "max_new_tokens": max(max_frames, min_frames, 2),
        "min_new_tokens": min(min_frames, max(max_frames, 2)),
        "do_sample": True,
        "temperature": settings.temperature,
        "top_k": settings.top_k,
        "top_p": settings.top_p,
        "repetition_penalty": settings.repetition_penalty,
    }
    return thinker, talker
