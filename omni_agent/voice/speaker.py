"""Speech out: a speaker with a background queue, so speaking never blocks the agent loop.

``Speaker.say(text)`` returns at once; a worker thread synthesises (engine) and plays (sink)
one utterance at a time. Engines: :class:`TalkerEngine` (the Talker of a local Qwen-Omni
model), :class:`EspeakEngine` (espeak-ng, for models without one: Thinking checkpoints, remote
servers) and :class:`SilentEngine`. Sinks: :class:`SoundDeviceSink` (a sound device through
sounddevice), :class:`WavFileSink` (numbered WAV files) and :class:`NullSink`.

Barge-in: :meth:`Speaker.barge_in` (new user speech) or ``say(..., interrupt=True)`` (a new
utterance that makes the old ones stale) stops the current playback and drops the queue. The
device sink stops the stream from its own callback and aborts it, discarding what is buffered;
each :class:`SpeechRecord` keeps the sample counts and timestamps that show how fast.
"""

from __future__ import annotations

import collections
import io
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np

from ..exceptions import UserError
from ..messages import AudioPart, write_wav
from .microphone import AudioDeviceError, _sounddevice

__all__ = [
    "AudioSink",
    "EspeakEngine",
    "NullSink",
    "SilentEngine",
    "SoundDeviceSink",
    "Speaker",
    "SpeechEngine",
    "SpeechKind",
    "SpeechRecord",
    "TalkerEngine",
    "WavFileSink",
    "choose_engine",
]

SpeechKind = Literal["started", "progress", "question", "answer", "error", "other"]


@dataclass(eq=False)
class SpeechRecord:
    """One utterance's life: queued, synthesised, played (or cancelled / dropped / failed).

    Times are ``time.monotonic()`` seconds; sample counts are at the audio's own ``rate``.
    """

    text: str
    kind: str = "other"
    id: int = 0
    status: Literal["queued", "synthesizing", "speaking", "done", "cancelled", "dropped", "failed"] = "queued"
    queued_at: float = field(default_factory=time.monotonic)
    synth_started_at: float | None = None
    synth_ended_at: float | None = None
    first_sample_at: float | None = None
    """When the first audio sample was handed to the device (or the file was written)."""
    finished_at: float | None = None
    rate: int | None = None
    samples_total: int = 0
    samples_played: int = 0
    """Samples handed to the device so far."""
    cancel_requested_at: float | None = None
    samples_at_cancel: int | None = None
    """``samples_played`` at the moment barge-in was signalled."""
    stopped_at: float | None = None
    """When the device stream had been aborted after a cancel."""
    error: str | None = None
    path: str | None = None
    """The WAV file (file sink)."""
    audio: AudioPart | None = field(default=None, repr=False)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def samples_after_cancel(self) -> int | None:
        """Samples handed to the device after barge-in was signalled (None: not cancelled while playing)."""
        if self.samples_at_cancel is None:
            return None
        return self.samples_played - self.samples_at_cancel

    @property
    def seconds_after_cancel(self) -> float | None:
        after = self.samples_after_cancel
        return None if after is None or not self.rate else after / self.rate


# -- engines ---------------------------------------------------------------------------------
class SpeechEngine(Protocol):
    name: str

    def synthesize(self, text: str, *, language: str | None = None) -> AudioPart | None:
        """Speech of ``text`` (None: this engine makes no sound)."""


class TalkerEngine:
    """The Talker of a local Qwen-Omni model (``model.speak(text, voice=...)``)."""

    name = "talker"

    def __init__(self, model: Any, *, voice: str | None = None) -> None:
        if not callable(getattr(model, "speak", None)) or not getattr(model.info, "can_speak", False):
            raise UserError(f"{getattr(model.info, 'name', model)!s} has no Talker: use the espeak or silent engine")
        self.model = model
        self.voice = voice

    def synthesize(self, text: str, *, language: str | None = None) -> AudioPart | None:
        return self.model.speak(text, voice=self.voice)


