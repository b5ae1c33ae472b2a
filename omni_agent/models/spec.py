"""Model selection strings, the same in Python, on the command line and in task files.

    qwen-omni:/path/to/checkpoint            local Qwen3-Omni / Qwen2.5-Omni (transformers)
    qwen-omni:Qwen/Qwen3-Omni-30B-A3B-Instruct   the same from a hub id (when online)
    qwen-vl:/path/to/checkpoint              local Qwen3-VL (vision-only Thinker), same runtime
    openai:http://127.0.0.1:8000/v1#NAME     an OpenAI-compatible server (vLLM, ...); without
                                             #NAME the first model the server lists is used
    scripted:FILE                            replays scripted outputs (never a model result)

Options follow a ``?`` as URL query pairs: ``openai:http://h:8000/v1#qwen?timeout=30&api_key_env=MY_KEY``
(the ``?`` may also come before ``#``), ``qwen-omni:/ckpt?device_map=cuda&talker=false``. Values
``true``/``false``/``none`` and numbers are converted; everything else stays a string.
"""

from __future__ import annotations

import difflib

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, ConfigDict, Field

from ..exceptions import MissingDependencyError, ModelUnavailableError, UserError

if TYPE_CHECKING:
    from .base import Model

__all__ = ["MODEL_SCHEMES", "ModelSpec", "load_model", "parse_model_spec"]

Scheme = Literal["qwen-omni", "qwen-vl", "openai", "scripted"]

MODEL_SCHEMES: dict[str, str] = {
    "qwen-omni": "qwen-omni:/path/to/checkpoint or qwen-omni:ORG/NAME (local transformers runtime)",
    "qwen-vl": "qwen-vl:/path/to/checkpoint (local Qwen3-VL, vision only)",
    "openai": "openai:http://127.0.0.1:8000/v1#model-name (OpenAI-compatible server)",
    "scripted": "scripted:FILE (replays scripted outputs; not a model)",
}
"""Every valid scheme with an example, as shown in error messages."""

