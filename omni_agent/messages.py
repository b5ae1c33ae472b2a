"""Provider-neutral conversation types.

A conversation is a list of messages (system, user, assistant, tool); each message holds content
parts (text, image, audio, video). Media can live in memory (a PIL image, a numpy waveform) or on
disk (``path``). When a conversation is written to JSON, in-memory media is first saved as files
beside it by a :class:`MediaStore`, so logs never hold base64 blobs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter

__all__ = [
    "AssistantMessage",
    "AudioPart",
    "ContentPart",
    "ImagePart",
    "MediaStore",
    "Message",
    "SystemMessage",
    "TextPart",
    "ToolCall",
    "ToolMessage",
    "ToolResult",
    "UserMessage",
    "VideoPart",
    "dump_messages",
    "load_messages",
    "new_call_id",
]


class _Part(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")


class TextPart(_Part):
    kind: Literal["text"] = "text"
    text: str


class ImagePart(_Part):
    """An image, in memory (``image``, a PIL image) and/or on disk (``path``)."""

    kind: Literal["image"] = "image"
    path: str | None = None
    media_type: str | None = None
    width: int | None = None
    height: int | None = None
    _image: Any = PrivateAttr(default=None)

    @classmethod
    def from_pil(cls, image: Any) -> "ImagePart":
        part = cls(width=image.width, height=image.height)
        part._image = image
        return part

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> "ImagePart":
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        return cls(path=str(path), width=w, height=h, media_type=_guess_media_type(str(path)))

    def load(self, base_dir: str | os.PathLike[str] | None = None) -> Any:
        """Return the PIL image (decoding the file on first use)."""
        if self._image is None:
            if self.path is None:
                raise ValueError("ImagePart has neither an in-memory image nor a path")
            from PIL import Image

            p = Path(self.path)
            if base_dir is not None and not p.is_absolute():
                p = Path(base_dir) / p
            with Image.open(p) as im:
                im.load()
                self._image = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
            self.width, self.height = self._image.size
        return self._image

    def encode(self, fmt: str = "JPEG", quality: int = 85) -> bytes:
        """Encode the image (JPEG for model transport, PNG for lossless logs)."""
        image = self.load()
        buf = io.BytesIO()
        if fmt.upper() == "JPEG":
            image.convert("RGB").save(buf, format="JPEG", quality=quality)
        else:
            image.save(buf, format=fmt.upper(), compress_level=1)
        return buf.getvalue()


class AudioPart(_Part):
    """Audio, in memory (float32 mono ``samples`` at ``sample_rate``) and/or on disk (``path``)."""

    kind: Literal["audio"] = "audio"
    path: str | None = None
    sample_rate: int | None = None
    duration_s: float | None = None
    transcript: str | None = None
    _samples: Any = PrivateAttr(default=None)

    @classmethod
    def from_array(cls, samples: Any, sample_rate: int, transcript: str | None = None) -> "AudioPart":
        arr = np.asarray(samples, dtype=np.float32)
        if arr.ndim > 1:
            arr = arr.mean(axis=-1 if arr.shape[-1] < arr.shape[0] else 0)
        part = cls(sample_rate=sample_rate, duration_s=len(arr) / sample_rate, transcript=transcript)
        part._samples = arr
        return part

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], transcript: str | None = None) -> "AudioPart":
        return cls(path=str(path), transcript=transcript)

    def load(self, base_dir: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, int]:
        """Return (float32 mono samples, sample rate), decoding the file on first use."""
        if self._samples is None:
            if self.path is None:
                raise ValueError("AudioPart has neither samples nor a path")
            p = Path(self.path)
            if base_dir is not None and not p.is_absolute():
                p = Path(base_dir) / p
            samples, rate = read_audio_file(p)
            self._samples, self.sample_rate = samples, rate
            self.duration_s = len(samples) / rate
        assert self.sample_rate is not None
        return self._samples, self.sample_rate


class VideoPart(_Part):
    """A video, by path only (video decoding is left to the model backend)."""

    kind: Literal["video"] = "video"
    path: str


ContentPart = Annotated[Union[TextPart, ImagePart, AudioPart, VideoPart], Field(discriminator="kind")]


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:12]


class ToolCall(BaseModel):
    """One function call the model asked for."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(default_factory=new_call_id)
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResult(BaseModel):
    """What a tool returned for one call: text and images, and whether it is an error."""

    model_config = ConfigDict(extra="forbid")
    call_id: str
    name: str
    content: list[ContentPart] = Field(default_factory=list)
    is_error: bool = False

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: list[ContentPart] = Field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)]

    @property
    def audios(self) -> list[AudioPart]:
        return [p for p in self.content if isinstance(p, AudioPart)]