_ESPEAK_VOICES = {"zh": "cmn", "en": "en", "de": "de", "fr": "fr", "es": "es", "ja": "ja", "ru": "ru", "ko": "ko"}


class EspeakEngine:
    """espeak-ng (apt ``espeak-ng``): small, robotic, any language, ~15 ms per sentence."""

    name = "espeak"

    def __init__(self, *, voice: str | None = None, words_per_minute: int = 175, timeout_s: float = 30.0) -> None:
        self.executable = shutil.which("espeak-ng")
        if self.executable is None:
            raise UserError("espeak-ng is not installed (apt-get install espeak-ng), or use the silent engine")
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.timeout_s = timeout_s

    def synthesize(self, text: str, *, language: str | None = None) -> AudioPart | None:
        import soundfile as sf

        voice = self.voice or _ESPEAK_VOICES.get((language or "en").split("-")[0], "en")
        cmd = [str(self.executable), "--stdout", "-v", voice, "-s", str(self.words_per_minute), "--", text]
        done = subprocess.run(cmd, capture_output=True, timeout=self.timeout_s, check=False)
        if done.returncode != 0 or not done.stdout:
            raise RuntimeError(f"espeak-ng failed: {done.stderr.decode(errors='replace').strip()[:200]}")
        # espeak-ng writes the WAV header before it knows the length; soundfile reads it anyway.
        data, rate = sf.read(io.BytesIO(done.stdout), dtype="float32", always_2d=True)
        return AudioPart.from_array(data.mean(axis=1), int(rate), transcript=text)


class SilentEngine:
    """Says nothing (the records still show what would have been said)."""

    name = "silent"

    def synthesize(self, text: str, *, language: str | None = None) -> AudioPart | None:
        return None


def choose_engine(model: Any = None, *, engine: str = "auto", voice: str | None = None) -> SpeechEngine:
    """``auto``: the model's Talker when it has one, else espeak-ng when installed, else silent."""
    if engine == "talker":
        return TalkerEngine(model, voice=voice)
    if engine == "espeak":
        return EspeakEngine(voice=voice)
    if engine == "silent":
        return SilentEngine()
    if engine != "auto":
        raise UserError(f"unknown speech engine {engine!r}: auto, talker, espeak or silent")
    info = getattr(model, "info", None)
    if info is not None and getattr(info, "can_speak", False) and callable(getattr(model, "speak", None)):
        return TalkerEngine(model, voice=voice)
    if shutil.which("espeak-ng"):
        return EspeakEngine(voice=None)
    return SilentEngine()


# -- sinks -----------------------------------------------------------------------------------
class AudioSink(Protocol):
    def play(self, samples: np.ndarray, rate: int, record: SpeechRecord) -> None:
        """Play (blocking) until done or ``record.cancel`` is set; update the record's counters."""


class NullSink:
    def play(self, samples: np.ndarray, rate: int, record: SpeechRecord) -> None:
        record.first_sample_at = time.monotonic()
        record.samples_played = len(samples)


