"""Audio in: any file (wav, flac, ogg, mp3, ...) or array -> float32 mono at 16 kHz.

Qwen-Omni's Whisper-style audio encoder and the silero VAD both take 16 kHz mono, so every
spoken command is brought to that shape here, once. Decoding uses libsndfile (through
soundfile: wav/flac/ogg/mp3); formats it cannot read (m4a, webm, ...) fall back to the
``ffmpeg`` program when it is installed. Resampling is soxr's (a well-kept, fast, high-quality
resampler; no hand-written filter).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..exceptions import UserError
from ..messages import AudioPart

__all__ = [
    "INPUT_RATE",
    "AudioDecodeError",
    "AudioInput",
    "command_part",
    "decode_audio",
    "resample",
    "to_mono",
]

INPUT_RATE = 16_000
"""Sample rate of everything that goes into the VAD and the model (Whisper-style encoders)."""

AudioInput = Union[str, os.PathLike, bytes, AudioPart, tuple[Any, int]]
"""A file path, encoded file bytes, an :class:`AudioPart`, or ``(samples, sample_rate)``."""

_FFMPEG_TIMEOUT_S = 60.0


class AudioDecodeError(UserError):
    """An audio input that cannot be decoded (missing, empty, corrupt or an unknown format)."""


def to_mono(samples: Any) -> np.ndarray:
    """float32 mono: channels are averaged (frames x channels, the soundfile layout)."""
    arr = np.asarray(samples, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr.mean(axis=1) if arr.shape[0] >= arr.shape[1] else arr.mean(axis=0)
    elif arr.ndim != 1:
        raise AudioDecodeError(f"audio must be 1-D or 2-D (frames x channels), got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def resample(samples: np.ndarray, from_rate: int, to_rate: int = INPUT_RATE) -> np.ndarray:
    """Resample mono float32 audio with soxr (identity when the rates match)."""
    if from_rate <= 0 or to_rate <= 0:
        raise AudioDecodeError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    import soxr

    return np.asarray(soxr.resample(samples, from_rate, to_rate, quality="HQ"), dtype=np.float32)


def decode_audio(source: AudioInput, *, rate: int = INPUT_RATE) -> np.ndarray:
    """Decode ``source`` to float32 mono samples at ``rate`` (16 kHz by default).

    Raises:
        AudioDecodeError: missing or empty file, unknown format, no samples, NaN samples.
    """
    if isinstance(source, AudioPart):
        try:
            samples, src_rate = source.load()
        except FileNotFoundError as exc:
            raise AudioDecodeError(f"audio file not found: {source.path}") from exc
        except AudioDecodeError:
            raise
        except Exception as exc:  # soundfile / wave errors name the format problem
            if source.path:
                return decode_audio(source.path, rate=rate)
            raise AudioDecodeError(f"cannot read audio: {exc}") from exc
        mono = to_mono(samples)
    elif isinstance(source, tuple):
        if len(source) != 2:
            raise AudioDecodeError("audio tuples must be (samples, sample_rate)")
        mono, src_rate = to_mono(source[0]), int(source[1])
    elif isinstance(source, (bytes, bytearray)):
        mono, src_rate = _decode_bytes(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        mono, src_rate = _decode_file(Path(source))
    else:
        raise AudioDecodeError(
            f"audio must be a path, bytes, an AudioPart or (samples, rate), got {type(source).__name__}"
        )
    if mono.size == 0:
        raise AudioDecodeError("the audio has no samples")
    if not np.isfinite(mono).all():
        raise AudioDecodeError("the audio contains NaN or infinite samples")
    return resample(mono, int(src_rate), rate)


def command_part(source: AudioInput, *, transcript: str | None = None) -> AudioPart:
    """A spoken command as the user turn's :class:`AudioPart` (16 kHz mono, decoded once)."""
    return AudioPart.from_array(decode_audio(source), INPUT_RATE, transcript=transcript)


def _decode_file(path: Path) -> tuple[np.ndarray, int]:
    if not path.is_file():
        raise AudioDecodeError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"audio file is empty: {path}")
    import soundfile as sf

    try:
        data, src_rate = sf.read(str(path), dtype="float32", always_2d=True)
        return to_mono(data), int(src_rate)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        first_error = str(exc)
    return _decode_with_ffmpeg(str(path), f"{path}: {first_error}")


def _decode_bytes(data: bytes) -> tuple[np.ndarray, int]:
    if not data:
        raise AudioDecodeError("the audio bytes are empty")
    import io

    import soundfile as sf

    try:
        arr, src_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return to_mono(arr), int(src_rate)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        first_error = str(exc)
    return _decode_with_ffmpeg("pipe:0", first_error, stdin=data)


def _decode_with_ffmpeg(src: str, why: str, *, stdin: bytes | None = None) -> tuple[np.ndarray, int]:
    """Formats libsndfile cannot read (m4a, webm, ...): ffmpeg decodes straight to 16 kHz mono."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioDecodeError(f"cannot decode audio ({why}); install ffmpeg for more formats")
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", *(["-nostdin"] if stdin is None else []),
           "-i", src, "-f", "f32le", "-ac", "1", "-ar", str(INPUT_RATE), "pipe:1"]  # fmt: skip
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AudioDecodeError(f"ffmpeg took over {_FFMPEG_TIMEOUT_S:g} s decoding the audio") from exc
    if done.returncode != 0 or not done.stdout:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise AudioDecodeError(f"cannot decode audio ({why}; ffmpeg: {detail[-1] if detail else 'no output'})")
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32), INPUT_RATE
