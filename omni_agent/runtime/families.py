"""What differs between the checkpoint families the local runtime serves, as data.

A family is picked from ``config.json``'s ``model_type``; everything else in the runtime reads
these flags instead of branching on model names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["FAMILIES", "Family", "family_for_model_type"]


@dataclass(frozen=True)
class Family:
    key: Literal["qwen3_omni", "qwen2_5_omni", "qwen3_vl"]
    label: str
    model_types: tuple[str, ...]
    model_class: str
    """transformers class of the full model (Thinker + Talker where the family has one)."""
    processor_class: str
    can_hear: bool
    has_talker_class: bool
    voices: tuple[str, ...] = ()
    """Voice names as users write them; the first is the default."""
    coordinate_space: Literal["relative_1000", "absolute_resized"] = "relative_1000"
    speech_system_prompt: str | None = None
    """The system prompt the Talker was trained with, where it needs an exact one."""
    text_only_kwargs: tuple[tuple[str, object], ...] = ()
    """generate() kwargs that turn speech off for this family's generate()."""


QWEN3_OMNI = Family(
    key="qwen3_omni",
    label="Qwen3-Omni",
    model_types=("qwen3_omni_moe",),
    model_class="Qwen3OmniMoeForConditionalGeneration",
    processor_class="Qwen3OmniMoeProcessor",
    can_hear=True,
    has_talker_class=True,
    voices=("Ethan", "Chelsie", "Aiden"),
    text_only_kwargs=(("return_audio", False),),
)
QWEN2_5_OMNI = Family(
    key="qwen2_5_omni",
    label="Qwen2.5-Omni",
    model_types=("qwen2_5_omni",),
    model_class="Qwen2_5OmniForConditionalGeneration",
    processor_class="Qwen2_5OmniProcessor",
    can_hear=True,
    has_talker_class=True,
    voices=("Chelsie", "Ethan"),
    coordinate_space="absolute_resized",
    speech_system_prompt=(
        "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
        "perceiving auditory and visual inputs, as well as generating text and speech."
    ),
    text_only_kwargs=(("generation_mode", "text"),),
)
QWEN3_VL = Family(
    key="qwen3_vl",
    label="Qwen3-VL",
    model_types=("qwen3_vl", "qwen3_vl_moe"),
    model_class="AutoModelForImageTextToText",
    processor_class="Qwen3VLProcessor",
    can_hear=False,
    has_talker_class=False,
)
FAMILIES = (QWEN3_OMNI, QWEN2_5_OMNI, QWEN3_VL)


def family_for_model_type(model_type: str) -> Family:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise ValueError(f"unsupported model_type {model_type!r}; the local runtime serves: {known}")