class WavFileSink:
    """Writes each utterance as ``NNN-<kind>.wav`` in ``directory`` (for headless runs and logs)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count(len(list(self.directory.glob("*.wav"))) + 1)

    def play(self, samples: np.ndarray, rate: int, record: SpeechRecord) -> None:
        if record.cancel.is_set():
            return
        path = self.directory / f"{next(self._numbers):03d}-{record.kind}.wav"
        write_wav(path, samples, rate)
        record.path = str(path)
        record.first_sample_at = time.monotonic()
        record.samples_played = len(samples)


class SoundDeviceSink:
    """Plays through a sounddevice output stream (one stream per utterance, callback-driven).

    The callback checks the cancel flag before every block; a cancel aborts the stream, which
    discards the device buffer. ``block_ms`` bounds what can still be handed over after a cancel.
    """

    def __init__(self, *, device: int | str | None = None, block_ms: int = 10, open_timeout_s: float = 5.0) -> None:
        self.device = device
        self.block_ms = block_ms
        self.open_timeout_s = open_timeout_s

    def check(self) -> str:
        """The output device's name; :class:`AudioDeviceError` when there is none."""
        sd = _sounddevice()
        try:
            return str(sd.query_devices(self.device, kind="output")["name"])
        except (ValueError, sd.PortAudioError):
            from .microphone import _refresh_portaudio

            _refresh_portaudio(sd)
            try:
                return str(sd.query_devices(self.device, kind="output")["name"])
            except (ValueError, sd.PortAudioError) as exc:
                raise AudioDeviceError(
                    "no audio output device found (no sound server runs?); write WAV files instead (--speak-to DIR)"
                ) from exc

    def play(self, samples: np.ndarray, rate: int, record: SpeechRecord) -> None:
        sd = _sounddevice()
        name = self.check()
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        finished = threading.Event()

        def callback(outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if record.cancel.is_set():
                outdata.fill(0)
                raise sd.CallbackAbort
            pos = record.samples_played
            chunk = samples[pos : pos + frames]
            n = len(chunk)
            outdata[:n, 0] = chunk
            outdata[n:] = 0
            if pos == 0 and n:
                record.first_sample_at = time.monotonic()
            record.samples_played = pos + n
            if pos + n >= len(samples):
                raise sd.CallbackStop

        box: dict[str, Any] = {}

        def do_open() -> None:
            try:
                stream = sd.OutputStream(
                    device=self.device,
                    samplerate=rate,
                    channels=1,
                    dtype="float32",
                    blocksize=max(1, int(rate * self.block_ms / 1000)),
                    latency="low",
                    callback=callback,
                    finished_callback=finished.set,
                )
                stream.start()
                box["stream"] = stream
            except BaseException as exc:  # handed to the caller below
                box["error"] = exc

        opener = threading.Thread(target=do_open, name="speaker-open", daemon=True)
        opener.start()
        opener.join(self.open_timeout_s)
        if opener.is_alive():
            raise AudioDeviceError(f"the audio output {name} did not open within {self.open_timeout_s:g} s (busy or hung)")
        if "error" in box:
            raise AudioDeviceError(f"cannot play on {name}: {box['error']}") from box["error"]
        stream = box["stream"]
        deadline = time.monotonic() + len(samples) / rate + 5.0
        try:
            while not finished.wait(0.002):
                if record.cancel.is_set():
                    stream.abort()  # drops what is buffered in the device
                    record.stopped_at = time.monotonic()
                    break
                if time.monotonic() > deadline:
                    stream.abort()
                    raise AudioDeviceError(f"the audio output {name} stopped consuming audio (stalled)")
            if record.cancel.is_set() and record.stopped_at is None:
                record.stopped_at = time.monotonic()
            # Let the device play out what it holds (a real playback would be heard to the end).
            if not record.cancel.is_set():
                time.sleep(min(float(stream.latency or 0.0), 0.5))
        finally:
            stream.close()


# -- the speaker -----------------------------------------------------------------------------
class Speaker:
    """Speaks queued texts on a worker thread; ``say`` never blocks.

    Args:
        engine / sink: how speech is made and where it goes (see :func:`choose_engine`).
        language: passed to the engine (espeak picks its voice by it).
        max_pending: queued utterances beyond this drop the oldest (stale progress).
        on_record: called (from the worker thread) when an utterance starts and ends.
    """

    def __init__(
        self,
        engine: SpeechEngine | None = None,
        sink: AudioSink | None = None,
        *,
        language: str | None = None,
        max_pending: int = 3,
        on_record: Callable[[SpeechRecord], None] | None = None,
    ) -> None:
        self.engine: SpeechEngine = engine or SilentEngine()
        self.sink: AudioSink = sink or NullSink()
        self.language = language
        self.max_pending = max(1, max_pending)
        self.on_record = on_record
        self.history: list[SpeechRecord] = []
        self._pending: collections.deque[SpeechRecord] = collections.deque()
        self._cond = threading.Condition()
        self._current: SpeechRecord | None = None
        self._closed = False
        self._ids = itertools.count(1)
        self._warned: set[str] = set()
        self._thread = threading.Thread(target=self._work, name="omni-speaker", daemon=True)
        self._thread.start()

    # -- public --------------------------------------------------------------------------------
    def say(self, text: str, *, kind: str = "other", interrupt: bool = False) -> SpeechRecord:
        """Queue ``text``; ``interrupt`` first stops what is playing and drops what is queued."""
        text = " ".join(str(text).split())
        if not text:
            raise UserError("say() needs non-empty text")
        record = SpeechRecord(text=text, kind=kind, id=next(self._ids))
        with self._cond:
            if self._closed:
                raise UserError("the speaker is closed")
            if interrupt:
                self._cancel_all_locked()
            while len(self._pending) >= self.max_pending:
                dropped = self._pending.popleft()
                dropped.status = "dropped"
            self._pending.append(record)
            self.history.append(record)
            self._cond.notify_all()
        return record

    def barge_in(self) -> SpeechRecord | None:
        """The user started talking: stop the current utterance, drop the queue.

        Returns the record that was cut off (None when nothing was playing)."""
        with self._cond:
            return self._cancel_all_locked()

    @property
    def speaking(self) -> bool:
        return self._current is not None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until everything queued was spoken (or dropped); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending or self._current is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, *, timeout: float = 5.0) -> None:
        """Stop speaking and end the worker thread (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cancel_all_locked()
            self._cond.notify_all()
        self._thread.join(timeout)

    def __enter__(self) -> "Speaker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------
    def _cancel_all_locked(self) -> SpeechRecord | None:
        now = time.monotonic()
        for queued in self._pending:
            queued.status = "dropped"
            queued.cancel.set()
        self._pending.clear()
        current = self._current
        if current is not None and not current.cancel.is_set():
            current.cancel_requested_at = now
            current.samples_at_cancel = current.samples_played
            current.cancel.set()
        self._cond.notify_all()
        return current

    def _notify(self, record: SpeechRecord) -> None:
        if self.on_record is None:
            return
        try:
            self.on_record(record)
        except Exception as exc:  # a broken display must not stop the speaker
            self._warn("on_record", f"speaker callback failed: {exc!r}")

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(f"omni-agent: {message}", file=sys.stderr)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                record = self._pending.popleft()
                self._current = record
            try:
                self._speak(record)
            finally:
                with self._cond:
                    self._current = None
                    self._cond.notify_all()
                self._notify(record)

    def _speak(self, record: SpeechRecord) -> None:
        record.status = "synthesizing"
        record.synth_started_at = time.monotonic()
        try:
            audio = self.engine.synthesize(record.text, language=self.language)
        except Exception as exc:  # the loop goes on without this utterance
            record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
            self._warn("engine", f"speech synthesis failed ({self.engine.name}): {record.error}")
            return
        record.synth_ended_at = time.monotonic()
        if record.cancel.is_set():
            record.status = "cancelled"
            return
        if audio is None:
            record.status, record.finished_at = "done", time.monotonic()
            return
        samples, rate = audio.load()
        record.audio, record.rate, record.samples_total = audio, int(rate), int(len(samples))
        record.status = "speaking"
        self._notify(record)
        try:
            self.sink.play(np.asarray(samples, dtype=np.float32), int(rate), record)
        except Exception as exc:  # no device, a stalled one: reported once, the loop goes on
            record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
            self._warn("sink", f"speech playback failed: {exc}")
            return
        record.finished_at = time.monotonic()
        record.status = "cancelled" if record.cancel.is_set() else "done"
