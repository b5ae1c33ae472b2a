"""Microphone capture (sounddevice) and the two ways to take a command: continuous and push-to-talk.

Every failure is a clear :class:`AudioDeviceError` or :class:`NoSpeechError`, never a hang: the
stream is opened in a helper thread with a deadline, a stream that delivers nothing within
``stall_timeout_s`` is reported as busy or stalled, and waiting for speech has a timeout.

Sources are anything with ``read(timeout) -> block | None`` and ``close()`` giving 16 kHz
float32 mono blocks: :class:`Microphone`, or :class:`ArraySource` for a recording (files,
tests, benchmarks), so the listening code is the same for both.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from ..exceptions import UserError
from .audio_io import INPUT_RATE
from .vad import SegmentEvent, Utterance, UtteranceEnded, UtteranceSegmenter

__all__ = [
    "ArraySource",
    "AudioDeviceError",
    "AudioSource",
    "Microphone",
    "NoSpeechError",
    "input_devices",
    "next_utterance",
    "record_push_to_talk",
    "utterances",
]


class AudioDeviceError(UserError):
    """No sound device, a busy one, or one that stopped delivering audio."""


class NoSpeechError(UserError):
    """Listening ended without hearing speech (silence, a muted microphone)."""


class AudioSource(Protocol):
    rate: int

    def read(self, timeout: float) -> np.ndarray | None:
        """The next block of 16 kHz float32 mono samples; None at the end of the stream."""

    def close(self) -> None: ...


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except OSError as exc:  # the PortAudio shared library itself is missing
        raise AudioDeviceError(f"sound devices are unavailable ({exc}); install libportaudio2 (apt)") from exc
    except ImportError as exc:
        raise AudioDeviceError("sounddevice is not installed: pip install 'omni-agent[voice]'") from exc
    return sd


def _refresh_portaudio(sd: Any) -> None:
    """PortAudio lists devices once, at import; a sound server started later needs a rescan.
    sounddevice has no public call for it, so its documented-internal pair is used."""
    try:
        sd._terminate()
        sd._initialize()
    except Exception:  # pragma: no cover - a rescan failure leaves the old (empty) list
        pass


def input_devices() -> list[dict[str, Any]]:
    """Input-capable devices as sounddevice describes them (may be empty)."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
    except Exception:
        return []
    return [dict(d) for d in devices if d.get("max_input_channels", 0) > 0]


def _default_input(sd: Any, device: int | str | None) -> dict[str, Any]:
    for attempt in range(2):
        try:
            return dict(sd.query_devices(device, kind="input"))
        except (ValueError, sd.PortAudioError) as exc:
            if attempt == 0:
                _refresh_portaudio(sd)
                continue
            if device is not None:
                raise AudioDeviceError(f"no audio input device {device!r}: {exc}") from exc
            raise AudioDeviceError(
                "no audio input device found (none is connected, or no sound server runs; "
                "on a headless machine start PulseAudio, or pass an audio file instead)"
            ) from exc
    raise AssertionError("unreachable")


