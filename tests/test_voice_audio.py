"""Decoding, resampling and VAD segmentation of spoken commands synthesised with espeak-ng."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from omni_agent.voice import (
    AudioDecodeError,
    SpeechStarted,
    UtteranceEnded,
    UtteranceSegmenter,
    VADSettings,
    command_part,
    decode_audio,
    segment_utterances,
)
from omni_agent.voice.vad import silero_model_path
from tests.fixtures.audio import onset_seconds

COMMAND = "turn off the lights in the kitchen"


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.size, b.size)
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def test_every_format_decodes_to_the_same_16k_mono(synth, tmp_path):
    """wav (22.05 kHz), 44.1 kHz stereo flac, ogg and mp3 all come out as the same 16 kHz mono signal."""
    wav = synth(COMMAND)
    reference = decode_audio(wav)
    expected_len = float(subprocess.run(["soxi", "-D", str(wav)], capture_output=True, text=True).stdout) * 16_000
    assert reference.dtype == np.float32 and reference.ndim == 1
    assert abs(reference.size - expected_len) <= 2
    flac, ogg, mp3 = tmp_path / "c.flac", tmp_path / "c.ogg", tmp_path / "c.mp3"
    subprocess.run(["sox", str(wav), "-r", "44100", "-c", "2", str(flac)], check=True)
    subprocess.run(["sox", str(wav), str(ogg)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-b:a", "128k", str(mp3)], check=True)
    for path, min_corr in ((flac, 0.99), (ogg, 0.9), (mp3, 0.8)):
        out = decode_audio(path)
        assert out.dtype == np.float32 and out.ndim == 1
        assert abs(out.size - reference.size) < 0.06 * 16_000, path  # codecs pad by a frame or two
        start = int(onset_seconds(reference, 16_000) * 16_000)  # align on the speech (codecs add delay)
        lags = range(-1200, 1201)
        window = reference[start : start + 4000]
        shift = max(lags, key=lambda k: float(np.dot(out[start + k : start + k + 4000], window)))
        aligned = out[shift:] if shift > 0 else np.concatenate([np.zeros(-shift, np.float32), out])
        assert _corr(aligned, reference) > min_corr, path
    # encoded bytes and (samples, rate) tuples take the same path
    assert np.allclose(decode_audio(wav.read_bytes()), reference)
    stereo = np.stack([reference, reference], axis=1)
    assert np.allclose(decode_audio((stereo, 16_000)), reference)


def test_ffmpeg_fallback_for_formats_libsndfile_cannot_read(synth, tmp_path):
    m4a = tmp_path / "c.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(synth(COMMAND)), str(m4a)], check=True)
    out = decode_audio(m4a)
    assert out.size > 16_000 and np.abs(out).max() > 0.1


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(AudioDecodeError, match="not found"):
        decode_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty"):
        decode_audio(empty)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 20)
    with pytest.raises(AudioDecodeError, match="cannot decode audio"):
        decode_audio(junk)
    with pytest.raises(AudioDecodeError, match="NaN"):
        decode_audio((np.array([0.0, np.nan], dtype=np.float32), 16_000))
    with pytest.raises(AudioDecodeError, match="must be a path"):
        decode_audio(123)  # type: ignore[arg-type]


def test_silero_model_ships_in_the_package_and_needs_no_torch():
    code = (
        "import sys; from omni_agent.voice import SileroVAD; v = SileroVAD(); import numpy as np;"
        "p = v.probability(np.zeros(512, np.float32)); print(p, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert float(out[0]) < 0.2 and out[1] == "False"
    assert silero_model_path().name == "silero_vad.onnx" and "site-packages" in str(silero_model_path())


@pytest.mark.parametrize(
    "voice,wpm,noise",
    [("en-us", 165, 0.0), ("en+f3", 130, 0.0), ("en-us+m3", 230, 0.0), ("en", 170, 0.05)],
    ids=["en-us", "female-slow", "male-fast", "noisy"],
)
def test_vad_finds_the_command_in_silence(synth, voice, wpm, noise):
    """Speech padded by 1 s of silence each side: one utterance whose bounds match the speech."""
    path = synth(COMMAND, voice=voice, wpm=wpm, pad_s=(1.0, 1.0), noise=noise)
    samples = decode_audio(path)
    clean = decode_audio(synth(COMMAND, voice=voice, wpm=wpm, pad_s=(1.0, 1.0)))
    onset = onset_seconds(clean, 16_000)
    offset = (np.flatnonzero(np.abs(clean) > 0.02)[-1]) / 16_000
    found = segment_utterances(samples)
    assert len(found) == 1, [(u.start_s, u.end_s) for u in found]
    u = found[0]
    assert abs(u.start_s - onset) < 0.15 and abs(u.end_s - offset) < 0.3, (u.start_s, onset, u.end_s, offset)
    assert u.samples.dtype == np.float32 and abs(u.duration_s - (u.end_s - u.start_s) - 0.12) < 0.07  # + 2 x 60 ms pad


def test_two_commands_are_two_utterances_and_streaming_matches_offline(synth):
    a = decode_audio(synth("set a timer for five minutes", pad_s=(0.5, 1.0)))
    b = decode_audio(synth("play some jazz", voice="en+f3", pad_s=(0.2, 0.8)))
    stream = np.concatenate([a, b])
    offline = segment_utterances(stream)
    assert len(offline) == 2 and offline[1].start_s > a.size / 16_000
    seg = UtteranceSegmenter()
    events = []
    rng = np.random.default_rng(0)
    pos = 0
    while pos < stream.size:  # odd block sizes, as a sound card delivers them
        n = int(rng.integers(100, 1500))
        events += seg.feed(stream[pos : pos + n])
        pos += n
    events += seg.flush()
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, UtteranceEnded, SpeechStarted, UtteranceEnded]
    streamed = [e.utterance for e in events if isinstance(e, UtteranceEnded)]
    for s, o in zip(streamed, offline):
        assert s.start_s == o.start_s and s.end_s == o.end_s and np.array_equal(s.samples, o.samples)


def test_silence_noise_and_tones_are_not_speech():
    rng = np.random.default_rng(1)
    t = np.arange(3 * 16_000) / 16_000
    for signal in (
        np.zeros(3 * 16_000),
        0.05 * rng.standard_normal(3 * 16_000),
        0.5 * np.sin(2 * np.pi * 440 * t),
    ):
        assert segment_utterances(signal.astype(np.float32)) == []


def test_short_bursts_are_dropped_and_long_speech_is_cut(synth):
    speech = decode_audio(synth("one two three four five six seven eight nine ten", pad_s=(0.3, 0.3)))
    cut = segment_utterances(speech, settings=VADSettings(max_utterance_s=1.0, min_silence_ms=2000))
    assert len(cut) >= 2 and all(u.end_s - u.start_s <= 1.05 for u in cut)
    click = np.zeros(16_000, np.float32)
    click[8000:8400] = speech[int(0.5 * 16_000) : int(0.5 * 16_000) + 400]
    assert segment_utterances(click, settings=VADSettings(min_speech_ms=200)) == []


def test_command_part_is_16k_mono_audio_part(synth):
    part = command_part(synth(COMMAND, rate=44_100, channels=2), transcript=COMMAND)
    samples, rate = part.load()
    assert rate == 16_000 and samples.ndim == 1 and part.transcript == COMMAND
    assert part.duration_s == pytest.approx(samples.size / 16_000)
