"""End to end on CPU with the tiny checkpoints: agent loop, prompt, parser, streaming, speech."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from omni_agent.exceptions import UserError
from omni_agent.loop import StopReason
from omni_agent.messages import AssistantMessage, AudioPart, ImagePart, TextPart, ToolCall, ToolMessage, ToolResult, UserMessage
from omni_agent.models.base import GenerationSettings, ModelRequest
from omni_agent.parsing import parse_output
from omni_agent.runtime import SpeechSettings

ROOT = Path(__file__).resolve().parents[1]
TOOLS = [{"type": "function", "function": {"name": "click", "description": "Click a point", "parameters": {
    "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}}}]  # fmt: skip
SHORT = GenerationSettings(max_new_tokens=6, seed=0)
# Random weights never stop on their own: one codec frame per text token makes the length
# follow the text exactly (the bound a real model gets is a generous cap, not a target).
FIXED_FRAMES = SpeechSettings(min_frames_per_token=1, max_frames_per_token=1, seed=0)


def _screenshot():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1280, 720), (20, 90, 160))
    ImageDraw.Draw(image).rectangle((600, 400, 700, 440), fill=(0, 120, 215))
    return image


def _collapse(text: str) -> str:
    return re.sub(r"(<\|(image_pad|audio_pad|IMAGE|AUDIO)\|>)+", lambda m: f"[{m.group(2)}]", text)


def _tool_turn(shot, wav: Path):
    return [
        UserMessage([TextPart(text="Do what I say."), ImagePart.from_pil(shot), AudioPart.from_path(wav)]),
        AssistantMessage("", tool_calls=[ToolCall(name="click", arguments={"x": 650, "y": 420})]),
        ToolMessage(result=ToolResult(call_id="c1", name="click", content=[TextPart(text="clicked")])),
    ]


@pytest.mark.slow
def test_agent_loop_drives_tiny_qwen3_omni(tiny_qwen3_omni, spoken_command_wav):
    from omni_agent.loop import Agent
    from omni_agent.runtime import QwenOmniModel
    from omni_agent.tool import tool

    sent: list[ModelRequest] = []

    class Recording(QwenOmniModel):  # the real backend; it only remembers what the loop sent
        async def complete(self, request):
            sent.append(request)
            return await super().complete(request)

        async def stream(self, request):
            sent.append(request)
            async for chunk in super().stream(request):
                yield chunk

    @tool
    def click(x: int, y: int) -> str:
        """Click a point on the screen."""
        return f"clicked {x},{y}"

    model = Recording(tiny_qwen3_omni.checkpoint, speech=FIXED_FRAMES)
    agent = Agent(model, [click], system_prompt="You operate a desktop.", max_steps=1, speak=True,
                  settings=GenerationSettings(max_new_tokens=4, seed=0))  # fmt: skip
    result = agent.run("", audio=str(spoken_command_wav), images=[_screenshot()])
    assert sent, "the loop never called the model"
    prompt = _collapse(model.render_prompt(sent[0]))
    system_end = prompt.index("<|im_end|>")
    assert prompt.index("<tools>") < system_end and '"name": "click"' in prompt[:system_end]
    user = prompt[prompt.index("<|im_start|>user"):]
    assert "<|vision_start|>[image_pad]<|vision_end|>" in user and "<|audio_start|>[audio_pad]<|audio_end|>" in user
    assert prompt.endswith("<|im_start|>assistant\n")
    raw = result.messages[-1].raw_text
    assert raw, "the model's raw text was not recorded"
    parsed = parse_output(raw)
    assert not parsed.calls and result.messages[-1].text == parsed.visible_text  # the loop shows the parser's text
    # 4 random tokens stop at max_new_tokens: a cut-off reply, never taken as the answer (issue 12)
    assert result.stop_reason is StopReason.TOKEN_LIMIT and result.answer is None
    samples, rate = result.audio.load()  # a final answer with speak=True comes back spoken
    assert rate == 24_000 and samples.size > 0 and np.isfinite(samples).all()


def test_tool_response_turn_in_place(tiny_qwen3_omni, spoken_command_wav):
    shot = _screenshot()
    request = ModelRequest(messages=_tool_turn(shot, spoken_command_wav), tools=TOOLS, settings=SHORT)
    prompt = _collapse(tiny_qwen3_omni.render_prompt(request))
    order = [prompt.index(s) for s in ("<tools>", "[image_pad]", "[audio_pad]", '{"name": "click", "arguments": {"x": 650', "<tool_response>\nclicked\n</tool_response>")]
    assert order == sorted(order)
    assert prompt.endswith("<|im_start|>user\n<tool_response>\nclicked\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    result = tiny_qwen3_omni.generate(request)
    assert result.prompt_tokens > 880 and 1 <= result.completion_tokens <= 6
    assert set(result.timings) >= {"preprocess", "prefill", "decode", "generate"}
    assert result.waveform is None
    parse_output(result.text)  # raw text of the step goes through the parser without raising


def test_stream_yields_chunks_that_add_up(tiny_qwen3_omni):
    request = ModelRequest(messages=[UserMessage("hello")], settings=GenerationSettings(max_new_tokens=8, seed=1))

    async def collect():
        return [chunk async for chunk in tiny_qwen3_omni.stream(request)]

    chunks = asyncio.run(collect())
    final = chunks[-1].response
    assert final is not None and len(chunks) >= 2
    assert "".join(c.text for c in chunks[:-1]) == final.text
    assert final.usage.completion_tokens >= 1 and final.finish_reason in ("stop", "length")
    same = tiny_qwen3_omni.generate(request)  # same seed, same greedy tokens
    assert same.text == final.text


def test_abandoned_stream_stops_generation(tiny_qwen3_omni):
    """Ctrl-C or a cancelled run closes the stream: generate() must stop at its next token, not run
    on in a daemon thread (at interpreter exit that printed a traceback or aborted the process)."""
    import threading

    long = ModelRequest(messages=[UserMessage("hello")], settings=GenerationSettings(max_new_tokens=4000, seed=1))

    async def read_one_then_leave():
        stream = tiny_qwen3_omni.stream(long)
        first = await stream.__anext__()
        await stream.aclose()
        return first

    assert asyncio.run(read_one_then_leave()).text
    assert not [t for t in threading.enumerate() if t.name == "qwen-generate"]
    short = tiny_qwen3_omni.generate(ModelRequest(messages=[UserMessage("hi")], settings=GenerationSettings(max_new_tokens=2)))
    assert short.completion_tokens >= 1  # the model is free again


def test_speak_length_grows_with_text(tiny_qwen3_omni):
    short = tiny_qwen3_omni.speak("Hi.", settings=FIXED_FRAMES)
    long = tiny_qwen3_omni.speak("Hello there, friend.", settings=FIXED_FRAMES, voice="chelsie")
    (a, rate_a), (b, rate_b) = short.load(), long.load()
    assert rate_a == rate_b == 24_000 and a.dtype == np.float32
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert b.size > a.size
    assert long.transcript == "Hello there, friend."
    with pytest.raises(UserError, match="valid voices: Ethan, Chelsie, Aiden"):
        tiny_qwen3_omni.speak("Hi.", voice="Bob")


def test_speak_true_speaks_final_answers_only(tiny_qwen3_omni):
    from omni_agent.runtime import QwenOmniModel

    model = QwenOmniModel(tiny_qwen3_omni.checkpoint, speech=FIXED_FRAMES)  # same weights, bounded Talker
    request = ModelRequest(messages=[UserMessage("hi")], settings=GenerationSettings(max_new_tokens=2, seed=0), speak=True)
    response = asyncio.run(model.complete(request))
    parsed = parse_output(response.text)
    assert not parsed.calls and parsed.visible_text
    samples, rate = response.audio.load()
    assert rate == 24_000 and samples.size > 0 and response.audio.transcript == parsed.visible_text.strip()


def test_steps_with_tool_calls_are_never_voiced(forced_qwen3, monkeypatch):
    """The Talker voices all the Thinker wrote: a step holding a call (even with text around it)
    gets no speech; a final answer is spoken without its thinking."""
    model = forced_qwen3([
        'Clicking now.\n<tool_call>\n{"name": "click", "arguments": {"x": 1, "y": 2}}\n</tool_call>',
        "<think>the click worked</think>All done.",
    ])  # fmt: skip
    spoken: list[str] = []
    real_speak = model.speak
    monkeypatch.setattr(model, "speak", lambda text, **kw: spoken.append(text) or real_speak(text, **kw))
    request = ModelRequest(messages=[UserMessage("click")], tools=TOOLS, settings=SHORT, speak=True)
    call_step = asyncio.run(model.complete(request))
    assert parse_output(call_step.text).calls and call_step.audio is None and spoken == []
    answer = asyncio.run(model.complete(request))
    assert spoken == ["All done."] and answer.audio.transcript == "All done."


def test_speech_turn_writes_exactly_the_text_or_says_nothing(tiny_qwen3_omni, monkeypatch):
    from omni_agent.exceptions import ModelError
    from omni_agent.runtime import QwenOmniModel
    from omni_agent.runtime.speech import ForcedTokens

    model = QwenOmniModel(tiny_qwen3_omni.checkpoint, speech=FIXED_FRAMES)
    said = model.speak("Say <|im_end|>this.")  # a control token would end the forced turn early
    assert said.transcript == "Say this." and said.load()[0].size > 0
    # Should forcing ever fail, the Thinker writes other words: the Talker's audio is refused.
    monkeypatch.setattr(ForcedTokens, "__call__", lambda self, input_ids, scores: scores)
    with pytest.raises(ModelError, match="nothing was said"):
        model.speak("Hi.")


def test_qwen25_omni_end_to_end(tiny_qwen25_omni, spoken_command_wav):
    shot = _screenshot()
    request = ModelRequest(messages=_tool_turn(shot, spoken_command_wav), tools=TOOLS, settings=SHORT)
    prompt = _collapse(tiny_qwen25_omni.render_prompt(request))
    assert prompt.index("<tools>") < prompt.index("<|im_end|>")  # injected into the system text
    assert "<|vision_bos|>[IMAGE]<|vision_eos|><|audio_bos|>[AUDIO]<|audio_eos|>" in prompt
    assert prompt.endswith("<|im_start|>user\n<tool_response>\nclicked\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    result = tiny_qwen25_omni.generate(request)
    assert result.completion_tokens >= 1
    parse_output(result.text)
    short = tiny_qwen25_omni.speak("Hi.", settings=FIXED_FRAMES)
    long = tiny_qwen25_omni.speak("Hello there, friend.", settings=FIXED_FRAMES, voice="Ethan")
    (a, rate), (b, _) = short.load(), long.load()
    assert rate == 24_000 and np.isfinite(a).all() and np.isfinite(b).all() and b.size > a.size


def test_qwen3_vl_image_path_and_audio_refusal(tiny_qwen3_vl, spoken_command_wav):
    shot = _screenshot()
    request = ModelRequest(messages=[UserMessage([TextPart(text="Where is the button?"), ImagePart.from_pil(shot)])], tools=TOOLS, settings=SHORT)
    prompt = _collapse(tiny_qwen3_vl.render_prompt(request))
    assert "<tools>" in prompt and "<|vision_start|>[image_pad]<|vision_end|>" in prompt
    assert tiny_qwen3_vl.prepare(request).inputs["input_ids"].shape[-1] > 880
    result = tiny_qwen3_vl.generate(request)
    assert result.completion_tokens >= 1 and result.waveform is None
    assert not tiny_qwen3_vl.info.can_hear and not tiny_qwen3_vl.info.can_speak
    with pytest.raises(UserError, match="cannot hear"):
        tiny_qwen3_vl.prepare(ModelRequest(messages=[UserMessage([AudioPart.from_path(spoken_command_wav)])]))
    with pytest.raises(UserError, match="cannot speak"):
        tiny_qwen3_vl.speak("hello")


def test_talker_disabled_by_default(tiny_qwen3_omni_dir):
    from omni_agent.runtime import QwenOmniModel

    model = QwenOmniModel.load(tiny_qwen3_omni_dir)
    assert not model.info.can_speak and not hasattr(model.model, "talker")
    with pytest.raises(UserError, match="enable_talker=True"):
        model.speak("hello")


@pytest.mark.slow
def test_describe_and_speak_example(tiny_qwen3_omni_dir, tmp_path):
    from PIL import Image

    image, out = tmp_path / "scene.png", tmp_path / "said.wav"
    Image.new("RGB", (320, 240), (30, 160, 60)).save(image)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "describe_and_speak.py"), str(tiny_qwen3_omni_dir), str(image), str(out), "1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    from omni_agent.messages import read_audio_file

    samples, rate = read_audio_file(out)
    assert rate == 24_000 and samples.size > 0
    assert proc.stdout.strip()  # the description was printed
