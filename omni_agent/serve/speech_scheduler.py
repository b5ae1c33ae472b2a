"""``SpeechScheduler``: every spoken answer of the server through one batched Talker.

One thread owns a ``BatchedSpeaker`` (``runtime.fast.batched_speech``). Between codec frames it
admits waiting streams (their Talker prefill into a free row), drops cancelled ones (the client
went away), and runs one frame for all active streams; each stream's chunks reach its reader
through a callback (an asyncio queue for the server). A stream that cannot start (too long, bad
input) fails alone; a frame that fails fails the streams in it with a clear ``ModelError`` and
the thread goes on serving the next ones.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator

from ..exceptions import ModelError, OmniAgentError
from ..runtime.fast.batched_speech import BatchedSpeaker, SpeechJob, SpeechStreamState, speech_job
from ..runtime.fast.streaming_speech import SpeechChunk

__all__ = ["SpeechScheduler", "SpeechStream", "TalkerStats"]

Sink = Callable[[str, Any], None]
"""Receives ("chunk", SpeechChunk), then ("done", None) or ("error", Exception)."""


@dataclass(eq=False)
class SpeechStream:
    """A submitted job; ``cancel()`` drops it before the next frame and frees its row."""

    job: SpeechJob
    sink: Sink
    started: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    state: SpeechStreamState | None = None

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class TalkerStats:
    """What the scheduler did: frames run per batch size and their wall times (benchmarks read it)."""

    frames: collections.Counter[int] = field(default_factory=collections.Counter)
    frame_seconds: dict[int, collections.deque[float]] = field(default_factory=dict)
    streams_done: int = 0
    streams_failed: int = 0
    max_batch: int = 0

    def record(self, batch: int, seconds: float) -> None:
        self.frames[batch] += 1
        self.frame_seconds.setdefault(batch, collections.deque(maxlen=4096)).append(seconds)
        self.max_batch = max(self.max_batch, batch)


class SpeechScheduler:
    """Continuous batching for the Talker of one Qwen3-Omni ``QwenOmniModel``."""

    def __init__(
        self, model: Any, *, max_streams: int = 16, max_tokens: int = 4096, graphs: bool = True,
        prepare_lock: threading.Lock | None = None, warm_up: bool = False,
    ) -> None:  # fmt: skip
        self.model = model
        self.speaker = BatchedSpeaker(model.model, model.processor, max_streams=max_streams, max_tokens=max_tokens, graphs=graphs)
        self.stats = TalkerStats()
        self._prepare_lock = prepare_lock or threading.Lock()
        self._prompt_ids: Any = None
        self._cond = threading.Condition()
        self._inbox: collections.deque[SpeechStream] = collections.deque()
        self._active: list[SpeechStream] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self._warm_up = warm_up
        self.warm_up_error: Exception | None = None
        """Why the warm-up failed, if it did (graphs are then captured on first use)."""

    # -- submitting ------------------------------------------------------------------------------
    def job(self, text: str, *, voice: str | None = None, settings: Any = None, chunk_frames: int = 4) -> SpeechJob:
        """The job for ``text`` (as ``QwenOmniModel.speak_stream`` builds it; the prompt is cached)."""
        with self._prepare_lock:
            job = speech_job(self.model, text, voice=voice, settings=settings, chunk_frames=chunk_frames, prompt_ids=self._prompt_ids)
        self._prompt_ids = job.input_ids
        return job

    def submit(self, job: SpeechJob, sink: Sink) -> SpeechStream:
        """Queue ``job``; it joins the batch at the next frame boundary with a free row."""
        stream = SpeechStream(job=job, sink=sink)
        with self._cond:
            if self._closed:
                raise ModelError("the speech scheduler is shut down")
            self._inbox.append(stream)
            self._start_locked()
            self._cond.notify()
        return stream

    def start(self) -> None:
        """Start the thread now (with ``warm_up``: graphs and Code2Wav plans before any answer
        waits for them; streams submitted meanwhile queue). Otherwise the first submit starts it."""
        with self._cond:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="omni-talker-batch", daemon=True)
            self._thread.start()

    def chunks(self, job: SpeechJob) -> Iterator[SpeechChunk]:
        """``job``'s chunks, blocking (scripts, benchmarks); closing the iterator cancels it."""
        inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        stream = self.submit(job, lambda kind, value: inbox.put((kind, value)))
        try:
            while True:
                kind, value = inbox.get()
                if kind == "chunk":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            self._cancel(stream)

    async def stream(self, text: str, *, voice: str | None = None, settings: Any = None, chunk_frames: int = 4) -> AsyncIterator[SpeechChunk]:
        """Speech of ``text`` chunk by chunk for an asyncio reader; leaving early cancels it."""
        job = await asyncio.to_thread(self.job, text, voice=voice, settings=settings, chunk_frames=chunk_frames)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        holder: list[SpeechStream] = []

        def sink(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, (kind, value))
            except RuntimeError:  # the reader's loop is gone: nobody listens any more
                for s in holder:
                    s.cancel()

        holder.append(self.submit(job, sink))
        try:
            while True:
                kind, value = await inbox.get()
                if kind == "chunk":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            self._cancel(holder[0])

    def _cancel(self, stream: SpeechStream) -> None:
        stream.cancel()
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread; streams still queued or running get an error."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        if self._warm_up:
            try:
                self.speaker.warm_up()
            except Exception as exc:  # noqa: BLE001 - not fatal: graphs are captured on first use instead
                self.warm_up_error = exc
        while True:
            with self._cond:
                while not self._closed and not self._inbox and not self._active:
                    self._cond.wait()
                if self._closed:
                    break
                room = len(self.speaker.free_rows)
                joining = [self._inbox.popleft() for _ in range(min(room, len(self._inbox)))]
            self._admit([s for s in joining if not s.cancelled])
            self._drop_cancelled()
            if self._active:
                self._frame()
        error = ModelError("the speech scheduler shut down")
        for stream in [*self._active, *self._inbox]:
            self._finish(stream, error)

    def _admit(self, joining: list[SpeechStream]) -> None:
        """Prefill the joining streams (together where their prompts have one length)."""
        if not joining:
            return
        try:
            results = self.speaker.add_many([s.job for s in joining], started=[s.started for s in joining])
        except Exception as exc:  # noqa: BLE001 - these streams cannot start; the scheduler goes on
            results = [exc] * len(joining)
        for stream, result in zip(joining, results):
            if isinstance(result, Exception):
                self._finish(stream, result if isinstance(result, OmniAgentError) else _talker_error(result))
            else:
                stream.state = result
                self._active.append(stream)

    def _drop_cancelled(self) -> None:
        for stream in [s for s in self._active if s.cancelled]:
            self._leave(stream)

    def _frame(self) -> None:
        batch = len(self._active)
        t0 = time.perf_counter()
        try:
            events = self.speaker.frame()
        except Exception as exc:  # noqa: BLE001 - the frame failed: its streams fail, the server goes on
            error = _talker_error(exc)
            for stream in list(self._active):
                self._finish(stream, error)
            return
        self.stats.record(batch, time.perf_counter() - t0)
        by_state = {id(s.state): s for s in self._active}
        for state, item in events:
            stream = by_state[id(state)]
            if isinstance(item, Exception):
                self._finish(stream, item)
            elif not stream.cancelled:
                stream.sink("chunk", item)
        for stream in [s for s in self._active if s.state is not None and s.state.done]:
            self._finish(stream, None)

    def _finish(self, stream: SpeechStream, error: Exception | None) -> None:
        self._leave(stream)
        if error is None:
            self.stats.streams_done += 1
            stream.sink("done", None)
        else:
            self.stats.streams_failed += 1
            stream.sink("error", error)

    def _leave(self, stream: SpeechStream) -> None:
        if stream in self._active:
            self._active.remove(stream)
        if stream.state is not None:
            self.speaker.remove(stream.state)


def _talker_error(exc: Exception) -> ModelError:
    err = ModelError(f"the Talker failed: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err
