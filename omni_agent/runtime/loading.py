"""Load a Qwen-Omni / Qwen3-VL checkpoint (local directory, or a hub id when the user opts in).

One path for every checkpoint, real or tiny: read ``config.json`` -> pick the family from its
``model_type`` -> load the processor (``AutoProcessor`` first; built from its parts when that
fails, e.g. without torchvision) -> load the model with the chosen dtype, device map and
attention implementation -> apply the guarded upstream work-arounds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..exceptions import MissingDependencyError, ModelUnavailableError, UserError
from .families import Family, family_for_model_type
from .media import ImageSpec

__all__ = [
    "LoadedCheckpoint",
    "SUPPORTED_TRANSFORMERS",
    "check_transformers_version",
    "choose_attn_implementation",
    "load_checkpoint",
    "load_processor",
    "read_model_type",
]

SUPPORTED_TRANSFORMERS = ((5, 23), (5, 23))
"""Inclusive (major, minor) range verified end to end: 5.23.x (5.23.0 tested). Earlier 5.x
releases return a different generate() shape and lack batched audio; 4.57 differs again.
Set OMNI_AGENT_ALLOW_UNVERIFIED_TRANSFORMERS=1 to try another version at your own risk."""


def check_transformers_version(version: str | None = None) -> str:
    """Return the installed transformers version or raise a clear error for an unverified one."""
    if version is None:
        try:
            import transformers
        except ImportError as exc:
            raise MissingDependencyError("transformers", "qwen") from exc
        version = transformers.__version__
    parts = version.split(".")
    try:
        major_minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        major_minor = (0, 0)
    low, high = SUPPORTED_TRANSFORMERS
    if not (low <= major_minor <= high) and os.environ.get("OMNI_AGENT_ALLOW_UNVERIFIED_TRANSFORMERS") != "1":
        raise ModelUnavailableError(
            f"transformers {version} is not supported by the local Qwen runtime (verified: "
            f"{low[0]}.{low[1]}.x, tested on 5.23.0). Install it with: pip install 'transformers==5.23.0' "
            "(or set OMNI_AGENT_ALLOW_UNVERIFIED_TRANSFORMERS=1 to try anyway)"
        )
    return version


def read_model_type(path_or_id: str | os.PathLike[str], *, local_files_only: bool = True) -> str:
    """``model_type`` from the checkpoint's config.json (the only place the family is read from)."""
    path = Path(path_or_id)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ModelUnavailableError(f"{path} has no config.json: not a transformers checkpoint")
    elif local_files_only:
        if path.exists() or str(path_or_id).startswith((".", "/", "~")):
            raise ModelUnavailableError(f"no checkpoint directory at {path}")
        try:
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(str(path_or_id), "config.json", local_files_only=True))
        except Exception as exc:  # any hub error here means "not in the local cache"
            raise ModelUnavailableError(
                f"{path_or_id!r} is neither a local directory nor in the local Hugging Face cache; "
                "pass a checkpoint directory, or local_files_only=False to download it"
            ) from exc
    else:
        try:
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(str(path_or_id), "config.json"))
        except Exception as exc:
            raise ModelUnavailableError(f"cannot fetch config.json of {path_or_id!r}: {exc}") from exc
    try:
        data = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelUnavailableError(f"{config_file} is not readable JSON: {exc}") from exc
    model_type = data.get("model_type")
    if not isinstance(model_type, str):
        raise ModelUnavailableError(f"{config_file} has no model_type")
    return model_type


def choose_attn_implementation(requested: str | None, *, cuda: bool) -> str:
    """flash_attention_2 when flash-attn is installed and CUDA is there, else sdpa."""
    if requested is not None:
        return requested
    if cuda:
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


class VideoUnavailable:
    """Stands in for the video processor where transformers cannot build one (no torchvision).

    The processor classes insist on a video processor; images and audio do not need one. Video
    input then fails with this clear message instead of an import error deep in transformers.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ModelUnavailableError(
            "video input needs torchvision (transformers' video processors require it); "
            "install a torchvision matching your torch to send VideoPart inputs"
        )

    def to_dict(self) -> dict[str, Any]:
        return {}


def _processor_from_parts(path: str, family: Family, *, local_files_only: bool) -> Any:
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    kw = {"local_files_only": local_files_only}
    tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    image_processor = AutoImageProcessor.from_pretrained(path, **kw)
    parts: dict[str, Any] = {"image_processor": image_processor, "tokenizer": tokenizer}
    try:
        from transformers import AutoVideoProcessor

        parts["video_processor"] = AutoVideoProcessor.from_pretrained(path, **kw)
    except Exception:  # without torchvision no video processor can be built: see VideoUnavailable
        parts["video_processor"] = VideoUnavailable()
    if family.can_hear:
        from transformers import WhisperFeatureExtractor

        parts["feature_extractor"] = WhisperFeatureExtractor.from_pretrained(path, **kw)
    base = getattr(transformers, family.processor_class)

    class _Processor(base):  # type: ignore[misc, valid-type]
        # Accept the video stand-in; every other part is still type-checked by transformers.
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if isinstance(argument, VideoUnavailable):
                return VideoUnavailable
            return super().check_argument_for_proper_class(argument_name, argument)

    _Processor.__name__ = _Processor.__qualname__ = base.__name__
    template = _read_chat_template(path, tokenizer)
    return _Processor(**parts, chat_template=template)


def _read_chat_template(path: str, tokenizer: Any) -> str | None:
    root = Path(path)
    if root.is_dir():
        jinja = root / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text()
        js = root / "chat_template.json"
        if js.is_file():
            return json.loads(js.read_text()).get("chat_template")
    return getattr(tokenizer, "chat_template", None)


def load_processor(path: str, family: Family, *, local_files_only: bool = True) -> Any:
    """AutoProcessor when it works; else the family's processor built from its parts."""
    try:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(path, local_files_only=local_files_only)
        if type(processor).__name__ == family.processor_class:
            return processor
    except Exception:  # typically: torchvision missing for the video processor
        pass
    try:
        return _processor_from_parts(path, family, local_files_only=local_files_only)
    except ModelUnavailableError:
        raise
    except Exception as exc:
        raise ModelUnavailableError(f"cannot build the {family.label} processor from {path}: {exc}") from exc