def _as_parts(content: Any) -> Any:
    if isinstance(content, str):
        return [TextPart(text=content)]
    return content


class SystemMessage(_Message):
    role: Literal["system"] = "system"

    def __init__(self, content: Any = None, **kw: Any) -> None:
        super().__init__(content=_as_parts(content) if content is not None else [], **kw)


class UserMessage(_Message):
    role: Literal["user"] = "user"

    def __init__(self, content: Any = None, **kw: Any) -> None:
        super().__init__(content=_as_parts(content) if content is not None else [], **kw)


class AssistantMessage(_Message):
    """The model's turn: visible text, separated thinking, the calls it made and its raw text."""

    role: Literal["assistant"] = "assistant"
    thinking: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    raw_text: str | None = None

    def __init__(self, content: Any = None, **kw: Any) -> None:
        super().__init__(content=_as_parts(content) if content is not None else [], **kw)


class ToolMessage(BaseModel):
    """One tool result fed back to the model (results are kept in call order)."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["tool"] = "tool"
    result: ToolResult

    @property
    def content(self) -> list[ContentPart]:
        return self.result.content


Message = Annotated[
    Union[SystemMessage, UserMessage, AssistantMessage, ToolMessage], Field(discriminator="role")
]
_MESSAGES = TypeAdapter(list[Message])


def _guess_media_type(path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower()
    return {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}.get(
        ext, "application/octet-stream"
    )


def read_audio_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode an audio file to float32 mono. soundfile when installed (wav/flac/ogg/mp3), else wav."""
    try:
        import soundfile as sf
    except ImportError:
        sf = None
    if sf is not None:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return data.mean(axis=1).astype(np.float32), int(rate)
    import wave

    with wave.open(str(path), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: only 16-bit PCM WAV without soundfile (pip install soundfile)")
    arr = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return arr.reshape(-1, channels).mean(axis=1), rate


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Write float samples as 16-bit PCM WAV with the standard library (no extra dependency)."""
    import wave

    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    tmp = f"{path}.tmp"
    with wave.open(tmp, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    os.replace(tmp, path)


class MediaStore:
    """Saves in-memory media as content-addressed files in ``root`` (paths stored relative).

    Screenshots are saved as PNG by default (lossless: replay compares them); pass
    ``image_format="JPEG"`` for smaller logs.
    """

    def __init__(self, root: str | os.PathLike[str], *, subdir: str = "media", image_format: str = "PNG"):
        self.root = Path(root)
        self.subdir = subdir
        self.image_format = image_format.upper()
        (self.root / subdir).mkdir(parents=True, exist_ok=True)

    def _write(self, data: bytes, ext: str) -> str:
        digest = hashlib.sha256(data).hexdigest()[:20]
        rel = f"{self.subdir}/{digest}.{ext}"
        target = self.root / rel
        if not target.exists():
            tmp = target.with_suffix(target.suffix + f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return rel

    def persist(self, part: Any) -> Any:
        """Return a copy of ``part`` whose media is on disk under ``root`` (relative path)."""
        if isinstance(part, ImagePart) and part._image is not None and (part.path is None or Path(part.path).is_absolute()):
            fmt = self.image_format
            data = part.encode(fmt)
            rel = self._write(data, "png" if fmt == "PNG" else "jpg")
            new = part.model_copy(update={"path": rel, "media_type": _guess_media_type(rel)})
            new._image = part._image
            return new
        if isinstance(part, AudioPart) and part._samples is not None and (part.path is None or Path(part.path).is_absolute()):
            buf = io.BytesIO()
            import wave

            pcm = (np.clip(part._samples, -1, 1) * 32767).astype("<i2")
            with wave.open(buf, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(int(part.sample_rate or 16000))
                w.writeframes(pcm.tobytes())
            rel = self._write(buf.getvalue(), "wav")
            new = part.model_copy(update={"path": rel})
            new._samples = part._samples
            return new
        return part

    def persist_message(self, message: Any) -> Any:
        if isinstance(message, ToolMessage):
            parts = [self.persist(p) for p in message.result.content]
            return ToolMessage(result=message.result.model_copy(update={"content": parts}))
        parts = [self.persist(p) for p in message.content]
        return message.model_copy(update={"content": parts})


def dump_messages(messages: list[Any], store: MediaStore | None = None) -> list[dict[str, Any]]:
    """Messages -> JSON-ready dicts; media is saved through ``store`` first when given."""
    if store is not None:
        messages = [store.persist_message(m) for m in messages]
    return [m.model_dump(mode="json") for m in messages]


def load_messages(data: list[dict[str, Any]] | str) -> list[Any]:
    """JSON (a list of dicts or a JSON string) -> messages. Media paths stay relative."""
    if isinstance(data, str):
        data = json.loads(data)
    return _MESSAGES.validate_python(data)
