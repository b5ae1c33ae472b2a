"""Microphone capture, playback and barge-in on a virtual PulseAudio device (null sink + monitor).

The speaker plays into the null sink; the microphone records the sink's monitor (separate
streams). The barge-in bound is asserted on sample counts and on stream time, not wall-clock
time: the VAD's detection delay is measured in the audio it was fed, and the device stream's
own counter says how many samples were handed over after the barge-in signal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from omni_agent.voice import (
    ArraySource,
    AudioDeviceError,
    EspeakEngine,
    Microphone,
    NoSpeechError,
    SoundDeviceSink,
    Speaker,
    SpeechStarted,
    UtteranceSegmenter,
    VADSettings,
    decode_audio,
    next_utterance,
    record_push_to_talk,
    utterances,
)
from omni_agent.voice.vad import CHUNK
from tests.fixtures.audio import onset_seconds

LONG = "This is a long progress report that keeps going so that the user has time to interrupt it with a new command."


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_microphone_hears_what_the_speaker_plays(pulse_device):
    text = "set a timer for five minutes"
    expected = EspeakEngine().synthesize(text)
    speech_s = expected.duration_s
    # PulseAudio's ALSA path on a loaded CI machine can stutter: allow pauses inside the take.
    segmenter = UtteranceSegmenter(settings=VADSettings(min_silence_ms=1500))
    with Microphone() as mic, Speaker(EspeakEngine(), SoundDeviceSink()) as speaker:
        assert "pulse" in mic.device_name.lower() or mic.device_name == "default"
        record = speaker.say(text)
        utterance = next_utterance(mic, segmenter, timeout_s=20)
        assert speaker.wait_idle(20)
    assert record.status == "done" and record.samples_played == record.samples_total
    assert np.abs(utterance.samples).max() > 0.05
    assert 0.6 * speech_s < utterance.end_s - utterance.start_s < speech_s + 3.0


@pytest.mark.slow
def test_barge_in_stops_playback_within_100_ms_of_the_new_utterance(pulse_device, synth):
    speaker = Speaker(EspeakEngine(), SoundDeviceSink(block_ms=10))
    record = speaker.say(LONG)
    assert _wait_for(lambda: record.rate and record.samples_played > 0.2 * record.rate, 20), "playback never started"
    # The user starts a new command: the VAD sees it in the microphone stream and barges in.
    # (A command opening on a hissed consonant, "stop ...", is detected at its vowel: ~140 ms
    # after the hiss starts. The VAD hears voice, not noise; voiced openings take 20-80 ms.)
    command = decode_audio(synth("wait, open my calendar instead", pad_s=(1.0, 0.5)))
    onset = onset_seconds(command, 16_000)
    detected: list[SpeechStarted] = []
    stop = threading.Event()

    def on_event(event):
        if isinstance(event, SpeechStarted) and not detected:
            speaker.barge_in()
            detected.append(event)
            stop.set()

    for _ in utterances(ArraySource(command, realtime=True), UtteranceSegmenter(), on_event=on_event, stop=stop):
        pass
    assert speaker.wait_idle(10)
    speaker.close()
    assert detected and record.status == "cancelled"
    assert record.samples_played < record.samples_total  # it really was cut short
    # Stream time from the start of speech to the end of the VAD window that detected it.
    detection_delay = detected[0].at_s + CHUNK / 16_000 - onset
    after_signal = record.seconds_after_cancel
    assert after_signal is not None and after_signal <= 0.011  # at most the one 10 ms block in flight
    assert 0 <= detection_delay and detection_delay + after_signal <= 0.100, (detection_delay, after_signal)
    assert record.stopped_at is not None and record.stopped_at >= record.cancel_requested_at


@pytest.mark.slow
def test_push_to_talk_on_the_device(pulse_device):
    with Microphone() as mic, Speaker(EspeakEngine(), SoundDeviceSink()) as speaker:
        release = threading.Event()
        record = speaker.say("play some jazz")

        def let_go() -> None:
            speaker.wait_idle(20)
            time.sleep(0.5)
            release.set()

        threading.Thread(target=let_go, daemon=True).start()
        utterance = record_push_to_talk(mic, UtteranceSegmenter(settings=VADSettings(min_silence_ms=1500)), release)
    assert record.status == "done"
    assert utterance.duration_s < record.samples_total / record.rate + 3.0 and np.abs(utterance.samples).max() > 0.05


def test_silence_on_the_device_is_a_clear_no_speech_error(pulse_device):
    with Microphone() as mic:
        with pytest.raises(NoSpeechError, match=r"no speech heard in 1\.5 s \(input peak .* dBFS"):
            next_utterance(mic, UtteranceSegmenter(), timeout_s=1.5)


def test_unknown_device_is_a_clear_error(pulse_device):
    with pytest.raises(AudioDeviceError, match="no audio input device 'no-such-microphone'"):
        Microphone(device="no-such-microphone").open()


def test_no_sound_server_means_a_clear_error_not_a_hang(tmp_path):
    """In a process where no sound server runs, opening devices fails at once with a message."""
    code = (
        "from omni_agent.voice import Microphone, SoundDeviceSink, AudioDeviceError\n"
        "for make in (lambda: Microphone().open(), lambda: SoundDeviceSink().check()):\n"
        "    try: make(); print('opened?!')\n"
        "    except AudioDeviceError as e: print('ERR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE")}
    env.update(XDG_RUNTIME_DIR=str(tmp_path), HOME=str(tmp_path), PULSE_SERVER=f"unix:{tmp_path}/nothing", PULSE_AUTOSPAWN="no")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in out.stdout.splitlines() if line.startswith(("ERR", "opened"))]
    assert len(lines) == 2, out.stdout + out.stderr
    assert lines[0].startswith("ERR no audio input device found") and lines[1].startswith("ERR no audio output device found")


def test_stalled_device_is_reported_not_waited_on(pulse_device):
    mic = Microphone(stall_timeout_s=0.5).open()
    mic._stream.stop()  # the device stops delivering, as an unplugged or hung one would
    try:
        with pytest.raises(AudioDeviceError, match="delivered no audio"):
            while True:
                mic.read(timeout=0.2)
    finally:
        mic.close()
