"""Voice in the page: push-to-talk audio from the browser into the ``listen`` pipeline, speech back.

The page records its microphone at 16 kHz and sends int16 PCM over the socket while the talk
button is held. :class:`PushToTalk` feeds those blocks to :func:`record_push_to_talk` (the same
function ``omni-agent listen --push-to-talk`` uses: VAD trims the take to the speech, a take
without speech is a clear error) and the utterance becomes the audio of a new run's user turn.
Spoken progress and answers come from the ``listen`` speaker (:mod:`omni_agent.voice.output`)
with :class:`PageSink` as its sound device: each utterance goes to the pages as a WAV file, and
pressing the talk button again stops it there and in the speaker (barge-in).
"""

from __future__ import annotations

import asyncio
import io
import queue
import threading
import time
import wave
from typing import Any, Callable

import numpy as np

from .hub import Hub
from .protocol import SPEECH, SpeechMessage

__all__ = ["PageSink", "PushToTalk", "QueueSource"]

INPUT_RATE = 16_000


class QueueSource:
    """An audio source (``read`` / ``close``) fed from the socket, block by block."""

    def __init__(self) -> None:
        self.rate = INPUT_RATE
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue()

    def feed_pcm16(self, data: bytes) -> None:
        usable = len(data) - len(data) % 2
        self._queue.put(np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0)

    def read(self, timeout: float) -> np.ndarray | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        self._queue.put(None)


class PushToTalk:
    """One take at a time: ``down()`` opens it, audio arrives with ``feed()``, ``up()`` sends it.

    ``on_utterance(utterance)`` / ``on_error(message)`` are called on the event loop.
    """

    def __init__(
        self,
        *,
        on_utterance: Callable[[Any], Any],
        on_error: Callable[[str], Any],
        on_barge_in: Callable[[], Any] = lambda: None,
        segmenter_factory: Callable[[], Any] | None = None,
        max_seconds: float = 30.0,
    ) -> None:
        self.on_utterance = on_utterance
        self.on_error = on_error
        self.on_barge_in = on_barge_in
        self.segmenter_factory = segmenter_factory
        self.max_seconds = max_seconds
        self._source: QueueSource | None = None
        self._release: threading.Event | None = None

    @property
    def recording(self) -> bool:
        return self._source is not None

    def down(self) -> None:
        self.on_barge_in()
        if self._source is not None:
            return
        loop = asyncio.get_running_loop()
        self._source, self._release = QueueSource(), threading.Event()
        source, release = self._source, self._release
        threading.Thread(target=self._record, args=(loop, source, release), name="console-ptt", daemon=True).start()

    def feed(self, pcm16: bytes) -> None:
        if self._source is not None:
            self._source.feed_pcm16(pcm16)

    def up(self) -> None:
        """End the take: the recorder reads what is queued, then the end mark (nothing is lost)."""
        if self._source is not None:
            self._source.close()
        self._source, self._release = None, None

    def _record(self, loop: asyncio.AbstractEventLoop, source: QueueSource, release: threading.Event) -> None:
        from ..voice.microphone import record_push_to_talk
        from ..voice.vad import UtteranceSegmenter

        try:
            segmenter = self.segmenter_factory() if self.segmenter_factory else UtteranceSegmenter()
            utterance = record_push_to_talk(source, segmenter, release, max_seconds=self.max_seconds)
        except Exception as exc:  # no speech, a VAD that cannot load: say it in the page
            _post(loop, self.on_error, getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
            return
        _post(loop, self.on_utterance, utterance)


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[[Any], Any], value: Any) -> None:
    """Hand a result to the event loop; a console that shut down meanwhile drops it."""
    try:
        loop.call_soon_threadsafe(fn, value)
    except RuntimeError:  # the loop is closed
        pass


class PageSink:
    """The speaker's sound device is the page: send each utterance as a WAV, wait while it plays.

    Waiting as long as the audio lasts keeps the speaker's one-at-a-time order and lets a
    barge-in (``record.cancel``) cut it short, as with a real device.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sent = 0

    def play(self, samples: np.ndarray, rate: int, record: Any) -> None:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(rate))
            w.writeframes((np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes())
        self.hub.broadcast_threadsafe(SpeechMessage(id=record.id, text=record.text, kind=record.kind).wire())
        self.hub.broadcast_threadsafe(bytes([SPEECH]) + buf.getvalue())
        self.sent += 1
        record.samples_played = 0
        duration = len(samples) / float(rate)
        started = time.monotonic()
        while time.monotonic() - started < duration:
            if record.cancel.wait(0.05):
                self.hub.broadcast_threadsafe(SpeechMessage(type="speech_stop", id=record.id).wire())
                return
            record.samples_played = min(len(samples), int((time.monotonic() - started) * rate))
        record.samples_played = len(samples)