class Microphone:
    """A sounddevice input stream delivering 16 kHz float32 mono blocks through a queue.

    Args:
        device: sounddevice device index or name (default: the system's default input).
        block_ms: size of the blocks the callback delivers.
        open_timeout_s: longest wait for the device to open.
        stall_timeout_s: a stream that delivers no block for this long is reported as stalled.
    """

    def __init__(
        self,
        *,
        device: int | str | None = None,
        block_ms: int = 32,
        open_timeout_s: float = 5.0,
        stall_timeout_s: float = 3.0,
        max_buffered_s: float = 60.0,
    ) -> None:
        self.device = device
        self.rate = INPUT_RATE
        self.block_ms = block_ms
        self.open_timeout_s = open_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=max(1, int(max_buffered_s * 1000 / block_ms)))
        self._stream: Any = None
        self._resampler: Any = None
        self._last_block_at = 0.0
        self.overflows = 0
        """Blocks the device or the queue dropped (the consumer was too slow)."""
        self.device_name = ""

    # -- lifecycle --------------------------------------------------------------------------
    def open(self) -> "Microphone":
        if self._stream is not None:
            return self
        sd = _sounddevice()
        info = _default_input(sd, self.device)
        self.device_name = str(info.get("name", ""))
        device_rate = INPUT_RATE
        box: dict[str, Any] = {}

        def do_open() -> None:
            nonlocal device_rate
            try:
                try:
                    stream = self._make_stream(sd, device_rate)
                except sd.PortAudioError as exc:
                    if "sample rate" not in str(exc).lower():
                        raise
                    device_rate = int(info.get("default_samplerate") or 48_000)
                    stream = self._make_stream(sd, device_rate)
                stream.start()
                box["stream"] = stream
            except BaseException as exc:  # handed to the caller below
                box["error"] = exc

        opener = threading.Thread(target=do_open, name="mic-open", daemon=True)
        opener.start()
        opener.join(self.open_timeout_s)
        if opener.is_alive():
            raise AudioDeviceError(
                f"the audio input {self.device_name or 'device'} did not open within {self.open_timeout_s:g} s (busy or hung)"
            )
        if "error" in box:
            raise _device_error(self.device_name, box["error"]) from box["error"]
        if device_rate != INPUT_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(device_rate, INPUT_RATE, 1, dtype="float32")
        self._stream = box["stream"]
        self._last_block_at = time.monotonic()
        return self

    def _make_stream(self, sd: Any, rate: int) -> Any:
        return sd.InputStream(
            device=self.device,
            samplerate=rate,
            channels=1,
            dtype="float32",
            blocksize=int(rate * self.block_ms / 1000),
            latency="low",
            callback=self._callback,
        )

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status and getattr(status, "input_overflow", False):
            self.overflows += 1
        try:
            self._queue.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.overflows += 1

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception:  # closing a dead device must not raise over the real error
                pass

    def __enter__(self) -> "Microphone":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------
    def read(self, timeout: float) -> np.ndarray | None:
        """The next 16 kHz block; raises :class:`AudioDeviceError` when the device stalls."""
        if self._stream is None:
            self.open()
        deadline = time.monotonic() + timeout
        while True:
            wait = min(deadline - time.monotonic(), 0.1)
            try:
                block = self._queue.get(timeout=max(wait, 0.0))
            except queue.Empty:
                now = time.monotonic()
                if now - self._last_block_at > self.stall_timeout_s:
                    self.close()
                    raise AudioDeviceError(
                        f"the audio input {self.device_name or 'device'} delivered no audio for "
                        f"{now - self._last_block_at:.1f} s (busy, disconnected or stalled)"
                    ) from None
                if now >= deadline:
                    return np.zeros(0, dtype=np.float32)
                continue
            self._last_block_at = time.monotonic()
            if self._resampler is not None:
                block = self._resampler.resample_chunk(block)
            return block


def _device_error(name: str, exc: BaseException) -> AudioDeviceError:
    text = str(exc)
    lowered = text.lower()
    if "unavailable" in lowered or "busy" in lowered or "-9985" in text:
        return AudioDeviceError(f"the audio device {name or ''} is busy (used by another program): {text}")
    if "invalid number of channels" in lowered:
        return AudioDeviceError(f"the audio device {name or ''} has no input channels: {text}")
    return AudioDeviceError(f"cannot open the audio device {name or ''}: {type(exc).__name__}: {text}")


class ArraySource:
    """A recording as an audio source: 16 kHz blocks of ``block`` samples, then the end.

    ``realtime=True`` paces blocks like a live microphone (benchmarks measure latency that way).
    """

    def __init__(self, samples: np.ndarray, *, block: int = 512, realtime: bool = False) -> None:
        self.samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.rate = INPUT_RATE
        self.block = block
        self.realtime = realtime
        self._pos = 0
        self._t0: float | None = None

    def read(self, timeout: float) -> np.ndarray | None:
        if self._pos >= self.samples.size:
            return None
        if self.realtime:
            if self._t0 is None:
                self._t0 = time.monotonic()
            due = self._t0 + (self._pos + self.block) / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, timeout))
        block = self.samples[self._pos : self._pos + self.block]
        self._pos += self.block
        return block

    def close(self) -> None:
        self._pos = self.samples.size


