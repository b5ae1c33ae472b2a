"""Guarded fixes for known upstream bugs (transformers 5.23). Each checks whether it is still
needed and does nothing once upstream has fixed it; each has a test in tests/test_runtime_*.

1. Qwen3-Omni Talker MoE experts are left uninitialised on a freshly built (random) model
   (values ~1e37 / NaN). Only random builds need this: real checkpoints load the weights.
2. Qwen3-Omni talker config without ``audio_config``: audio input + speech output raises
   ``AttributeError``. Copy the thinker's audio config.
3. Qwen3-Omni Talker emitting codec EOS at its first step crashes (``stack expects a non-empty
   TensorList``): keep ``talker_min_new_tokens >= 2``.
4. Qwen2.5-Omni image input + speech output: ``pixel_values`` leaks into the Talker's
   generate(); pass ``talker_pixel_values=None``.
"""

from __future__ import annotations

from typing import Any

from .families import Family

__all__ = [
    "TALKER_MIN_NEW_TOKENS",
    "apply_load_workarounds",
    "guard_generate_kwargs",
    "init_untrained_talker_experts",
    "set_talker_audio_config",
]

TALKER_MIN_NEW_TOKENS = 2
_EXPERT_SANE_ABS_MAX = 1e3


def init_untrained_talker_experts(model: Any, *, std: float | None = None) -> bool:
    """Fix 1: give uninitialised Talker expert weights a normal init. Returns True if it did.

    Only tensors that are non-finite or absurdly large (what uninitialised memory looks like)
    are touched, so a correctly initialised or loaded model is left exactly as it is.
    """
    import torch

    talker = getattr(model, "talker", None)
    if talker is None:
        return False
    std = std if std is not None else float(getattr(model.config, "initializer_range", 0.02) or 0.02)
    changed = False
    with torch.no_grad():
        for name, param in talker.named_parameters():
            if ".experts." not in name or param.device.type == "meta":
                continue
            bad = ~torch.isfinite(param).all() or param.abs().max() > _EXPERT_SANE_ABS_MAX
            if bool(bad):
                param.normal_(mean=0.0, std=std)
                changed = True
    return changed


def set_talker_audio_config(model: Any) -> bool:
    """Fix 2: the Talker reads ``config.talker_config.audio_config``; copy the thinker's."""
    config = getattr(model, "config", None)
    talker_config = getattr(config, "talker_config", None)
    thinker_config = getattr(config, "thinker_config", None)
    if talker_config is None or thinker_config is None or getattr(thinker_config, "audio_config", None) is None:
        return False
    if getattr(talker_config, "audio_config", None) is not None:
        return False
    talker_config.audio_config = thinker_config.audio_config
    return True


def apply_load_workarounds(model: Any, family: Family) -> list[str]:
    """Fixes applied right after loading; returns the names of those that were needed."""
    applied = []
    if family.key == "qwen3_omni" and getattr(model, "has_talker", False):
        if set_talker_audio_config(model):
            applied.append("talker_audio_config")
    return applied


def guard_generate_kwargs(family: Family, kwargs: dict[str, Any], *, return_audio: bool) -> dict[str, Any]:
    """Fixes 3 and 4 on the kwargs of one generate() call (a copy is returned)."""
    out = dict(kwargs)
    if not return_audio:
        return out
    if family.key == "qwen3_omni":
        out["talker_min_new_tokens"] = max(TALKER_MIN_NEW_TOKENS, int(out.get("talker_min_new_tokens") or 0))
    if family.key == "qwen2_5_omni" and out.get("pixel_values") is not None:
        out.setdefault("talker_pixel_values", None)
    return out