# Options an ``openai:`` spec may carry, by the names users write -> constructor keyword.
_OPENAI_OPTIONS: dict[str, str] = {
    "timeout": "timeout_s",
    "timeout_s": "timeout_s",
    "connect_timeout": "connect_timeout_s",
    "connect_timeout_s": "connect_timeout_s",
    "retries": "max_retries",
    "max_retries": "max_retries",
    "backoff": "backoff_s",
    "backoff_s": "backoff_s",
    "max_backoff_s": "max_backoff_s",
    "api_key_env": "api_key_env",
    "tool_choice": "tool_choice",
    "can_hear": "can_hear",
    "can_see": "can_see",
    "can_speak": "can_speak",
    "coordinate_space": "coordinate_space",
    "media_root": "media_root",
    "image_quality": "image_quality",
    "video_as": "video_as",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSpec(BaseModel):
    """A parsed model selection string."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    scheme: Scheme
    target: str
    """Checkpoint path or hub id (qwen-*), API root URL (openai), script file (scripted)."""
    name: str | None = None
    """The served model name (openai, after ``#``); None: ask the server."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options for the backend, under their canonical names."""

    def __str__(self) -> str:
        text = f"{self.scheme}:{self.target}"
        if self.name:
            text += f"#{self.name}"
        if self.options:
            text += "?" + urlencode({k: _format_value(v) for k, v in self.options.items()})
        return text


def parse_model_spec(spec: str) -> ModelSpec:
    """Parse ``scheme:target[#name][?options]``; raises :class:`UserError` naming what is wrong."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"empty model spec; use one of: {_valid_list()}")
    text = spec.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.strip().lower()
    if not sep or scheme not in MODEL_SCHEMES:
        hint = ""
        if scheme in ("http", "https"):
            hint = f" (did you mean openai:{text}#MODEL-NAME?)"
        elif not sep and (Path(text).exists() or text.startswith(("/", "./", "~"))):
            hint = f" (did you mean qwen-omni:{text}?)"
        elif sep and (close := difflib.get_close_matches(scheme, list(MODEL_SCHEMES), n=1, cutoff=0.5)):
            hint = f" (did you mean {close[0]}:{rest}?)"
        shown = f"{scheme!r}" if sep else "no scheme"
        raise UserError(f"model spec {spec!r} has {shown}{hint}; use one of: {_valid_list()}")
    if scheme == "openai":
        return _parse_openai(spec, rest)
    target, _, query = rest.partition("?")
    target = target.strip()
    if not target:
        raise UserError(f"model spec {spec!r} names nothing after '{scheme}:'; e.g. {MODEL_SCHEMES[scheme]}")
    return ModelSpec(scheme=scheme, target=target, options=_parse_options(spec, query))  # type: ignore[arg-type]


def _parse_openai(spec: str, rest: str) -> ModelSpec:
    url_part, _, fragment = rest.partition("#")
    name, _, query_after = fragment.partition("?")
    url, _, query_before = url_part.partition("?")
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s?#]+", url):
        raise UserError(f"model spec {spec!r}: after 'openai:' comes the API root URL; e.g. {MODEL_SCHEMES['openai']}")
    raw = _parse_options(spec, query_before)
    for key, value in _parse_options(spec, query_after).items():
        if key in raw:
            raise UserError(f"model spec {spec!r} sets option {key!r} twice")
        raw[key] = value
    options: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "api_key":
            raise UserError(
                f"model spec {spec!r}: do not put an API key in a model spec (specs are written to task "
                "files and logs); put it in an environment variable and add ?api_key_env=NAME"
            )
        if key not in _OPENAI_OPTIONS:
            raise UserError(f"model spec {spec!r}: unknown option {key!r}; valid: {', '.join(sorted(_OPENAI_OPTIONS))}")
        canonical = _OPENAI_OPTIONS[key]
        if canonical in options:
            raise UserError(f"model spec {spec!r} sets option {canonical!r} twice")
        if canonical == "tool_choice" and value is None:
            value = "none"  # the tool_choice value "none", not a missing value
        options[canonical] = value
    return ModelSpec(scheme="openai", target=url, name=name.strip() or None, options=options)


def _parse_options(spec: str, query: str) -> dict[str, Any]:
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise UserError(f"model spec {spec!r}: options must be key=value pairs joined by '&', got {query!r}") from None
    options: dict[str, Any] = {}
    for key, value in pairs:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UserError(f"model spec {spec!r}: option name {key!r} is not an identifier")
        if key in options:
            raise UserError(f"model spec {spec!r} sets option {key!r} twice")
        options[key] = _coerce(value)
    return options


def _coerce(value: str) -> Any:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def _valid_list() -> str:
    return "; ".join(MODEL_SCHEMES.values())


def load_model(spec: str | ModelSpec, *, base_dir: str | os.PathLike[str] | None = None, **overrides: Any) -> "Model":
    """Build the model a spec names. ``overrides`` replace options from the string;
    ``base_dir`` resolves relative paths (a task file's folder)."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    options = {**parsed.options, **overrides}
    if parsed.scheme == "openai":
        return _load_openai(parsed, options)
    if parsed.scheme == "scripted":
        return _load_scripted(parsed, options, base_dir)
    return _load_qwen(parsed, options, base_dir)


def _load_openai(parsed: ModelSpec, options: dict[str, Any]) -> "Model":
    from .openai_compat import OpenAICompatModel

    env_name = options.pop("api_key_env", None)
    if env_name is not None and options.get("api_key") is None:
        key = os.environ.get(str(env_name))
        if not key:
            raise UserError(f"environment variable {env_name} (api_key_env in the model spec) is not set")
        options["api_key"] = key
    _check_options(OpenAICompatModel, parsed, options, parsed.target, parsed.name)
    return OpenAICompatModel(parsed.target, parsed.name, **options)


def _check_options(fn: Any, parsed: ModelSpec, options: dict[str, Any], *args: Any) -> None:
    """Reject unknown option names before building anything (a clear error, not a TypeError
    from deep inside a loader)."""
    import inspect

    signature = inspect.signature(fn)
    try:
        signature.bind(*args, **options)
    except TypeError as exc:
        valid = [
            name
            for name, p in signature.parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("self", "cls")
        ]
        raise UserError(f"cannot load {str(parsed)!r}: {exc}; valid options: {', '.join(valid)}") from None


def _resolve(target: str, base_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(target).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return path


def _load_scripted(parsed: ModelSpec, options: dict[str, Any], base_dir: str | os.PathLike[str] | None) -> "Model":
    path = _resolve(parsed.target, base_dir)
    if not path.is_file():
        raise UserError(f"scripted model file not found: {path} (from {str(parsed)!r})")
    from .scripted import ScriptedModel

    _check_options(ScriptedModel.from_file, parsed, options, path)
    return ScriptedModel.from_file(path, **options)


def _load_qwen(parsed: ModelSpec, options: dict[str, Any], base_dir: str | os.PathLike[str] | None) -> "Model":
    target = parsed.target
    path = _resolve(target, base_dir)
    looks_local = target.startswith(("/", "./", "../", "~", ".\\", "..\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", target))
    if path.exists():
        if not path.is_dir():
            raise ModelUnavailableError(f"{path} is a file; {parsed.scheme}: needs a checkpoint directory")
        location = str(path)
    elif looks_local or not _HUB_ID.match(target):
        raise ModelUnavailableError(
            f"checkpoint not found: {path} (from {str(parsed)!r}); give a checkpoint directory or a hub id ORG/NAME"
        )
    else:
        location = target  # a hub id: the runtime downloads it when online
    try:
        from ..runtime import QwenOmniModel
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        if missing.split(".")[0] in ("torch", "transformers", "accelerate", "tokenizers"):
            raise MissingDependencyError(missing.split(".")[0], "qwen") from exc
        raise
    _check_options(QwenOmniModel.load, parsed, options, location)
    return QwenOmniModel.load(location, **options)
