"""Voice-activity detection: where an utterance starts and ends.

The model is silero-vad's ONNX file, which ships inside the ``silero-vad`` pip package; it is run
with onnxruntime directly (about 0.1 ms per 32 ms chunk on a CPU core). ``import silero_vad``
itself would pull in torch, so only the package's data file is used: nothing is downloaded.

:class:`UtteranceSegmenter` turns a stream of 16 kHz samples (a microphone, or a whole file fed
at once) into :class:`SpeechStarted` / :class:`UtteranceEnded` events with a hysteresis like
silero's own ``get_speech_timestamps``: speech begins above ``threshold``, ends after
``min_silence_ms`` below ``threshold - 0.15``; utterances shorter than ``min_speech_ms`` are
dropped and the kept ones are padded by ``pad_ms``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..exceptions import MissingDependencyError
from .audio_io import INPUT_RATE

__all__ = [
    "CHUNK",
    "SegmentEvent",
    "SileroVAD",
    "SpeechStarted",
    "Utterance",
    "UtteranceEnded",
    "UtteranceSegmenter",
    "VADSettings",
    "segment_utterances",
    "silero_model_path",
]

CHUNK = 512
"""Samples per VAD window at 16 kHz (32 ms): the size the silero model takes."""
_CONTEXT = 64
"""Samples of the previous window the model sees before each new one (silero v5+)."""


def silero_model_path() -> Path:
    """The ONNX file inside the installed ``silero-vad`` package (found without importing it)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("silero-vad", "voice")
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    raise MissingDependencyError("silero-vad (its data/silero_vad.onnx is missing; reinstall it)", "voice")


