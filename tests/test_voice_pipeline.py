"""Spoken commands through the whole pipeline: espeak-ng audio -> decode / resample -> VAD ->
the tiny Qwen3-Omni's processor inputs (audio placeholder + features) -> parsed calls ->
executed tools -> speech queued and synthesised by the Talker; and the same command over the
OpenAI-compatible backend as ``input_audio``; and the continuous listening loop.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest

from omni_agent.loop import Agent
from omni_agent.messages import AssistantMessage, ToolMessage, read_audio_file
from omni_agent.models.spec import load_model
from omni_agent.tool import tool
from omni_agent.voice import (
    ArraySource,
    VoiceLoop,
    WavFileSink,
    attach_voice_output,
    decode_audio,
    segment_utterances,
)
from tests.fixtures.openai_server import chat_chunk

AUDIO_PAD = 151675


def _qwen3_audio_tokens(mel_frames: int) -> int:
    """Qwen3-Omni's audio encoder output length for ``mel_frames`` (its conv stack, per 100-frame chunk)."""
    leave = mel_frames % 100
    feat = (leave - 1) // 2 + 1
    return ((feat - 1) // 2 + 1 - 1) // 2 + 1 + (mel_frames // 100) * 13


def _timer_tools(log: list):
    @tool
    def set_timer(minutes: int, label: str = "") -> str:
        """Start a countdown timer."""
        log.append(("set_timer", minutes, label))
        return f"timer set for {minutes} min"

    @tool
    def set_lights(room: str, on: bool) -> str:
        """Switch the lights of a room on or off."""
        log.append(("set_lights", room, on))
        return f"{room} lights {'on' if on else 'off'}"

    return [set_timer, set_lights]


def _call(name: str, **args) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


@pytest.mark.slow
@pytest.mark.parametrize(
    "voice,wpm,noise,rate,channels",
    [("en-us", 165, 0.0, 22_050, 1), ("en+f3", 130, 0.0, 44_100, 2), ("en-us+m3", 220, 0.04, 48_000, 1)],
    ids=["en-us-22k", "female-slow-44k-stereo", "male-fast-noisy-48k"],
)
def test_spoken_command_to_tool_call_to_talker_speech(forced_qwen3, synth, tmp_path, voice, wpm, noise, rate, channels):
    path = synth("set a timer for five minutes", voice=voice, wpm=wpm, noise=noise, rate=rate, channels=channels, pad_s=(0.8, 0.8))
    samples = decode_audio(path)  # any rate / channels -> 16 kHz mono
    assert samples.ndim == 1 and abs(samples.size / 16_000 - read_audio_file(path)[0].size / rate) < 0.01
    (utterance,) = segment_utterances(samples)
    assert utterance.duration_s < samples.size / 16_000 - 1.0  # the VAD trimmed the silence

    log: list = []
    model = forced_qwen3([_call("set_timer", minutes=5), "Your five minute timer is running."])
    agent = Agent(model, _timer_tools(log), system_prompt="You are a voice assistant.", max_steps=3)
    output = attach_voice_output(agent, engine="talker", sink=WavFileSink(tmp_path / "said"), min_interval_s=0)
    # Let each utterance finish before the next step (the answer would otherwise cut the progress).
    agent.events.subscribe(lambda e: output.speaker.wait_idle(60) if e.type == "step_finished" else None)
    result = agent.run("", audio=utterance.part())
    output.close()

    # The processor saw exactly the utterance: one audio placeholder expanded to its token count.
    inputs = model.prepared[0].inputs
    features, mask = inputs["input_features"], inputs["feature_attention_mask"]
    frames = int(mask.sum())
    assert features.shape[1] == 128 and abs(frames - utterance.samples.size / 160) <= 2
    n_audio = int((inputs["input_ids"] == AUDIO_PAD).sum())
    assert n_audio == _qwen3_audio_tokens(frames) and 10 <= n_audio / utterance.duration_s <= 16
    assert float(features[0, :, :frames].std()) > 0.1  # real speech features, not padding

    # The call was parsed, validated, executed; its result went back to the model.
    assert log == [("set_timer", 5, "")]
    assistant = next(m for m in result.messages if isinstance(m, AssistantMessage))
    assert [(c.name, c.arguments) for c in assistant.tool_calls] == [("set_timer", {"minutes": 5})]
    tool_message = next(m for m in result.messages if isinstance(m, ToolMessage))
    assert tool_message.result.text == "timer set for 5 min" and not tool_message.result.is_error
    assert result.answer == "Your five minute timer is running." and result.stop_reason.value == "answer"

    # Speech was queued and made by the Talker: 24 kHz WAV files, one per utterance.
    said = [(r.kind, r.text, r.status) for r in output.speaker.history]
    assert said == [("started", "On it.", "done"), ("progress", "Done: set timer.", "done"),
                    ("answer", "Your five minute timer is running.", "done")]  # fmt: skip
    for record in output.speaker.history:
        audio, sr = read_audio_file(record.path)
        assert sr == 24_000 and audio.size == record.samples_total > 0 and np.isfinite(audio).all()


@pytest.mark.slow
def test_voice_command_over_the_openai_backend_travels_as_input_audio(openai_server, synth):
    utterance = segment_utterances(decode_audio(synth("turn off the lights in the kitchen", pad_s=(0.6, 0.6))))[0]
    openai_server.reply_stream([chat_chunk(content=_call("set_lights", room="kitchen", on=False), finish_reason="stop")])
    openai_server.reply_stream([chat_chunk(content="The kitchen is dark now.", finish_reason="stop")])
    log: list = []
    agent = Agent(load_model(f"openai:{openai_server.base_url}#qwen-omni-test?retries=0"), _timer_tools(log))
    result = agent.run("", audio=utterance.part())
    assert log == [("set_lights", "kitchen", False)] and result.answer == "The kitchen is dark now."
    body = openai_server.chat_requests()[0].json
    parts = body["messages"][-1]["content"]
    audio = [p for p in parts if p.get("type") == "input_audio"]
    assert len(audio) == 1 and audio[0]["input_audio"]["format"] == "wav"
    import soundfile as sf

    sent, sr = sf.read(io.BytesIO(base64.b64decode(audio[0]["input_audio"]["data"])), dtype="float32")
    assert sr == 16_000 and sent.ndim == 1 and abs(sent.size - utterance.samples.size) <= 1
    assert np.allclose(sent, utterance.samples, atol=1e-3)


@pytest.mark.slow
def test_listen_loop_runs_one_agent_run_per_spoken_command(forced_qwen3, synth, tmp_path):
    first = decode_audio(synth("set a timer for five minutes", pad_s=(0.5, 1.0)))
    second = decode_audio(synth("switch on the bedroom lights", voice="en+f3", pad_s=(0.3, 1.0)))
    log: list = []
    model = forced_qwen3([_call("set_timer", minutes=5), "Timer set.", _call("set_lights", room="bedroom", on=True), "Lights on."])
    agent = Agent(model, _timer_tools(log), max_steps=3)
    output = attach_voice_output(agent, engine="talker", sink=WavFileSink(tmp_path), min_interval_s=0)
    shown: list[tuple[str, str]] = []
    loop = VoiceLoop(agent, ArraySource(np.concatenate([first, second])), output=output,
                     display=lambda kind, text: shown.append((kind, text)))  # fmt: skip
    commands = asyncio.run(loop.run())
    output.close()
    assert loop.stop_reason == "the audio source ended"
    assert [c.result.answer for c in commands] == ["Timer set.", "Lights on."]
    assert log == [("set_timer", 5, ""), ("set_lights", "bedroom", True)]
    # Each run heard its own command: the second one's audio starts after the first ended.
    assert commands[0].utterance.end_s < first.size / 16_000 < commands[1].utterance.start_s
    tokens = [int((p.inputs["input_ids"] == AUDIO_PAD).sum()) for p in model.prepared[::2]]
    assert tokens == [_qwen3_audio_tokens(int(p.inputs["feature_attention_mask"].sum())) for p in model.prepared[::2]]
    assert all(c.first_tool_at is not None and c.first_tool_at > c.heard_at for c in commands)
    kinds = [k for k, _ in shown]
    assert kinds.count("heard") == 2 and ("doing", "set_timer(minutes=5)") in shown and ("answer", "Lights on.") in shown
    assert any(r.kind == "answer" and r.text == "Lights on." and r.status == "done" for r in output.speaker.history)