def apply_image_spec(processor: Any, spec: ImageSpec) -> None:
    """Make the processor's own resize agree with ours (it then leaves our images as they are)."""
    image_processor = processor.image_processor
    size = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
    try:
        image_processor.size = type(image_processor.size)(**size) if image_processor.size is not None else size
    except TypeError:
        image_processor.size = size
    for name, value in (("min_pixels", spec.min_pixels), ("max_pixels", spec.max_pixels)):
        if hasattr(image_processor, name):
            setattr(image_processor, name, value)


def image_factor(processor: Any) -> int:
    """Pixels per LLM token along one side: patch size x spatial merge, read from the processor."""
    ip = processor.image_processor
    return int(ip.patch_size) * int(ip.merge_size)


@dataclass
class LoadedCheckpoint:
    model: Any
    processor: Any
    family: Family
    path: str
    has_talker: bool
    image_spec: ImageSpec


def _talker_weights_present(path: str) -> bool:
    """Whether the checkpoint holds Talker weights (Thinking / Captioner checkpoints do not)."""
    root = Path(path)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        keys = json.loads(index.read_text()).get("weight_map", {})
        return any(k.startswith("talker.") for k in keys)
    single = root / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), "pt") as f:
            return any(k.startswith("talker.") for k in f.keys())
    return True  # hub id or another layout: trust config.enable_audio_output


def load_checkpoint(
    path_or_id: str | os.PathLike[str],
    *,
    dtype: str = "auto",
    device_map: str | dict[str, Any] | None = "auto",
    attn_implementation: str | None = None,
    enable_talker: bool = False,
    image_spec: ImageSpec | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    local_files_only: bool = True,
) -> LoadedCheckpoint:
    """Load model + processor through the one code path every checkpoint takes."""
    check_transformers_version()
    path = str(Path(path_or_id).expanduser()) if Path(path_or_id).expanduser().exists() else str(path_or_id)
    model_type = read_model_type(path, local_files_only=local_files_only)
    try:
        family = family_for_model_type(model_type)
    except ValueError as exc:
        raise ModelUnavailableError(str(exc)) from exc
    import torch
    import transformers

    from .workarounds import apply_load_workarounds

    config = transformers.AutoConfig.from_pretrained(path, local_files_only=local_files_only)
    can_output_audio = bool(getattr(config, "enable_audio_output", False)) and family.has_talker_class
    if enable_talker and not can_output_audio:
        kind = f"{family.label} Thinking/Captioner" if family.has_talker_class else family.label
        raise UserError(
            f"{path} has no Talker ({kind} checkpoints cannot speak); load it without the Talker "
            "(enable_talker=False, or drop ?talker=true from the model spec) and speak with espeak-ng"
        )
    if enable_talker and Path(path).is_dir() and not _talker_weights_present(path):
        raise UserError(f"{path} says it has a Talker but holds no talker weights; use enable_talker=False")
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": choose_attn_implementation(attn_implementation, cuda=torch.cuda.is_available()),
        "local_files_only": local_files_only,
    }
    if device_map is not None and (device_map != "auto" or torch.cuda.is_available()):
        kwargs["device_map"] = device_map
    if family.has_talker_class:
        kwargs["enable_audio_output"] = enable_talker
    model_class = getattr(transformers, family.model_class)
    try:
        model = model_class.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot load {family.label} weights from {path}: {exc}") from exc
    model.eval()
    apply_load_workarounds(model, family)
    processor = load_processor(path, family, local_files_only=local_files_only)
    factor = image_factor(processor)
    if image_spec is None:
        image_spec = ImageSpec(
            factor=factor,
            min_pixels=min_pixels or factor * factor * 4,
            max_pixels=max_pixels or factor * factor * 2048,
        )
    elif image_spec.factor != factor:
        raise UserError(f"image_spec.factor={image_spec.factor} but this checkpoint's grid is {factor} pixels")
    apply_image_spec(processor, image_spec)
    return LoadedCheckpoint(
        model=model, processor=processor, family=family, path=path, has_talker=enable_talker, image_spec=image_spec
    )
