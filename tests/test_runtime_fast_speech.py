"""Streaming speech (omni_agent.runtime.fast.streaming_speech) against generate(return_audio=True).

On the tiny random Qwen3-Omni (CPU, float32): with greedy sampling the streamed Talker produces
the very codes of the plain path (so the same waveform), chunks arrive while the Talker runs,
and the chunked Code2Wav stream is gap-free (equal to a one-shot decode of the same codes).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

import torch  # noqa: E402 - scripts/setup.sh installs it (CPU or CUDA build)

from omni_agent.exceptions import UserError  # noqa: E402
from omni_agent.models.base import GenerationSettings, ModelRequest  # noqa: E402
from omni_agent.runtime import QwenOmniModel, SpeechSettings  # noqa: E402
from omni_agent.runtime.fast import FastOptions  # noqa: E402
from omni_agent.runtime.fast.streaming_speech import StreamingSpeaker  # noqa: E402
from omni_agent.runtime.generation import eos_token_ids  # noqa: E402
from omni_agent.runtime.speech import speech_generation_extras, speech_messages  # noqa: E402

FRAMES = 10


def _plain_greedy_wave(model: QwenOmniModel, text: str):
    tokenizer = model.processor.tokenizer
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prepared = model.prepare(ModelRequest(messages=speech_messages(model.family)))
    stop = eos_token_ids(tokenizer)
    thinker, talker = speech_generation_extras(
        model.family, prompt_length=prepared.prompt_tokens, text_ids=text_ids, stop_id=stop[0], settings=SpeechSettings()
    )
    for key in ("temperature", "top_k", "top_p"):
        talker.pop(key)
    talker.update(do_sample=False, max_new_tokens=FRAMES, min_new_tokens=FRAMES)
    result = model._generate_locked(
        prepared, GenerationSettings(max_new_tokens=len(text_ids) + 1, temperature=0.0), on_text=None,
        preprocess_s=0.0, return_audio=True, voice="Ethan", thinker_extra=thinker, talker_extra=talker,
    )  # fmt: skip
    return prepared, text_ids, stop, result.waveform


@pytest.mark.parametrize("engine", ["static", "modules"])
def test_streamed_talker_gives_the_plain_paths_codes_and_a_gapless_stream(tiny_qwen3_omni, engine):
    text = "Opening the settings window now."
    prepared, text_ids, stop, plain_wave = _plain_greedy_wave(tiny_qwen3_omni, text)
    speaker = StreamingSpeaker(tiny_qwen3_omni.model, tiny_qwen3_omni.processor, engine=engine)
    chunks = list(
        speaker.stream(
            prepared.inputs["input_ids"], text_ids, speaker_id=2302, stop_ids=stop, max_frames=FRAMES,
            min_frames=FRAMES, do_sample=False, repetition_penalty=1.05, chunk_frames=2, max_chunk_frames=4,
        )
    )  # fmt: skip
    assert [c.frames for c in chunks] == [2, 4, 4]  # the first chunk small, then doubling up to 4
    assert all(a.seconds_since_start <= b.seconds_since_start for a, b in zip(chunks, chunks[1:]))
    codes = speaker.last_codes
    code2wav = tiny_qwen3_omni.model.code2wav
    with torch.inference_mode():
        # generate() stops at max length without the last frame's residual codes: compare the rest.
        same = code2wav.chunked_decode(codes[..., : FRAMES - 1], chunk_size=300, left_context_size=25)
        whole = code2wav.chunked_decode(codes, chunk_size=300, left_context_size=25)
    assert np.array_equal(same.float().reshape(-1).numpy(), plain_wave)
    streamed = np.concatenate([c.samples for c in chunks])
    whole = whole.float().reshape(-1).numpy()
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_speak_stream_and_fast_speak(tiny_qwen3_omni, tiny_qwen25_omni):
    settings = SpeechSettings(seed=3, min_frames_per_token=0.5, max_frames_per_token=0.5)
    chunks = list(tiny_qwen3_omni.speak_stream("Saving the file.", settings=settings, chunk_frames=2))
    assert len(chunks) >= 2 and all(c.samples.dtype == np.float32 and c.samples.size > 0 for c in chunks)
    checkpoint = dataclasses.replace(tiny_qwen3_omni.checkpoint, processor=copy.copy(tiny_qwen3_omni.processor))
    fast = QwenOmniModel(checkpoint, name="fast", fast=FastOptions(max_cache_tokens=1024))
    audio = fast.speak("Saving the file.", settings=settings)
    samples, rate = audio.load()
    assert rate == 24_000 and samples.size == sum(c.samples.size for c in chunks)  # same seed, same frames
    with pytest.raises(UserError, match="Qwen3-Omni"):
        next(tiny_qwen25_omni.speak_stream("hello"))
    with pytest.raises(UserError, match="non-empty"):
        next(tiny_qwen3_omni.speak_stream("   "))


def test_a_message_longer_than_the_talker_cache_is_refused(tiny_qwen3_omni):
    speaker = StreamingSpeaker(tiny_qwen3_omni.model, tiny_qwen3_omni.processor, max_tokens=32)
    prompt = tiny_qwen3_omni.prepare(ModelRequest(messages=speech_messages(tiny_qwen3_omni.family))).inputs["input_ids"]
    with pytest.raises(UserError, match="KV slots"):
        next(speaker.stream(prompt, [72, 105], speaker_id=2302, stop_ids=[151645], max_frames=400))


def test_decoder_warm_up_covers_every_stream_length_once(tiny_qwen3_omni):
    """Every Code2Wav input length a stream can produce (left context + chunk) is run once, so a
    GPU builds its conv plans before the first message, not inside it; a second call does nothing."""
    speaker = StreamingSpeaker(tiny_qwen3_omni.model, tiny_qwen3_omni.processor)
    speaker.warm_up_decoder(left_context=5, max_chunk_frames=4)
    assert speaker._decoder_warm == set(range(1, 10))
    calls: list[int] = []
    original = speaker.code2wav
    speaker.code2wav = lambda codes: calls.append(codes.shape[-1]) or original(codes)
    speaker.warm_up_decoder(left_context=5, max_chunk_frames=6)
    assert calls == [10, 11]  # only the lengths not seen before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graph_captured_frames_match_the_module_engine_on_gpu(tiny_qwen3_omni_dir):
    gpu = QwenOmniModel.load(tiny_qwen3_omni_dir, device_map="cuda", enable_talker=True)
    prompt = gpu.prepare(ModelRequest(messages=speech_messages(gpu.family))).inputs["input_ids"]
    codes = {}
    for engine in ("static", "modules"):
        speaker = StreamingSpeaker(gpu.model, gpu.processor, engine=engine)
        list(speaker.stream(prompt, [72, 105, 33], speaker_id=2302, stop_ids=[151645], max_frames=8, min_frames=8, do_sample=False))
        codes[engine] = speaker.last_codes
    assert torch.equal(codes["static"], codes["modules"])
