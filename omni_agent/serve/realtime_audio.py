"""Realtime audio both ways: PCM16 24 kHz base64 in, turn detection with our VAD, PCM16 out.

The client's audio is kept at 24 kHz until a turn is committed, then resampled once to the
16 kHz the Thinker's audio encoder takes (``voice.audio_io.resample``). Server VAD runs on a
streamed 16 kHz copy (soxr's streaming resampler, as the microphone does) through the project's
``UtteranceSegmenter``, so a spoken turn here is cut exactly as ``omni-agent listen`` cuts one.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Union

import numpy as np

from ..voice.audio_io import INPUT_RATE, resample
from ..voice.vad import SpeechStarted, UtteranceEnded, UtteranceSegmenter, VADSettings
from .realtime_events import AUDIO_RATE, ProtocolError, TurnDetection

__all__ = [
    "MAX_BUFFER_S",
    "InputAudioBuffer",
    "ServerVAD",
    "SpeechBegan",
    "SpeechEnded",
    "TurnEvent",
    "decode_pcm16",
    "encode_pcm16",
]

MAX_BUFFER_S = 15 * 60
"""Audio one uncommitted buffer may hold (OpenAI's limit too); more is refused, not dropped."""


def decode_pcm16(data: str, *, param: str = "audio") -> np.ndarray:
    """Base64 little-endian PCM16 -> float32 samples in [-1, 1)."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"{param} is not valid base64 ({exc})", code="invalid_audio", param=param) from exc
    if len(raw) % 2:
        raise ProtocolError(f"{param} has an odd number of bytes: PCM16 samples are 2 bytes each",
                            code="invalid_audio", param=param)  # fmt: skip
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def encode_pcm16(samples: np.ndarray, rate: int) -> tuple[str, int]:
    """float32 samples at ``rate`` -> (base64 PCM16 at 24 kHz, sample count at 24 kHz)."""
    out = resample(np.asarray(samples, dtype=np.float32), rate, AUDIO_RATE) if rate != AUDIO_RATE else samples
    pcm = (np.clip(np.asarray(out, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode("ascii"), int(pcm.size)


class InputAudioBuffer:
    """The uncommitted 24 kHz input, and how much audio the session has received in all."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._size = 0
        self.received = 0
        """Samples received since the session began (for ``audio_start_ms`` / ``audio_end_ms``)."""

    @property
    def duration_ms(self) -> float:
        return self._size * 1000 / AUDIO_RATE

    def append(self, samples: np.ndarray) -> None:
        if self._size + samples.size > MAX_BUFFER_S * AUDIO_RATE:
            raise ProtocolError(f"the input audio buffer is full ({MAX_BUFFER_S // 60} minutes): commit or clear it",
                                code="input_audio_buffer_full")  # fmt: skip
        self._chunks.append(samples)
        self._size += samples.size
        self.received += samples.size

    def take_16k(self) -> np.ndarray:
        """Everything buffered, resampled for the Thinker; the buffer is then empty."""
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
        self.clear()
        return resample(samples, AUDIO_RATE, INPUT_RATE)

    def clear(self) -> None:
        self._chunks, self._size = [], 0


@dataclass(frozen=True)
class SpeechBegan:
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechEnded:
    audio_end_ms: int
    samples: np.ndarray | None
    """The utterance at 16 kHz (with padding), or None when it was too short to be a turn."""


TurnEvent = Union[SpeechBegan, SpeechEnded]


class ServerVAD:
    """``server_vad`` turn detection: 24 kHz chunks in, speech began / ended events out."""

    def __init__(self, settings: TurnDetection) -> None:
        import soxr

        from ..voice.vad import SileroVAD

        self.settings = settings
        vad_settings = VADSettings(threshold=settings.threshold, min_silence_ms=settings.silence_duration_ms,
                                   pad_ms=settings.prefix_padding_ms)  # fmt: skip
        self._segmenter = UtteranceSegmenter(SileroVAD(), vad_settings)
        self._resampler = soxr.ResampleStream(AUDIO_RATE, INPUT_RATE, 1, dtype="float32")
        self._offset_ms = 0.0  # session time at which this VAD started listening
        self._open = False  # speech began and has not ended yet

    def start_at(self, offset_ms: float) -> None:
        self._offset_ms = offset_ms

    @property
    def in_speech(self) -> bool:
        return self._segmenter.in_speech

    def feed(self, samples: np.ndarray) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        for event in self._segmenter.feed(self._resampler.resample_chunk(samples)):
            if isinstance(event, SpeechStarted):
                self._open = True
                events.append(SpeechBegan(self._ms(event.at_s)))
            elif isinstance(event, UtteranceEnded):
                self._open = False
                events.append(SpeechEnded(self._ms(event.utterance.end_s), event.utterance.samples))
        if self._open and not self._segmenter.in_speech:
            # a burst shorter than a turn (a click, a cough): speech stopped, nothing to commit
            self._open = False
            events.append(SpeechEnded(self._ms(self._segmenter.seconds_consumed), None))
        return events

    def reset(self) -> None:
        """Forget the audio heard so far (the buffer was committed or cleared by the client)."""
        self._segmenter.reset()
        self._open = False
        self._resampler = type(self._resampler)(AUDIO_RATE, INPUT_RATE, 1, dtype="float32")

    def _ms(self, seconds: float) -> int:
        return int(round(self._offset_ms + seconds * 1000))