def _level_dbfs(peak: float) -> str:
    return f"{20 * np.log10(max(peak, 1e-9)):.0f} dBFS"


def utterances(
    source: AudioSource,
    segmenter: UtteranceSegmenter,
    *,
    idle_timeout_s: float | None = None,
    on_event: Callable[[SegmentEvent], None] | None = None,
    stop: threading.Event | None = None,
) -> Iterator[Utterance]:
    """Continuous mode: yield each utterance heard on ``source`` until it ends or ``stop`` is set.

    Raises :class:`NoSpeechError` when ``idle_timeout_s`` passes with no speech at all.
    ``on_event`` sees speech starts as they happen (barge-in stops the speaker there).
    """
    last_activity = time.monotonic()
    peak = 0.0
    while stop is None or not stop.is_set():
        block = source.read(timeout=0.2)
        if block is None:
            events = segmenter.flush()
        else:
            if block.size:
                peak = max(peak, float(np.max(np.abs(block))))
            events = segmenter.feed(block)
        for event in events:
            last_activity = time.monotonic()
            if on_event is not None:
                on_event(event)
            if isinstance(event, UtteranceEnded):
                yield event.utterance
        if block is None:
            return
        if segmenter.in_speech:
            last_activity = time.monotonic()
        elif idle_timeout_s is not None and time.monotonic() - last_activity > idle_timeout_s:
            raise NoSpeechError(
                f"no speech heard in {idle_timeout_s:g} s (input peak {_level_dbfs(peak)}; "
                "is the microphone muted or the wrong device?)"
            )


def next_utterance(
    source: AudioSource,
    segmenter: UtteranceSegmenter,
    *,
    timeout_s: float = 15.0,
    on_event: Callable[[SegmentEvent], None] | None = None,
) -> Utterance:
    """Wait for one utterance (continuous mode, one command)."""
    for utterance in utterances(source, segmenter, idle_timeout_s=timeout_s, on_event=on_event):
        return utterance
    raise NoSpeechError("the audio ended without speech")


def record_push_to_talk(
    source: AudioSource,
    segmenter: UtteranceSegmenter,
    release: threading.Event,
    *,
    max_seconds: float = 30.0,
) -> Utterance:
    """Push-to-talk: record until ``release`` is set (the key is let go), then trim to the speech.

    The whole take becomes one utterance, from the first speech to the last (pauses kept);
    a take without speech raises :class:`NoSpeechError`.
    """
    blocks: list[np.ndarray] = []
    started = time.monotonic()
    while not release.is_set():
        if time.monotonic() - started > max_seconds:
            break
        block = source.read(timeout=0.1)
        if block is None:
            break
        if block.size:
            blocks.append(block)
    take = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    if take.size == 0:
        raise NoSpeechError("nothing was recorded (the key was released at once)")
    segmenter.reset()
    found = [e.utterance for e in segmenter.feed(take) + segmenter.flush() if isinstance(e, UtteranceEnded)]
    if not found:
        peak = float(np.max(np.abs(take)))
        raise NoSpeechError(f"no speech in the {take.size / INPUT_RATE:.1f} s take (input peak {_level_dbfs(peak)})")
    pad = int(segmenter.settings.pad_ms / 1000 * INPUT_RATE)
    lo = max(int(found[0].start_s * INPUT_RATE) - pad, 0)
    hi = min(int(found[-1].end_s * INPUT_RATE) + pad, take.size)
    return Utterance(samples=take[lo:hi].copy(), start_s=found[0].start_s, end_s=found[-1].end_s)
