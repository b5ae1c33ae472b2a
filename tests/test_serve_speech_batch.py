"""Spoken answers through the speech scheduler (omni_agent.serve.speech_scheduler).

Tiny random Qwen3-Omni on CPU: streams submitted to one scheduler thread finish with the codes
they get alone; a cancelled stream frees its row while the others finish unchanged; a stream
that cannot start fails alone with a clear error; and over real HTTP several spoken streamed
chat completions at once (openai SDK) carry exactly the audio each answer gets spoken alone.
"""

from __future__ import annotations

import base64
import concurrent.futures
import threading

import numpy as np
import pytest
import torch

from omni_agent.exceptions import ModelError, UserError
from omni_agent.serve.completions import pcm16_bytes
from omni_agent.serve.speech_scheduler import SpeechScheduler
from tests.test_runtime_batched_speech import FRAMES, TEXTS, _alone, _job

pytestmark = pytest.mark.slow


class _Collector:
    """A sink that records one stream's events (and can cancel it after its first chunk)."""

    def __init__(self, cancel_after_first: bool = False) -> None:
        self.chunks: list = []
        self.end: tuple[str, object] | None = None
        self.finished = threading.Event()
        self.cancel_after_first = cancel_after_first
        self.stream = None

    def __call__(self, kind: str, value: object) -> None:
        if kind == "chunk":
            self.chunks.append(value)
            if self.cancel_after_first and self.stream is not None:
                self.stream.cancel()
                self.finished.set()
        else:
            self.end = (kind, value)
            self.finished.set()


def test_a_cancelled_stream_frees_its_row_and_the_others_finish_unchanged(tiny_qwen3_omni):
    jobs = [_job(tiny_qwen3_omni, t, f) for t, f in zip(TEXTS, FRAMES)]
    alone = [_alone(tiny_qwen3_omni, job) for job in jobs]
    scheduler = SpeechScheduler(tiny_qwen3_omni, max_streams=3, max_tokens=512, warm_up=True)
    scheduler.start()  # warm-up first (graphs on CUDA; nothing to do on CPU), then streams
    try:
        sinks = [_Collector(), _Collector(cancel_after_first=True), _Collector()]
        streams = []
        for job, sink in zip(jobs, sinks):
            stream = scheduler.submit(job, sink)
            sink.stream = stream
            streams.append(stream)
        for sink in sinks:
            assert sink.finished.wait(60)
        for i in (0, 2):
            assert sinks[i].end == ("done", None)
            assert torch.equal(streams[i].state.codes, alone[i][0])
            np.testing.assert_allclose(np.concatenate([c.samples for c in sinks[i].chunks]), alone[i][1], atol=1e-6)
        assert streams[1].cancelled and len(sinks[1].chunks) == 1
        # the cancelled row is free again: a new stream takes a row and finishes like alone
        late = _Collector()
        late.stream = scheduler.submit(jobs[1], late)
        assert late.finished.wait(60) and late.end == ("done", None)
        assert torch.equal(late.stream.state.codes, alone[1][0])
        assert sorted(scheduler.speaker.free_rows) == [0, 1, 2] and scheduler.stats.max_batch >= 2
        assert scheduler.warm_up_error is None
    finally:
        scheduler.close()


def test_a_stream_that_cannot_start_fails_alone_with_a_clear_error(tiny_qwen3_omni):
    scheduler = SpeechScheduler(tiny_qwen3_omni, max_streams=2, max_tokens=64)
    try:
        good = _job(tiny_qwen3_omni, TEXTS[2], FRAMES[2])
        too_long = _job(tiny_qwen3_omni, " ".join(["word"] * 60), 40)
        bad_voice = _job(tiny_qwen3_omni, TEXTS[2], 4, speaker_id=10**9)  # not a codec embedding row
        errors: dict[str, Exception] = {}
        for name, job in (("long", too_long), ("voice", bad_voice)):
            with pytest.raises(Exception) as caught:
                list(scheduler.chunks(job))
            errors[name] = caught.value
        assert isinstance(errors["long"], UserError) and "Talker KV slots" in str(errors["long"])
        assert isinstance(errors["voice"], ModelError) and "the Talker failed" in str(errors["voice"])
        chunks = list(scheduler.chunks(good))  # the scheduler serves the next one as usual
        assert sum(c.frames for c in chunks) == FRAMES[2]
        assert scheduler.stats.streams_failed == 2 and scheduler.speaker.free_rows == [0, 1]
    finally:
        scheduler.close()


def _spoken_stream(client, prompt: str, max_tokens: int) -> tuple[str, bytes]:
    stream = client.chat.completions.create(
        model="tiny-omni", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, stream=True,
        modalities=["text", "audio"], audio={"voice": "Ethan", "format": "pcm16"},
    )  # fmt: skip
    transcript, pcm = "", b""
    for chunk in stream:
        for choice in chunk.choices:
            audio = choice.delta.audio
            if audio:
                audio = audio.model_dump()
                pcm += base64.b64decode(audio.get("data") or "")
                transcript = audio.get("transcript") or transcript
    return transcript, pcm


def test_spoken_answers_served_at_once_equal_each_spoken_alone(served_tiny_omni):
    client = served_tiny_omni.client()
    asks = [("hi", 9), ("hello there", 5), ("what now", 12), ("hi", 3)]
    with concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
        answers = list(pool.map(lambda a: _spoken_stream(client, *a), asks))
    model = served_tiny_omni.backend.model
    texts = {t for t, _ in answers}
    assert len(texts) >= 3 and all(t for t in texts)
    for transcript, pcm in answers:
        alone = np.concatenate([c.samples for c in model.speak_stream(transcript)])
        assert len(pcm) > 0 and pcm == pcm16_bytes(alone)
    stats = served_tiny_omni.backend._speech_scheduler.stats
    assert stats.streams_done >= len(asks) and stats.streams_failed == 0