class SileroVAD:
    """Streaming speech probability per 512-sample window (16 kHz), with the model's state."""

    def __init__(self, model_path: str | Path | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime", "voice") from exc
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1  # one window is tiny: threads only add overhead
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(model_path or silero_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(INPUT_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget the previous audio (start of a new stream)."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT), dtype=np.float32)

    def probability(self, window: np.ndarray) -> float:
        """Speech probability of the next 512 samples (shorter windows are zero-padded)."""
        x = np.asarray(window, dtype=np.float32).reshape(1, -1)
        if x.shape[1] > CHUNK:
            raise ValueError(f"a VAD window is at most {CHUNK} samples, got {x.shape[1]}")
        if x.shape[1] < CHUNK:
            x = np.pad(x, ((0, 0), (0, CHUNK - x.shape[1])))
        x = np.concatenate([self._context, x], axis=1)
        out, self._state = self.session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[:, -_CONTEXT:]
        return float(out.reshape(-1)[0])


class VADSettings(BaseModel):
    """When speech starts and when an utterance is over."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold: float = Field(0.5, gt=0, lt=1)
    """Speech starts when the probability is above this."""
    min_silence_ms: int = Field(400, ge=32)
    """An utterance ends after this much silence (below ``threshold - 0.15``)."""
    min_speech_ms: int = Field(200, ge=0)
    """Shorter bursts (a click, a cough) are not utterances."""
    pad_ms: int = Field(60, ge=0)
    """Audio kept before the start and after the end of an utterance."""
    max_utterance_s: float = Field(30.0, gt=0)
    """A longer utterance is cut here (the model's audio window is limited too)."""


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech: 16 kHz float32 mono samples, and where it was in the stream."""

    samples: np.ndarray = field(repr=False)
    start_s: float
    """Start of the speech (before padding), seconds from the start of the stream."""
    end_s: float
    """End of the speech (before padding): where the speaker stopped talking."""
    rate: int = INPUT_RATE

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate

    def part(self, transcript: str | None = None) -> Any:
        """The utterance as the :class:`AudioPart` of a user turn."""
        from ..messages import AudioPart

        return AudioPart.from_array(self.samples, self.rate, transcript=transcript)


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began at ``at_s`` (the moment barge-in should stop the speaker)."""

    at_s: float


@dataclass(frozen=True)
class UtteranceEnded:
    utterance: Utterance


SegmentEvent = Union[SpeechStarted, UtteranceEnded]


class UtteranceSegmenter:
    """Feed 16 kHz samples in any block size; get speech-start and utterance-end events.

    Keeps only the audio it may still need (the pre-roll and the current utterance).
    """

    def __init__(self, vad: SileroVAD | None = None, settings: VADSettings | None = None) -> None:
        self.vad = vad or SileroVAD()
        self.settings = settings or VADSettings()
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self._pending = np.zeros(0, dtype=np.float32)  # samples not yet a whole window
        self._window_index = 0  # windows consumed so far
        self._history: list[np.ndarray] = []  # windows kept: pre-roll, then the utterance
        self._history_start = 0  # window index of _history[0]
        self._in_speech = False
        self._speech_start = 0  # window index
        self._silence_run = 0  # windows below the off threshold since the last speech
        self.probabilities: list[float] = []
        """Per-window speech probability (for displays and tests)."""

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def seconds_consumed(self) -> float:
        return self._window_index * CHUNK / INPUT_RATE

    def feed(self, samples: np.ndarray) -> list[SegmentEvent]:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._pending = np.concatenate([self._pending, samples]) if self._pending.size else samples
        events: list[SegmentEvent] = []
        n = self._pending.size // CHUNK
        for i in range(n):
            events.extend(self._window(self._pending[i * CHUNK : (i + 1) * CHUNK]))
        self._pending = self._pending[n * CHUNK :].copy()
        return events

    def flush(self) -> list[SegmentEvent]:
        """End of stream: the last partial window is analysed; an open utterance is closed."""
        events: list[SegmentEvent] = []
        if self._pending.size:
            events.extend(self._window(self._pending))
            self._pending = np.zeros(0, dtype=np.float32)
        if self._in_speech:
            events.extend(self._close(self._window_index - self._silence_run))
        return events

    # -- internals ---------------------------------------------------------------------------
    def _windows(self, ms: float) -> int:
        return int(np.ceil(ms / 1000 * INPUT_RATE / CHUNK))

    def _window(self, window: np.ndarray) -> list[SegmentEvent]:
        s = self.settings
        p = self.vad.probability(window)
        self.probabilities.append(p)
        index = self._window_index
        self._window_index += 1
        self._history.append(window)
        events: list[SegmentEvent] = []
        if not self._in_speech:
            if p >= s.threshold:
                self._in_speech, self._speech_start, self._silence_run = True, index, 0
                events.append(SpeechStarted(at_s=index * CHUNK / INPUT_RATE))
            else:
                keep = self._windows(s.pad_ms) + 1  # pre-roll only
                if len(self._history) > keep:
                    drop = len(self._history) - keep
                    del self._history[:drop]
                    self._history_start += drop
            return events
        if p < s.threshold - 0.15:
            self._silence_run += 1
        elif p >= s.threshold:
            self._silence_run = 0
        speech_end = self._window_index - self._silence_run  # one past the last speech window
        if self._silence_run >= self._windows(s.min_silence_ms):
            events.extend(self._close(speech_end))
        elif (self._window_index - self._speech_start) * CHUNK / INPUT_RATE >= s.max_utterance_s:
            events.extend(self._close(self._window_index))
        return events

    def _close(self, speech_end: int) -> list[SegmentEvent]:
        s = self.settings
        self._in_speech = False
        self._silence_run = 0
        start, end = self._speech_start, speech_end
        keep_from = self._history_start
        tail_windows = self._window_index - end
        events: list[SegmentEvent] = []
        if (end - start) * CHUNK / INPUT_RATE * 1000 >= s.min_speech_ms:
            audio = np.concatenate(self._history) if self._history else np.zeros(0, dtype=np.float32)
            pad = int(s.pad_ms / 1000 * INPUT_RATE)
            lo = max(start * CHUNK - pad, keep_from * CHUNK) - keep_from * CHUNK
            hi = min(end * CHUNK + pad, self._window_index * CHUNK) - keep_from * CHUNK
            utterance = Utterance(
                samples=np.ascontiguousarray(audio[lo:hi]),
                start_s=start * CHUNK / INPUT_RATE,
                end_s=end * CHUNK / INPUT_RATE,
            )
            events.append(UtteranceEnded(utterance))
        # Keep the trailing silence as the next utterance's pre-roll.
        keep = min(tail_windows, self._windows(s.pad_ms) + 1)
        if keep:
            self._history = self._history[-keep:]
        else:
            self._history = []
        self._history_start = self._window_index - len(self._history)
        return events


def segment_utterances(
    samples: np.ndarray, *, settings: VADSettings | None = None, vad: SileroVAD | None = None
) -> list[Utterance]:
    """All utterances in 16 kHz mono ``samples`` (a whole recording)."""
    segmenter = UtteranceSegmenter(vad, settings)
    events = segmenter.feed(samples) + segmenter.flush()
    return [e.utterance for e in events if isinstance(e, UtteranceEnded)]
