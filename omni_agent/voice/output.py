"""Wire spoken progress onto an agent: a :class:`Speaker` fed by a :class:`ProgressPolicy`.

The speaker voices the final answer itself (through the same Talker when the model has one), so
the model's own per-step speech (``Agent(speak=True)``) is switched off here: otherwise the
answer would be synthesised twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from .progress import ProgressPolicy
from .speaker import AudioSink, NullSink, SoundDeviceSink, Speaker, SpeechRecord, WavFileSink, choose_engine

__all__ = ["VoiceOutput", "attach_voice_output", "make_sink"]


def make_sink(target: str | os.PathLike[str] | None) -> AudioSink:
    """``None`` / ``"device"``: the default sound device; ``"none"``: discard; else a WAV directory."""
    if target is None or str(target) == "device":
        sink = SoundDeviceSink()
        sink.check()  # no device -> a clear error now, not a warning per utterance later
        return sink
    if str(target) == "none":
        return NullSink()
    return WavFileSink(target)


@dataclass
class VoiceOutput:
    """What :func:`attach_voice_output` set up; ``close()`` waits for speech, then stops."""

    speaker: Speaker
    progress: ProgressPolicy
    detach: Callable[[], None]

    def close(self, *, wait_s: float = 30.0) -> None:
        self.speaker.wait_idle(wait_s)
        self.detach()
        self.speaker.close()


def attach_voice_output(
    agent: Any,
    *,
    engine: str = "auto",
    voice: str | None = None,
    sink: AudioSink | str | os.PathLike[str] | None = None,
    language: str | None = None,
    min_interval_s: float = 4.0,
    speak_steps: bool = True,
    on_record: Callable[[SpeechRecord], None] | None = None,
) -> VoiceOutput:
    """Speak ``agent``'s progress and answers; questions to the approver are said aloud first."""
    speech_engine = choose_engine(agent.model, engine=engine, voice=voice or agent.voice)
    audio_sink = sink if sink is not None and not isinstance(sink, (str, os.PathLike)) else make_sink(sink)
    speaker = Speaker(speech_engine, audio_sink, language=language, on_record=on_record)
    progress = ProgressPolicy(speaker.say, language=language, min_interval_s=min_interval_s, speak_steps=speak_steps)
    agent.speak = False
    agent.approver = progress.approver(agent.approver)
    detach = progress.attach(agent.events)
    return VoiceOutput(speaker=speaker, progress=progress, detach=detach)
